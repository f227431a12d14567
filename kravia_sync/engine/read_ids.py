"""The ids of one source read: which stored case each record's id names (through the
aliases the source's earlier ids left), which records are withheld because their id changed
or names another invoice's case (`kravia_sync.engine.drift`), and the aliases the read leaves.

No I/O: the aliases come in, the stored cases with an invoice number are looked up through a
function given by the caller (`DriftWatch.look_up_with`), and the aliases to keep go out.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping, MutableMapping
from datetime import datetime

from kravia_sync.engine.drift import (
    Adopted,
    Conflict,
    Drifting,
    DriftWatch,
    Freed,
    Renamed,
    Verdict,
)
from kravia_sync.engine.worklist import Shelf
from kravia_sync.lifecycle import CaseSummary, Phase
from kravia_sync.model import Invoice
from kravia_sync.state.records import InvoiceAlias, QuarantineEntry, QuarantineKind

__all__ = ["NOT_SENT_PHASES", "ReadIds"]

# Cases Kravia has no case of: nothing was registered (Kravia refused it, or it is still to be
# sent) and no call is under way.
NOT_SENT_PHASES = frozenset({Phase.NEW, Phase.REJECTED})


class ReadIds:
    """The ids of one source read (see the module).

    `aliases`: the ids the source gave invoices after their cases were registered, each with
    its case's accountingInvoiceId; `holds`: the operator's holds of the read, to which a hold
    on an alias adds the case's id (it is the dict the gate reads, updated in place);
    `withheld`: where the records withheld for an id that changed are kept."""

    def __init__(
        self,
        source: str,
        *,
        unique_numbers: bool,
        aliases: Mapping[str, str],
        holds: MutableMapping[str, str],
        now: datetime,
        withheld: Shelf,
    ) -> None:
        self.source = source
        self.aliases = aliases
        self.holds = holds
        for alias, case_id in aliases.items():
            if alias in holds:
                holds.setdefault(case_id, holds[alias])
        self.now = now
        self.drifts = DriftWatch(unique_numbers=unique_numbers, shelf=withheld)
        self.new_aliases: list[InvoiceAlias] = []  # adopted (or forgotten) in this read
        self.adopted: list[InvoiceAlias] = []  # those of records taken to be a case's
        # Ids of stored cases (through an alias or not) that a record of this read has with
        # its case's invoice number, with the first such record's key; and those records' own
        # ids, with the same.
        self._owned: dict[str, str] = {}
        self._own_ids: dict[str, str] = {}
        # Ids that were another invoice's alias only, now a new invoice's (see `Freed`).
        self.freed: list[str] = []
        # The accountingInvoiceIds of cases the source now gives another invoice (whose
        # record is quarantined): a payment naming one cannot be told whose it is.
        self.unclear: set[str] = set()

    def case_of(self, own_id: str) -> str:
        """The stored case a record's own id names: its alias's case, else the id itself."""
        return self.aliases.get(own_id, own_id)

    def duplicate(
        self,
        key: str,
        own_id: str | None,
        case_id: str,
        *,
        number: object,
        stored: CaseSummary | None,
        earlier_key: str | None,
    ) -> str | None:
        """The key of an earlier record of this read with the record's id (`earlier_key`: the
        first with the id its own id names, `case_id`), or None. Where numbers tell invoices
        apart, two records whose ids name one stored case, one of them through an alias, are
        duplicates only if both have the case's invoice number (`number`: the record's): a
        record of another number is another invoice (see `withheld_as_renamed`), and one of
        the case's number is its own, whichever comes first."""
        if stored is None or stored.invoice_number is None or number is None or own_id is None:
            return earlier_key
        first = self._own_ids.setdefault(own_id, key)
        if first != key:
            return first  # two records with one id of their own
        if self.drifts.renamed(stored.invoice_number, str(number).strip()):
            return None  # another invoice, judged by its number once the read is complete
        first = self._owned.setdefault(case_id, key)
        return None if first == key else first

    def withheld_as_renamed(
        self, key: str, invoice: Invoice, hashed: str, case_id: str, stored: CaseSummary
    ) -> bool:
        """Whether the record of `invoice` (with its own id) is withheld because its id names
        the stored case `case_id` of another invoice number: it is another invoice, judged by
        its number once the read is complete."""
        number = stored.invoice_number
        if number is None or not self.drifts.renamed(number, invoice.invoice_number):
            return False
        sent = stored.phase not in NOT_SENT_PHASES
        self.drifts.withhold_renamed(key, invoice, hashed, Renamed(case_id, number, sent=sent))
        return True

    def unclaimed(self) -> set[str]:
        """The stored cases whose id a record of another invoice number has in this read,
        and no record of their own number: seen by the read's look-ups, yet not in it."""
        return self.drifts.renamed_cases() - self._owned.keys()

    def judged(self, seen: Collection[str]) -> Iterator[tuple[Verdict, Drifting, Invoice, str]]:
        """After a complete read (`seen`: which of `drifts.registered()` its look-ups had):
        each withheld record's verdict, with its invoice and hash, once; the aliases each
        verdict leaves are noted (`new_aliases`, `freed`, `unclear`)."""
        claimed = set(seen) - self.unclaimed()
        for verdict, drifting, invoice, hashed in self.drifts.judged(claimed):
            if isinstance(verdict, Freed):
                # Forgotten: an alias of the id to itself (`AliasTable.record_aliases`).
                self.new_aliases.append(self._alias(drifting.aid, drifting.aid, invoice))
                self.freed.append(drifting.aid)
            elif isinstance(verdict, Conflict):
                named = drifting.renamed
                if named is not None and (
                    named.case == drifting.aid or named.own_case_number is not None
                ):
                    self.unclear.add(drifting.aid)  # a case's own id, given to another invoice
            else:
                self._adopted(verdict, invoice)
            yield verdict, drifting, invoice, hashed

    def _adopted(self, verdict: Adopted, invoice: Invoice) -> None:
        # Where the record's own id is its case's, the alias it had is forgotten.
        alias = self._alias(verdict.aid, verdict.registered, invoice)
        self.new_aliases.append(alias)
        self.adopted.append(alias)
        held = self.holds.get(verdict.aid)
        if held is not None and verdict.registered not in self.holds:
            self.holds[verdict.registered] = held  # held by the id the source gives it now

    def aliases_now(self) -> dict[str, str]:
        """The aliases as this read leaves them: those kept before, with those adopted (or
        forgotten) in it."""
        aliases = dict(self.aliases)
        for alias in self.new_aliases:
            if alias.alias_id == alias.accounting_invoice_id:
                aliases.pop(alias.alias_id, None)
            else:
                aliases[alias.alias_id] = alias.accounting_invoice_id
        return aliases

    def _alias(self, alias_id: str, case_id: str, invoice: Invoice) -> InvoiceAlias:
        return InvoiceAlias(self.source, alias_id, case_id, invoice.invoice_number, self.now)


def conflict_entry(drifting: Drifting, conflict: Conflict) -> QuarantineEntry:
    """The quarantine entry of a record that cannot be told apart from a registered one."""
    return QuarantineEntry(
        drifting.key,
        QuarantineKind.INVALID,
        "accounting_invoice_id",
        conflict.reason,
        drifting.aid,
        drifting.invoice_number,
    )
