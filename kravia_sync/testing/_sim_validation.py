"""The Kravia simulator's validation of request bodies, ASP.NET-style (errors by field): the
`invoice/register` body, the `invoice/payment` and `invoice/creditnote` bodies, and the field
helpers they share."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal

from kravia_sync.testing._sim_constants import (
    _ABSENT,
    _CONVERT,
    _COUNTRY_RE,
    _CURRENCY_RE,
    _DATE_RE,
    _INT32_MAX,
    _INT32_MIN,
    _MAX_DECIMAL,
    _ORGNR_RE,
    CLAIM_TYPE,
    CREDIT_NOTE_TYPE,
    PAYMENT_TYPE,
)
from kravia_sync.testing._sim_json import _ci

__all__ = ["validate_money", "validate_register"]


# --- validation -------------------------------------------------------------------------------


class _Errors:
    def __init__(self) -> None:
        self.items: dict[str, list[str]] = {}

    def add(self, key: str, message: str) -> None:
        self.items.setdefault(key, []).append(message)


def _leaf(key: str) -> str:
    return key.rsplit(".", 1)[-1]


def _required_string(errors: _Errors, key: str, value: object) -> str | None:
    if value is _ABSENT or value is None:
        errors.add(key, f"The {_leaf(key)} field is required.")
        return None
    if not isinstance(value, str):
        errors.add(key, _CONVERT.format("System.String"))
        return None
    if not value.strip():
        errors.add(key, f"The {_leaf(key)} field is required.")
        return None
    return value


def _optional_string(errors: _Errors, key: str, value: object) -> str | None:
    if value is _ABSENT or value is None:
        return None
    if not isinstance(value, str):
        errors.add(key, _CONVERT.format("System.String"))
        return None
    return value


def _date_field(errors: _Errors, key: str, value: object) -> date | None:
    text = _required_string(errors, key, value)
    if text is None:
        return None
    match = _DATE_RE.fullmatch(text)
    parsed: date | None = None
    if match is not None:
        year, month, day, hour, minute, second = match.groups()
        with contextlib.suppress(ValueError):
            parsed = datetime(  # validates the calendar date and the time of day
                int(year),
                int(month),
                int(day),
                int(hour or 0),
                int(minute or 0),
                int(second or 0),
                tzinfo=UTC,
            ).date()
    if parsed is None:
        errors.add(key, _CONVERT.format("System.DateTime"))
    return parsed


def _amount_field(errors: _Errors, key: str, value: object) -> Decimal | None:
    if value is _ABSENT:
        errors.add(key, f"The {_leaf(key)} field is required.")
        return None
    if isinstance(value, bool) or not isinstance(value, int | Decimal):
        errors.add(key, _CONVERT.format("System.Decimal"))
        return None
    amount = Decimal(value)
    if not amount.is_finite() or abs(amount) > _MAX_DECIMAL:
        errors.add(key, _CONVERT.format("System.Decimal"))
        return None
    if amount <= 0:
        errors.add(key, f"The field {_leaf(key)} must be greater than 0.")
        return None
    return amount


def _bool_field(errors: _Errors, key: str, value: object) -> bool | None:
    if value is _ABSENT or value is None:
        errors.add(key, f"The {_leaf(key)} field is required.")
        return None
    if isinstance(value, bool):
        return value
    if value in {"true", "false"}:  # the guide sends the flag as a lower-case string
        return value == "true"
    errors.add(key, _CONVERT.format("System.Boolean"))
    return None


def _creditor_field(errors: _Errors, value: object, expected: int | None) -> None:
    key = "CreditorId"
    if value is _ABSENT:
        errors.add(key, "The CreditorId field is required.")
    elif (
        isinstance(value, bool)
        or not isinstance(value, int)
        or not _INT32_MIN <= value <= _INT32_MAX
    ):
        errors.add(key, _CONVERT.format("System.Int32"))
    elif expected is not None and value != expected:
        errors.add(key, f"Creditor {value} is not accessible with this token.")


def _address_field(errors: _Errors, value: object) -> None:
    key = "PostalAddress"
    if value is _ABSENT or value is None:
        errors.add(key, "The PostalAddress field is required.")
        return
    if not isinstance(value, dict):
        errors.add(key, _CONVERT.format("PostalAddress"))
        return
    address = _ci(value)
    for name in ("AddressAddressLine1", "AddressPostalCode", "AddressCity"):
        _required_string(errors, f"{key}.{name}", address.get(name.lower(), _ABSENT))
    _optional_string(
        errors, f"{key}.AddressAddressLine2", address.get("addressaddressline2", _ABSENT)
    )
    country_key = f"{key}.AddressCountryCode"
    country = _required_string(errors, country_key, address.get("addresscountrycode", _ABSENT))
    if country is not None and not _COUNTRY_RE.fullmatch(country):
        errors.add(
            country_key,
            "The field AddressCountryCode must be a two-letter ISO 3166-1 code (e.g. NO).",
        )


@dataclass(frozen=True)
class _Registration:
    invoice_no: str
    accounting_invoice_id: str | None
    original_amount: Decimal
    currency_code: str
    debtor_name: str


def validate_register(
    body: object, creditor_id: int | None = None
) -> tuple[dict[str, list[str]], _Registration | None]:
    """ASP.NET-style validation of an `invoice/register` body: (errors by field, registration)."""
    errors = _Errors()
    if not isinstance(body, dict):
        errors.add("$", _CONVERT.format("the register request (a JSON object)"))
        return errors.items, None
    data = _ci(body)

    claim = _required_string(errors, "ClaimType", data.get("claimtype", _ABSENT))
    if claim is not None and claim != CLAIM_TYPE:
        errors.add("ClaimType", f"The value '{claim}' is not valid for ClaimType.")
    _creditor_field(errors, data.get("creditorid", _ABSENT), creditor_id)
    invoice_no = _required_string(errors, "InvoiceNo", data.get("invoiceno", _ABSENT))
    invoice_date = _date_field(errors, "InvoiceDate", data.get("invoicedate", _ABSENT))
    due_date = _date_field(errors, "DueDate", data.get("duedate", _ABSENT))
    if invoice_date is not None and due_date is not None and due_date < invoice_date:
        errors.add("DueDate", "The DueDate must not be before the InvoiceDate.")
    amount = _amount_field(errors, "OriginalAmount", data.get("originalamount", _ABSENT))
    currency = _required_string(errors, "CurrencyCode", data.get("currencycode", _ABSENT))
    if currency is not None and not _CURRENCY_RE.fullmatch(currency):
        errors.add(
            "CurrencyCode",
            "The field CurrencyCode must be a three-letter ISO 4217 code (e.g. NOK).",
        )
    debtor_name = _required_string(errors, "DebtorName", data.get("debtorname", _ABSENT))
    private = _bool_field(errors, "IsPrivateIndividual", data.get("isprivateindividual", _ABSENT))
    _address_field(errors, data.get("postaladdress", _ABSENT))
    org = _optional_string(errors, "OrganizationNumber", data.get("organizationnumber", _ABSENT))
    if private is False and (org is None or not org.strip()):
        if "OrganizationNumber" not in errors.items:
            errors.add(
                "OrganizationNumber", "The OrganizationNumber field is required for B2B claims."
            )
    elif org and not _ORGNR_RE.fullmatch(org):
        errors.add("OrganizationNumber", "The field OrganizationNumber must be 9 digits.")
    for name in ("Email", "Ssn", "DebtorNumber", "Description"):
        _optional_string(errors, name, data.get(name.lower(), _ABSENT))
    accounting_id = _optional_string(
        errors, "AccountingInvoiceId", data.get("accountinginvoiceid", _ABSENT)
    )

    if (
        errors.items
        or invoice_no is None
        or amount is None
        or currency is None
        or debtor_name is None
    ):
        return errors.items, None
    return errors.items, _Registration(
        invoice_no=invoice_no,
        accounting_invoice_id=accounting_id,
        original_amount=amount,
        currency_code=currency,
        debtor_name=debtor_name,
    )


def _int32_field(errors: _Errors, key: str, value: object) -> int | None:
    if value is _ABSENT or value is None:
        errors.add(key, f"The {_leaf(key)} field is required.")
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or not _INT32_MIN <= value <= _INT32_MAX
    ):
        errors.add(key, _CONVERT.format("System.Int32"))
        return None
    return value


def _signed_amount(errors: _Errors, key: str, value: object, *, negative: bool) -> Decimal | None:
    """A decimal amount that must be below 0 (`negative`) or above 0."""
    if value is _ABSENT or value is None:
        errors.add(key, f"The {_leaf(key)} field is required.")
        return None
    if isinstance(value, bool) or not isinstance(value, int | Decimal):
        errors.add(key, _CONVERT.format("System.Decimal"))
        return None
    amount = Decimal(value)
    if not amount.is_finite() or abs(amount) > _MAX_DECIMAL:
        errors.add(key, _CONVERT.format("System.Decimal"))
        return None
    if negative and amount >= 0:
        errors.add(key, f"The field {_leaf(key)} must be less than 0.")
        return None
    if not negative and amount <= 0:
        errors.add(key, f"The field {_leaf(key)} must be greater than 0.")
        return None
    return amount


@dataclass(frozen=True)
class _MoneyLine:
    invoice_id: int
    amount: Decimal  # as sent: negative on a credit note


@dataclass(frozen=True)
class _MoneyRequest:
    """A validated `invoice/payment` or `invoice/creditnote` body."""

    type: str  # PAYMENT_TYPE or CREDIT_NOTE_TYPE
    accounting_payment_id: str
    on: date
    description: str | None
    amount: Decimal
    lines: tuple[_MoneyLine, ...]


def _money_lines(errors: _Errors, value: object, *, negative: bool) -> list[_MoneyLine] | None:
    key = "Invoices"
    if value is _ABSENT or value is None:
        errors.add(key, "The Invoices field is required.")
        return None
    if not isinstance(value, list):
        errors.add(key, _CONVERT.format("System.Collections.Generic.List`1[InvoiceAmount]"))
        return None
    if not value:
        errors.add(key, "The Invoices field must list at least one invoice.")
        return None
    lines: list[_MoneyLine] = []
    seen: set[int] = set()
    for index, item in enumerate(value):
        prefix = f"{key}[{index}]"
        if not isinstance(item, dict):
            errors.add(prefix, _CONVERT.format("InvoiceAmount"))
            continue
        line = _ci(item)
        invoice_id = _int32_field(errors, f"{prefix}.InvoiceId", line.get("invoiceid", _ABSENT))
        amount = _signed_amount(
            errors, f"{prefix}.Amount", line.get("amount", _ABSENT), negative=negative
        )
        if invoice_id is not None and invoice_id in seen:
            errors.add(f"{prefix}.InvoiceId", f"Invoice {invoice_id} is listed more than once.")
            continue
        if invoice_id is not None:
            seen.add(invoice_id)
        if invoice_id is not None and amount is not None:
            lines.append(_MoneyLine(invoice_id, amount))
    return lines


def validate_money(
    body: object, *, credit_note: bool
) -> tuple[dict[str, list[str]], _MoneyRequest | None]:
    """ASP.NET-style validation of an `invoice/payment` (or, with `credit_note`, an
    `invoice/creditnote`) body: (errors by field, the request). Whether the invoices exist is
    checked by the caller, against the cases held."""
    errors = _Errors()
    what = "credit note" if credit_note else "payment"
    if not isinstance(body, dict):
        errors.add("$", _CONVERT.format(f"the {what} request (a JSON object)"))
        return errors.items, None
    data = _ci(body)
    accounting_id = _required_string(
        errors, "AccountingPaymentId", data.get("accountingpaymentid", _ABSENT)
    )
    on = _date_field(errors, "Date", data.get("date", _ABSENT))
    description = _optional_string(errors, "Description", data.get("description", _ABSENT))
    amount = _signed_amount(errors, "Amount", data.get("amount", _ABSENT), negative=credit_note)
    lines = _money_lines(errors, data.get("invoices", _ABSENT), negative=credit_note)
    if amount is not None and lines is not None and not errors.items:
        total = sum((line.amount for line in lines), Decimal(0))
        if total != amount:
            errors.add(
                "Amount",
                f"The field Amount ({amount}) must equal the sum of the Invoices ({total}).",
            )
    if errors.items or accounting_id is None or on is None or amount is None or not lines:
        return errors.items, None
    return errors.items, _MoneyRequest(
        type=CREDIT_NOTE_TYPE if credit_note else PAYMENT_TYPE,
        accounting_payment_id=accounting_id,
        on=on,
        description=description,
        amount=amount,
        lines=tuple(lines),
    )
