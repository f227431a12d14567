"""An invoice whose id changed in its source after its case was registered: the same invoice,
never a second case.

A source gives each invoice an id, or (where it has none) its invoice number with the
source's prefix. The id can change: a row whose id column was empty gets one, an ERP
migration renumbers its keys. A record whose id is new to the state store while its invoice
number is that of a case the same source registered under another id is that invoice again:
invoice numbers are unique within a source (the bookkeeping rules give each invoice its own
number in a series; a source whose numbers repeat sets `unique_invoice_numbers = false`).

The same holds the other way round: an invoice keeps its number, so a record whose id names
a stored case of the source registered with another invoice number is not that case's (two
invoices swapped ids, or an id was given to another invoice after the first left). It is
judged by its number like a record with a new id; the case its id named is not claimed by it
(if no record of that number is read, that case is gone).

An accountingInvoiceId never changes once it has been sent, so the case keeps its id and the
record's is recorded as its alias (where the record's own id is the case's again, the alias
is forgotten). That is safe only while nothing else claims the case:

- the case's own id is not in this read with its number (else two records name one invoice);
- no other record of the read judged by its number has the same number;
- the number belongs to one stored case of the source, not several.

Otherwise the record is quarantined with both ids named, and nothing is sent for it until the
source says which is which; so is a record whose id is the accountingInvoiceId of another
invoice's case while no case has its own number (it cannot be registered under an id Kravia
holds for another invoice). Where its id was only another invoice's alias, never sent, the
alias is forgotten and the record is a new invoice; where the case it names was never sent
either, the record is that case's, with its own number.
`judge_drifts` is pure; `DriftWatch` keeps the withheld records of a read, and is told the
stored cases and the ids read by its caller.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass, replace

from kravia_sync.engine.worklist import KeptRecord, Shelf
from kravia_sync.model import Invoice

__all__ = [
    "Adopted",
    "Conflict",
    "DriftWatch",
    "Drifting",
    "Freed",
    "Renamed",
    "Verdict",
    "judge_drifts",
]


@dataclass(frozen=True, slots=True)
class Renamed:
    """The stored case a record's id named, stored with another invoice number."""

    case: str  # its accountingInvoiceId
    invoice_number: str
    sent: bool = True  # whether Kravia may hold it (else nothing was registered or is under way)
    # Where the record's own id reached `case` through an alias and is itself the id of a
    # stored case (two invoices swapped ids before): that case's invoice number.
    own_case_number: str | None = None


@dataclass(frozen=True, slots=True)
class Drifting:
    """A record whose id `aid` is new to the store, or names a case of another invoice number
    (`renamed`), with the stored cases of its source that have its invoice number
    (`registered`: their ids)."""

    aid: str
    invoice_number: str
    key: str
    registered: tuple[str, ...]
    renamed: Renamed | None = None


@dataclass(frozen=True, slots=True)
class Adopted:
    """The record is the invoice registered as `registered`: `aid` becomes its alias."""

    aid: str
    registered: str


@dataclass(frozen=True, slots=True)
class Freed:
    """The record's id was another invoice's alias only, never sent to Kravia, and no case has
    the record's number: the alias is forgotten, and the record is a new invoice."""

    aid: str


@dataclass(frozen=True, slots=True)
class Conflict:
    """The record cannot be told apart from a registered invoice: quarantined, with why."""

    aid: str
    reason: str


Verdict = Adopted | Freed | Conflict


def judge_drifts(drifting: Iterable[Drifting], seen: Collection[str]) -> list[Verdict]:
    """Each drifting record's verdict, in the order given. `seen`: the stored cases this read
    has a record of (of their own invoice number: a case whose id only a record of another
    number had is not claimed by it)."""
    records = list(drifting)
    claims = Counter(case for record in records for case in record.registered)
    # Cases never sent whose id a record of another number, with no case of its own, has:
    # that record's now (below), so no other record may take them.
    taken = {
        record.aid
        for record in records
        if record.renamed is not None
        and not record.registered
        and record.renamed.case == record.aid
        and not record.renamed.sent
    }
    claimed = set(seen) | taken
    return [_verdict(record, claimed, claims) for record in records]


def _verdict(record: Drifting, seen: Collection[str], claims: Counter[str]) -> Verdict:
    number = record.invoice_number
    ids = ", ".join(repr(case) for case in record.registered)
    if not record.registered and record.renamed is not None:
        return _without_case(record, record.renamed)
    if len(record.registered) > 1:
        return Conflict(
            record.aid,
            f"invoice number {number!r} is registered from this source as {ids}; the record "
            f"with id {record.aid!r} cannot be told apart from them: nothing is sent for it",
        )
    (registered,) = record.registered
    if registered in seen:
        return Conflict(
            record.aid,
            f"invoice number {number!r} is registered from this source as {registered!r}, "
            f"which this read has too: the record with id {record.aid!r} has the same number. "
            "Nothing is sent for it; if it is another invoice, give it a number of its own in "
            "the source (or set unique_invoice_numbers = false for a source whose numbers "
            "repeat)",
        )
    if claims[registered] > 1:
        return Conflict(
            record.aid,
            f"invoice number {number!r} is registered from this source as {registered!r}, and "
            f"several new records of this read have that number: the record with id "
            f"{record.aid!r} cannot be told apart from the others; nothing is sent for it",
        )
    return Adopted(record.aid, registered)


def _without_case(record: Drifting, named: Renamed) -> Verdict:
    """A record whose id named the case of another invoice number, when no case has its own
    number."""
    if named.case != record.aid and named.own_case_number is None:
        return Freed(record.aid)  # an alias only: never sent
    if named.case != record.aid:
        return Conflict(
            record.aid,
            f"the id {record.aid!r} is that of the invoice registered from this source as "
            f"{record.aid!r} with invoice number {named.own_case_number!r}; this record has "
            f"invoice number {record.invoice_number!r}. One id cannot name two invoices: "
            "nothing is sent for it. Give it an id of its own in the source",
        )
    if not named.sent:
        # Nothing of it is at Kravia: the record is the case's, with its number.
        return Adopted(record.aid, record.aid)
    return Conflict(
        record.aid,
        f"the id {record.aid!r} is that of the invoice registered from this source as "
        f"{named.case!r} with invoice number {named.invoice_number!r}; this record has invoice "
        f"number {record.invoice_number!r}. One id cannot name two invoices: nothing is sent "
        "for it. Give it an id of its own in the source (an invoice keeps its number; if this "
        "really is that invoice renumbered, put its number back)",
    )


class DriftWatch:
    """The records of one source read whose id is new to the store and whose invoice number
    is registered from the source under another id: withheld from the work list until the
    read is complete, then each adopted or quarantined (`judge_drifts`). What each is judged
    by stays here; the records themselves are kept on `shelf` (few of them as objects)."""

    def __init__(self, *, unique_numbers: bool, shelf: Shelf) -> None:
        # Whether an invoice number names one invoice of the source (else it tells nothing).
        self.unique_numbers = unique_numbers
        # The ids of the source's stored cases with an invoice number (and another id); the
        # invoice number of the stored case with an id ("" unknown; None when there is none).
        self._same_number: Callable[[str, str], list[str]] | None = None
        self._case_number: Callable[[str], str | None] = lambda _aid: None
        self._withheld: list[Drifting] = []  # in the order withheld; their records on:
        self._shelf = shelf

    def look_up_with(
        self,
        same_number: Callable[[str, str], list[str]],
        case_number: Callable[[str], str | None] | None = None,
    ) -> None:
        """How the source's stored cases with an invoice number are found, for this read (and
        the invoice number of the stored case with an id)."""
        if self.unique_numbers:
            self._same_number = same_number
            if case_number is not None:
                self._case_number = case_number

    def withhold(self, key: str, invoice: Invoice, hashed: str) -> bool:
        """Whether the record of this new invoice is withheld (see the class)."""
        if self._same_number is None:
            return False
        registered = self._same_number(invoice.accounting_invoice_id, invoice.invoice_number)
        if not registered:
            return False
        drifting = Drifting(
            invoice.accounting_invoice_id, invoice.invoice_number, key, tuple(registered)
        )
        self._withhold(drifting, KeptRecord(invoice, key, hashed))
        return True

    def renamed(self, case_number: str | None, invoice_number: str) -> bool:
        """Whether a record of `invoice_number` whose id named a stored case of `case_number`
        is another invoice than that case's: numbers tell invoices apart (`unique_numbers`),
        and the two differ."""
        return (
            self._same_number is not None
            and case_number is not None
            and case_number != invoice_number
        )

    def withhold_renamed(self, key: str, invoice: Invoice, hashed: str, named: Renamed) -> None:
        """Withhold the record of `invoice` (with its own id), whose id named the stored case
        `named` of another invoice number (see `renamed`)."""
        assert self._same_number is not None  # noqa: S101 - `renamed` said so
        registered = self._same_number(named.case, invoice.invoice_number)
        own_id = invoice.accounting_invoice_id
        if own_id != named.case:  # through an alias: is the id itself a case's?
            named = replace(named, own_case_number=self._case_number(own_id))
        drifting = Drifting(
            invoice.accounting_invoice_id, invoice.invoice_number, key, tuple(registered), named
        )
        self._withhold(drifting, KeptRecord(invoice, key, hashed))

    def _withhold(self, drifting: Drifting, record: KeptRecord) -> None:
        self._shelf.put(str(len(self._withheld)), record)  # a name of its own: never replaced
        self._withheld.append(drifting)

    def registered(self) -> set[str]:
        """The stored cases the withheld records may be: whether the read had them decides."""
        return {case for drifting in self._withheld for case in drifting.registered}

    def renamed_cases(self) -> set[str]:
        """The stored cases whose id a record of another invoice number has in this read:
        seen by the read, yet not claimed by it."""
        return {
            drifting.renamed.case for drifting in self._withheld if drifting.renamed is not None
        }

    def judged(self, seen: Collection[str]) -> Iterator[tuple[Verdict, Drifting, Invoice, str]]:
        """Each withheld record's verdict, with the record's invoice and hash; once."""
        withheld, self._withheld = self._withheld, []
        verdicts = judge_drifts(withheld, seen)
        records = (record for chunk in self._shelf.chunks() for _, record in chunk)
        for verdict, drifting, record in zip(verdicts, withheld, records, strict=True):
            yield verdict, drifting, record.invoice, record.hashed
