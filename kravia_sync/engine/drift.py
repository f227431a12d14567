"""An invoice whose id changed in its source after its case was registered: the same invoice,
never a second case.

A source gives each invoice an id, or (where it has none) its invoice number with the
source's prefix. The id can change: a row whose id column was empty gets one, an ERP
migration renumbers its keys. A record whose id is new to the state store while its invoice
number is that of a case the same source registered under another id is that invoice again:
invoice numbers are unique within a source (the bookkeeping rules give each invoice its own
number in a series; a source whose numbers repeat sets `unique_invoice_numbers = false`).

An accountingInvoiceId never changes once it has been sent, so the case keeps its id and the
new one is recorded as its alias. That is safe only while nothing else claims the case:

- the case's own id is not in this read (else two records name one invoice number);
- no other new record of the read has the same number;
- the number belongs to one stored case of the source, not several.

Otherwise the record is quarantined with both ids named, and nothing is sent for it until the
source says which is which. `judge_drifts` is pure; `DriftWatch` keeps the withheld records
of a read, and is told the stored cases and the ids read by its caller.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass

from kravia_sync.model import Invoice

__all__ = ["Adopted", "Conflict", "DriftWatch", "Drifting", "judge_drifts"]


@dataclass(frozen=True, slots=True)
class Drifting:
    """A record whose id `aid` is new to the store, with the invoice number of stored cases of
    its source (`registered`: their ids)."""

    aid: str
    invoice_number: str
    key: str
    registered: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Adopted:
    """The record is the invoice registered as `registered`: `aid` becomes its alias."""

    aid: str
    registered: str


@dataclass(frozen=True, slots=True)
class Conflict:
    """The record cannot be told apart from a registered invoice: quarantined, with why."""

    aid: str
    reason: str


def judge_drifts(drifting: Iterable[Drifting], seen: Collection[str]) -> list[Adopted | Conflict]:
    """Each drifting record's verdict, in the order given. `seen`: the ids this read had."""
    records = list(drifting)
    claims = Counter(case for record in records for case in record.registered)
    return [_verdict(record, seen, claims) for record in records]


def _verdict(record: Drifting, seen: Collection[str], claims: Counter[str]) -> Adopted | Conflict:
    number = record.invoice_number
    ids = ", ".join(repr(case) for case in record.registered)
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


class DriftWatch:
    """The records of one source read whose id is new to the store and whose invoice number
    is registered from the source under another id: withheld from the work list until the
    read is complete, then each adopted or quarantined (`judge_drifts`)."""

    def __init__(self, *, unique_numbers: bool) -> None:
        # Whether an invoice number names one invoice of the source (else it tells nothing).
        self.unique_numbers = unique_numbers
        # The ids of the source's stored cases with an invoice number (and another id).
        self._same_number: Callable[[str, str], list[str]] | None = None
        self._withheld: list[tuple[Drifting, Invoice, str]] = []

    def look_up_with(self, same_number: Callable[[str, str], list[str]]) -> None:
        """How the source's stored cases with an invoice number are found, for this read."""
        if self.unique_numbers:
            self._same_number = same_number

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
        self._withheld.append((drifting, invoice, hashed))
        return True

    def registered(self) -> set[str]:
        """The stored cases the withheld records may be: whether the read had them decides."""
        return {case for drifting, _, _ in self._withheld for case in drifting.registered}

    def judged(
        self, seen: Collection[str]
    ) -> Iterator[tuple[Adopted | Conflict, Drifting, Invoice, str]]:
        """Each withheld record's verdict, with the record's invoice and hash; once."""
        withheld, self._withheld = self._withheld, []
        verdicts = judge_drifts((drifting for drifting, _, _ in withheld), seen)
        for verdict, (drifting, invoice, hashed) in zip(verdicts, withheld, strict=True):
            yield verdict, drifting, invoice, hashed
