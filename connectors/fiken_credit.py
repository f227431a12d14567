"""Fiken's credit notes: what an invoice still owes after them, and their payment records.

Fiken's API v2 lists credit notes at `GET /companies/{companySlug}/creditNotes` (paged like the
invoices), each a `creditNoteResult`: `creditNoteId`, `creditNoteNumber`, `associatedInvoiceId`
("Id of associated invoice"), `issueDate`, `currency` and `net`/`vat`/`gross` "(in creditNote
currency) in cents". An invoice names its credit notes in `associatedCreditNotes`.

Whether a credit note lowers the invoice's `sale.outstandingBalance` is not documented. The
sale's own figures tell, per invoice: with `gross` the invoice's amount, `totalPaid` what was
paid and `credited` its credit notes' gross amounts,

* `outstandingBalance + totalPaid + credited == gross`: the balance already leaves the credit
  notes out, and is what is owed;
* `outstandingBalance + totalPaid == gross`: it does not; what is owed is the balance less the
  credit notes;
* neither: what is owed cannot be told, and the invoice is quarantined with that reason.

Either way the amount the engine sees is what is owed, so a credit note lowers it exactly once.
The decisions here are pure; `FikenCreditNotes` is the one paged read.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any, Final

from connectors.rest._http import Session
from connectors.rest._paging import Pager, PageRequest, PageResponse, PagingError
from kravia_sync import ConnectorError, PaymentRecord, RecordError

__all__ = [
    "CreditNote",
    "InvoiceFigures",
    "credit_note_record",
    "owed_after_credits",
    "parse_credit_note",
    "read_credit_notes",
]

CENTS: Final = Decimal(100)


@dataclass(frozen=True, slots=True)
class CreditNote:
    """One credit note as the connector needs it (amounts in øre)."""

    credit_note_id: int
    number: int | None
    invoice_id: int | None  # associatedInvoiceId; None: not tied to an invoice
    gross: int
    currency: str
    issued: date
    text: str | None = None

    @property
    def in_nok(self) -> bool:
        return self.currency in {"", "NOK"}


@dataclass(frozen=True, slots=True)
class InvoiceFigures:
    """An invoice's own figures (øre): what `owed_after_credits` weighs."""

    invoice_id: int
    outstanding: int
    total_paid: int | None  # sale.totalPaid
    gross: int | None
    credit_note_ids: tuple[int, ...] = ()  # associatedCreditNotes


def _whole(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def parse_credit_note(raw: object, where: str) -> CreditNote | RecordError:
    """A `creditNoteResult` read; a `RecordError` naming the field when it cannot be."""
    if not isinstance(raw, Mapping):
        return RecordError(where, "credit note", f"is {type(raw).__name__}, not a JSON object")
    credit_note_id = _whole(raw.get("creditNoteId"))
    if credit_note_id is None:
        return RecordError(where, "creditNoteId", f"{raw.get('creditNoteId')!r} is not an id")
    key = f"credit note {credit_note_id}"
    gross = _whole(raw.get("gross"))
    if gross is None:
        return RecordError(key, "gross", f"{raw.get('gross')!r} is not a whole number of øre")
    invoice = raw.get("associatedInvoiceId")
    if invoice is not None and _whole(invoice) is None:
        return RecordError(key, "associatedInvoiceId", f"{invoice!r} is not an invoice id")
    issued = raw.get("issueDate")
    try:
        issued_on = date.fromisoformat(issued) if isinstance(issued, str) else None
    except ValueError:
        issued_on = None
    if issued_on is None:
        return RecordError(key, "issueDate", f"{issued!r} is not a date (yyyy-mm-dd)")
    currency = raw.get("currency")
    text = raw.get("creditNoteText")
    return CreditNote(
        credit_note_id=credit_note_id,
        number=_whole(raw.get("creditNoteNumber")),
        invoice_id=_whole(invoice),
        gross=gross,
        currency=currency.strip().upper() if isinstance(currency, str) else "",
        issued=issued_on,
        text=text.strip() or None if isinstance(text, str) else None,
    )


def owed_after_credits(
    figures: InvoiceFigures, notes: Mapping[int, CreditNote], by_invoice: Iterable[CreditNote]
) -> int | str:
    """What the invoice still owes, in øre, after its credit notes (see the module's rules);
    a reason a person can act on when it cannot be told. `notes`: every credit note read, by
    id; `by_invoice`: those whose associatedInvoiceId is this invoice."""
    credited = _credited(figures, notes, by_invoice)
    if isinstance(credited, str):
        return credited
    if credited == 0:
        return figures.outstanding
    if figures.total_paid is None or figures.gross is None:
        return (
            f"the invoice has credit notes ({credited / CENTS} credited) but no gross or "
            "sale.totalPaid, so whether its outstanding balance leaves them out cannot be told"
        )
    if figures.outstanding + figures.total_paid + credited == figures.gross:
        return figures.outstanding  # the balance already leaves the credit notes out
    if figures.outstanding + figures.total_paid == figures.gross:
        return max(0, figures.outstanding - credited)  # it does not: they come off here
    return (
        f"outstanding {figures.outstanding / CENTS}, paid {figures.total_paid / CENTS} and "
        f"credited {credited / CENTS} do not add up to the invoice's gross "
        f"{figures.gross / CENTS} either way, so what is still owed cannot be told: check the "
        "invoice in Fiken"
    )


def _credited(
    figures: InvoiceFigures, notes: Mapping[int, CreditNote], by_invoice: Iterable[CreditNote]
) -> int | str:
    """The gross of the invoice's credit notes, named either way (by the invoice's
    associatedCreditNotes, or by their associatedInvoiceId); a reason when one is unknown."""
    mine = {note.credit_note_id: note for note in by_invoice}
    for credit_note_id in figures.credit_note_ids:
        note = notes.get(credit_note_id)
        if note is None:
            return (
                f"credit note {credit_note_id} is listed on the invoice (associatedCreditNotes) "
                "but was not in GET /creditNotes, so what is still owed cannot be told; it is "
                "read again next pass"
            )
        mine[credit_note_id] = note
    foreign = sorted(n.credit_note_id for n in mine.values() if not n.in_nok)
    if foreign:
        return f"credit note {foreign[0]} is not in NOK: what is still owed is not sent"
    return sum(abs(note.gross) for note in mine.values())


def credit_note_record(note: CreditNote) -> PaymentRecord:
    """The payment record of a credit note tied to an invoice: its `creditNoteId` is the
    payment id (Kravia's AccountingPaymentId), its gross the amount."""
    label = f"Kreditnota {note.number}" if note.number is not None else "Kreditnota"
    description = f"{label}: {note.text}" if note.text else label
    fields: dict[str, object] = {
        "payment_id": str(note.credit_note_id),
        "kind": "credit_note",
        "date": note.issued,
        "amount": Decimal(abs(note.gross)) / CENTS,
        "accounting_invoice_id": str(note.invoice_id),
        "description": description,
    }
    return PaymentRecord(key=f"credit note {note.credit_note_id}", fields=fields)


def read_credit_notes(
    session: Session, path: str, pager: Pager, params: Mapping[str, str], *, max_pages: int
) -> Iterator[Any]:
    """Every credit note of `path` that `params` select, page by page, as the API answers
    them (raw); raise `ConnectorError` when a page fails or the pages do not add up."""
    request: PageRequest | None = pager.first(path, params)
    page = 0
    while request is not None:
        page += 1
        if page > max_pages:
            raise ConnectorError(f"the credit notes need more than {max_pages} pages")
        what = f"credit notes page {page}"
        response, body = session.get_json(request.url, what=what, params=request.params)
        if not isinstance(body, list):
            raise ConnectorError(f"{what}: expected a list of credit notes in the answer")
        try:
            request = pager.next(
                request, PageResponse(str(response.url), response.headers, body, len(body))
            )
        except PagingError as exc:
            raise ConnectorError(f"{what}: {exc}") from None
        yield from body
    try:
        pager.finish()
    except PagingError as exc:
        raise ConnectorError(f"the credit notes: {exc}") from None
