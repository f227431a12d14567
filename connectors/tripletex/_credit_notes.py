"""Tripletex's credit notes as payment records.

A credit note is an invoice of its own in `GET /invoice` (`isCreditNote`), with a negative
`amount` and the original's id in `creditedInvoice`. Tripletex counts it in the credited
invoice's `amountOutstanding`; the engine nets one issued before the invoice went to Kravia
(its amount already left it out) and sends one issued after it to Kravia as a credit note, once,
with the credit note's id as its payment id, while the drop it makes in the credited invoice's
amount waits for it and is not sent again as a payment.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date
from decimal import Decimal, InvalidOperation
from typing import Any

from kravia_sync import PaymentRecord, RecordError

__all__ = ["credit_note_record"]


def credit_note_record(
    invoice: Mapping[str, Any], *, since: date | None
) -> PaymentRecord | RecordError | None:
    """The payment record of a credit note (`invoice`, with `isCreditNote`), a `RecordError`
    when its amount or date cannot be read, or None when there is nothing to send: tied to no
    invoice, in another currency than NOK (its invoice is not sent either), of no amount, or
    issued before `since`."""
    note_id = invoice.get("id")
    key = f"credit note {note_id}"
    credited = invoice.get("creditedInvoice")
    if isinstance(credited, Mapping):
        credited = credited.get("id")
    if not isinstance(credited, int) or isinstance(credited, bool) or note_id is None:
        return None
    currency = invoice.get("currency")
    code = currency.get("code") if isinstance(currency, Mapping) else None
    if isinstance(code, str) and code.strip().upper() not in {"", "NOK"}:
        return None
    raw_amount = invoice.get("amount")
    amount = _kroner(raw_amount)
    if amount is None:
        return RecordError(key, "amount", f"{raw_amount!r} is not an amount in kroner")
    raw_date = invoice.get("invoiceDate")
    try:
        issued = date.fromisoformat(str(raw_date))
    except ValueError:
        return RecordError(key, "invoiceDate", f"{raw_date!r} is not a date")
    if amount == 0 or (since is not None and issued < since):
        return None
    number = invoice.get("invoiceNumber")
    return PaymentRecord(
        key=key,
        fields={
            "payment_id": str(note_id),
            "kind": "credit_note",
            "date": issued,
            "amount": amount,
            "accounting_invoice_id": str(credited),
            "description": f"Kreditnota {number}" if number is not None else "Kreditnota",
        },
    )


def _kroner(value: object) -> Decimal | None:
    """A JSON amount in kroner (a number or its text), without its sign; None when it is not
    one."""
    if isinstance(value, bool) or not isinstance(value, int | float | str | Decimal):
        return None
    try:
        amount = Decimal(str(value))
    except InvalidOperation:
        return None
    return abs(amount) if amount.is_finite() else None
