"""The bodies kravia-sync sends Kravia: a register, a payment, a credit note, written exactly
(amounts as JSON numbers with their decimals, dates as the guide writes them)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from kravia_sync.kravia.answers import MoneyLine
from kravia_sync.kravia.assumptions import (
    CLAIM_TYPE,
    CREDIT_NOTE_TIME_SUFFIX,
)
from kravia_sync.model import DebtorKind, Invoice

__all__ = [
    "build_credit_note_body",
    "build_payment_body",
    "build_register_body",
    "dumps_exact",
    "format_dotnet_time",
]


def build_register_body(invoice: Invoice, creditor_id: int) -> dict[str, Any]:
    """The `invoice/register` body, with the guide's field names and JSON types.

    ASSUMED from the guide's example: `isPrivateIndividual` is the *string* "true"/"false";
    `originalAmount` is a JSON number; dates are `YYYY-MM-DD`.
    """
    debtor = invoice.debtor
    address: dict[str, Any] = {
        "addressAddressLine1": debtor.address.line1,
        "addressPostalCode": debtor.address.postal_code,
        "addressCity": debtor.address.city,
        "addressCountryCode": debtor.address.country,
    }
    if debtor.address.line2:
        address["addressAddressLine2"] = debtor.address.line2
    return {
        "claimType": CLAIM_TYPE,
        "creditorId": creditor_id,
        "accountingInvoiceId": invoice.accounting_invoice_id,
        "debtorName": debtor.name,
        "debtorNumber": debtor.customer_number,
        "email": debtor.email,
        "ssn": debtor.ssn,
        "organizationNumber": debtor.organization_number,
        "isPrivateIndividual": "true" if debtor.kind is DebtorKind.PRIVATE else "false",
        "postalAddress": address,
        "invoiceNo": invoice.invoice_number,
        "invoiceDate": invoice.invoice_date.isoformat(),
        "dueDate": invoice.due_date.isoformat(),
        "originalAmount": invoice.amount,
        "currencyCode": invoice.currency,
        "description": invoice.description,
    }


def _checked_lines(accounting_payment_id: str, lines: Sequence[MoneyLine]) -> list[MoneyLine]:
    if not accounting_payment_id.strip():
        raise ValueError("a payment or credit note needs a non-blank accounting payment id")
    if not lines:
        raise ValueError(f"payment {accounting_payment_id} covers no case")
    ids = [line.kravia_id for line in lines]
    if len(set(ids)) != len(ids):
        raise ValueError(f"payment {accounting_payment_id} lists a case more than once: {ids}")
    return list(lines)


def build_payment_body(
    *, accounting_payment_id: str, paid_on: date, description: str, lines: Sequence[MoneyLine]
) -> dict[str, Any]:
    """The `invoice/payment` body, with the guide's mixed casing; `amount` is the lines' sum."""
    checked = _checked_lines(accounting_payment_id, lines)
    return {
        "date": paid_on.isoformat(),
        "description": description,
        "AccountingPaymentId": accounting_payment_id,
        "amount": sum((line.amount for line in checked), Decimal(0)),
        "invoices": [{"invoiceId": line.kravia_id, "amount": line.amount} for line in checked],
    }


def build_credit_note_body(
    *, accounting_payment_id: str, credited_on: date, description: str, lines: Sequence[MoneyLine]
) -> dict[str, Any]:
    """The `invoice/creditnote` body, PascalCase as in the guide, every amount negative."""
    checked = _checked_lines(accounting_payment_id, lines)
    return {
        "Date": credited_on.isoformat() + CREDIT_NOTE_TIME_SUFFIX,
        "Amount": -sum((line.amount for line in checked), Decimal(0)),
        "AccountingPaymentId": accounting_payment_id,
        "Description": description,
        "Invoices": [{"InvoiceId": line.kravia_id, "Amount": -line.amount} for line in checked],
    }


def dumps_exact(body: Mapping[str, Any]) -> bytes:
    """JSON with every `Decimal` written as an exact JSON number (never through a float)."""
    decimals: list[Decimal] = []

    def placeholder(value: object) -> str:
        if isinstance(value, Decimal):
            decimals.append(value)
            return f"\u0000decimal{len(decimals) - 1}\u0000"
        if isinstance(value, date):
            return value.isoformat()
        raise TypeError(f"{type(value).__name__} is not JSON serialisable")

    text = json.dumps(body, default=placeholder, ensure_ascii=False)
    for index, value in enumerate(decimals):
        number = str(int(value)) if value == value.to_integral_value() else format(value, "f")
        text = text.replace(f'"\\u0000decimal{index}\\u0000"', number)
    return text.encode()


def format_dotnet_time(moment: datetime) -> str:
    """A UTC timestamp the way the guide shows it: 7 fractional digits, no zone (ASSUMED UTC)."""
    utc = moment.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond:06d}0"
