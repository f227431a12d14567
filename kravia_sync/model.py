"""The canonical invoice: what every connector's records are normalised and validated into.

Connectors yield flat records (a mapping of the canonical field names below to values, strings
or typed); `Invoice.from_record` turns one into a validated `Invoice` or raises
`InvalidRecordError` naming the field and the reason.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from typing import Annotated

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from kravia_sync.documents import Document
from kravia_sync.errors import InvalidRecordError
from kravia_sync.field_limits import INVOICE_FIELD_LIMITS, check_text_fields

__all__ = [
    "RECORD_FIELDS",
    "REQUIRED_FIELDS",
    "Debtor",
    "DebtorKind",
    "Invoice",
    "PostalAddress",
    "parse_amount",
    "parse_date",
]

"""The biggest copy a `FileDocument` reads unless given another `max_bytes` (20 MiB)."""
CENT = Decimal("0.01")
# Larger amounts are no invoice (and would not survive exact arithmetic with cents).
MAX_AMOUNT = Decimal("999999999999999999.99")
# Dates outside these years are typing errors, not invoices (and date arithmetic on them
# overflows): such a record is quarantined.
FIRST_YEAR, LAST_YEAR = 1900, 2199

# The flat record format: the field names connectors (and folder files) use.
RECORD_FIELDS: tuple[str, ...] = (
    "invoice_number",
    "accounting_invoice_id",
    "invoice_date",
    "due_date",
    "amount",
    "currency",
    "description",
    "debtor_name",
    "debtor_number",
    "debtor_email",
    "debtor_type",
    "organization_number",
    "ssn",
    "address_line1",
    "address_line2",
    "postal_code",
    "city",
    "country",
)
REQUIRED_FIELDS: tuple[str, ...] = (
    "invoice_number",
    "invoice_date",
    "due_date",
    "amount",
    "debtor_name",
    "address_line1",
    "postal_code",
    "city",
)

_DOTTED_DATE = re.compile(r"^(\d{1,2})\.(\d{1,2})\.(\d{4})$")


# The registries behind these checks load on first use: a pass with no record to validate
# never pays for them.
def _is_country(code: str) -> bool:
    import pycountry  # noqa: PLC0415

    return pycountry.countries.get(alpha_2=code) is not None


def _is_currency(code: str) -> bool:
    import pycountry  # noqa: PLC0415

    return pycountry.currencies.get(alpha_3=code) is not None


def _is_organization_number(value: str) -> bool:
    from stdnum.no import orgnr  # noqa: PLC0415

    return bool(orgnr.is_valid(value))


def _is_fodselsnummer(value: str) -> bool:
    from stdnum.no import fodselsnummer  # noqa: PLC0415

    return bool(fodselsnummer.is_valid(value))


def money(value: Decimal) -> Decimal:
    """`value` as money: in whole øre (cents), kept with exactly two decimals, so that 2250,
    2250.00 and an SQL NUMERIC(18,4) 2250.0000 are one amount. ValueError for more decimals or
    an amount beyond MAX_AMOUNT (either sign)."""
    if abs(value) > MAX_AMOUNT:
        raise ValueError(f"{value} is larger than any invoice amount (at most {MAX_AMOUNT})")
    cents = value.quantize(CENT)
    if cents != value:
        raise ValueError(f"{value} has more than two decimals")
    return cents


def parse_amount(value: object) -> Decimal:
    """An amount as `Decimal`: numbers, or text with a decimal comma and thousands separators.

    Accepts `1234.50`, `1234,50`, `1 234,50`, `1.234,50` and `1,234.50`. Floats are refused: money
    must never pass through binary floating point.
    """
    if isinstance(value, Decimal):
        result = value
    elif isinstance(value, bool):
        raise ValueError("a boolean is not an amount")
    elif isinstance(value, int):
        result = Decimal(value)
    elif isinstance(value, float):
        raise ValueError("a float is not an exact amount; give it as text or Decimal")
    elif isinstance(value, str):
        result = _parse_amount_text(value)
    else:
        raise ValueError(f"{type(value).__name__} is not an amount")
    if not result.is_finite():
        raise ValueError("the amount is not a finite number")
    return result


def _parse_amount_text(text: str) -> Decimal:
    cleaned = text.strip().replace("\u00a0", "").replace("\u202f", "").replace(" ", "")
    if cleaned.upper().startswith(("NOK", "KR")):
        cleaned = cleaned.lstrip("NOKRnokr").strip()
    if "," in cleaned and "." in cleaned:
        if cleaned.rfind(",") > cleaned.rfind("."):  # 1.234,50
            cleaned = cleaned.replace(".", "").replace(",", ".")
        else:  # 1,234.50
            cleaned = cleaned.replace(",", "")
    elif "," in cleaned:
        cleaned = cleaned.replace(",", ".")
    match = re.fullmatch(r"[+-]?\d+(?:\.(\d+))?", cleaned)
    if not match:
        raise ValueError(f"{text!r} is not an amount")
    if match.group(1) is not None and len(match.group(1)) > 2:
        # "234,500" could be 234.5 or, written the English way, 234500: refuse to guess.
        raise ValueError(f"{text!r} has more than two decimals")
    try:
        return Decimal(cleaned)
    except InvalidOperation as exc:  # pragma: no cover - the regex guards this
        raise ValueError(f"{text!r} is not an amount") from exc


def parse_date(value: object) -> date:
    """A calendar date from a `date`, an ISO `YYYY-MM-DD` text, or a Norwegian `DD.MM.YYYY`
    text, in the years FIRST_YEAR to LAST_YEAR."""
    parsed = _parse_date(value)
    if not FIRST_YEAR <= parsed.year <= LAST_YEAR:
        raise ValueError(
            f"{parsed} is not a plausible date (only years {FIRST_YEAR} to {LAST_YEAR})"
        )
    return parsed


def _parse_date(value: object) -> date:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    if not isinstance(value, str):
        raise ValueError(f"{type(value).__name__} is not a date")
    text = value.strip()
    dotted = _DOTTED_DATE.match(text)
    try:
        if dotted:
            day, month, year = (int(part) for part in dotted.groups())
            return date(year, month, day)
        if "T" in text or " " in text:
            return datetime.fromisoformat(text).date()
        return date.fromisoformat(text)
    except ValueError as exc:
        raise ValueError(f"{value!r} is not a real date ({exc})") from exc


def _blank_to_none(value: object) -> object:
    if isinstance(value, str) and not value.strip():
        return None
    return value


def _digits_only(value: object) -> object:
    if isinstance(value, str):
        return re.sub(r"[\s.\-]", "", value)
    return value


OptionalText = Annotated[str | None, BeforeValidator(_blank_to_none)]


class DebtorKind(StrEnum):
    PRIVATE = "private"
    BUSINESS = "business"


class PostalAddress(BaseModel):
    model_config = ConfigDict(frozen=True, str_strip_whitespace=True, extra="forbid")

    line1: str = Field(min_length=1)
    line2: OptionalText = None
    postal_code: str = Field(min_length=1)
    city: str = Field(min_length=1)
    country: str = "NO"

    @field_validator("country", mode="before")
    @classmethod
    def _country_is_iso_3166(cls, value: object) -> str:
        if value is None or (isinstance(value, str) and not value.strip()):
            return "NO"
        if not isinstance(value, str):
            raise ValueError("the country must be an ISO 3166 code such as NO")
        code = value.strip().upper()
        if len(code) != 2 or not _is_country(code):
            raise ValueError(f"{value!r} is not an ISO 3166 alpha-2 country code")
        return code

    @model_validator(mode="after")
    def _postal_code_shape(self) -> PostalAddress:
        if self.country == "NO" and not re.fullmatch(r"\d{4}", self.postal_code):
            raise ValueError(
                f"postal_code {self.postal_code!r} is not a Norwegian postal code (4 digits)"
            )
        return self


class Debtor(BaseModel):
    model_config = ConfigDict(frozen=True, str_strip_whitespace=True, extra="forbid")

    name: str = Field(min_length=1)
    kind: DebtorKind
    customer_number: OptionalText = None
    email: OptionalText = None
    organization_number: Annotated[
        str | None, BeforeValidator(_blank_to_none), BeforeValidator(_digits_only)
    ] = None
    ssn: Annotated[str | None, BeforeValidator(_blank_to_none), BeforeValidator(_digits_only)] = (
        None
    )
    address: PostalAddress

    @field_validator("email")
    @classmethod
    def _email_shape(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", value):
            raise ValueError(f"{value!r} is not an e-mail address")
        return value

    @field_validator("organization_number")
    @classmethod
    def _organization_number_is_mod11(cls, value: str | None) -> str | None:
        if value is not None and not _is_organization_number(value):
            raise ValueError(
                f"{value!r} is not a valid Norwegian organisation number (9 digits, MOD11)"
            )
        return value

    @field_validator("ssn")
    @classmethod
    def _ssn_is_fodselsnummer(cls, value: str | None) -> str | None:
        if value is not None and not _is_fodselsnummer(value):
            raise ValueError("not a valid fødselsnummer or D-number (11 digits, two check digits)")
        return value

    @model_validator(mode="after")
    def _business_has_organization_number(self) -> Debtor:
        if self.kind is DebtorKind.BUSINESS and self.organization_number is None:
            raise ValueError("organization_number is required for a business debtor")
        return self


class Invoice(BaseModel):
    """One overdue invoice in the canonical form the engine works with."""

    model_config = ConfigDict(
        frozen=True, str_strip_whitespace=True, extra="forbid", arbitrary_types_allowed=True
    )

    invoice_number: str = Field(min_length=1)
    accounting_invoice_id: str = Field(min_length=1)
    invoice_date: Annotated[date, BeforeValidator(parse_date)]
    due_date: Annotated[date, BeforeValidator(parse_date)]
    amount: Annotated[Decimal, BeforeValidator(parse_amount)]
    currency: str = "NOK"
    description: OptionalText = None
    debtor: Debtor
    document: Document | None = Field(default=None, exclude=True)

    @field_validator("amount")
    @classmethod
    def _amount_is_money(cls, value: Decimal) -> Decimal:
        """What is still outstanding, as money (see `money`). 0 is valid: the invoice is paid
        (never sent to collection; one already in Kravia is reported paid in full)."""
        if value < 0:
            raise ValueError(f"the outstanding amount must not be negative, got {value}")
        return money(value)

    @field_validator("currency", mode="before")
    @classmethod
    def _currency_is_iso_4217(cls, value: object) -> str:
        if value is None or (isinstance(value, str) and not value.strip()):
            return "NOK"
        if not isinstance(value, str):
            raise ValueError("the currency must be an ISO 4217 code such as NOK")
        code = value.strip().upper()
        if len(code) != 3 or not _is_currency(code):
            raise ValueError(f"{value!r} is not an ISO 4217 currency code")
        return code

    @model_validator(mode="after")
    def _due_after_invoice_date(self) -> Invoice:
        if self.due_date < self.invoice_date:
            raise ValueError(f"due_date {self.due_date} is before invoice_date {self.invoice_date}")
        return self

    @classmethod
    def from_record(
        cls,
        record: Mapping[str, object],
        *,
        id_prefix: str = "",
        document: Document | None = None,
    ) -> Invoice:
        """Validate one flat record; raise `InvalidRecordError` naming the first bad field.

        Every text field is held to its bound in `field_limits` before its content is checked:
        too long, or holding a control character, it is refused, never cut."""
        unknown = sorted(set(record) - set(RECORD_FIELDS))
        if unknown:
            raise InvalidRecordError(unknown[0], "unknown field (see the record format)")
        values = {key: _blank_to_none(value) for key, value in record.items()}
        for name in REQUIRED_FIELDS:
            if values.get(name) is None:
                raise InvalidRecordError(name, "required field is missing or empty")
        accounting_invoice_id = record_accounting_id(values, id_prefix)
        # Measured as sent: the accountingInvoiceId with the source's id_prefix.
        check_text_fields(
            {**values, "accounting_invoice_id": accounting_invoice_id}, INVOICE_FIELD_LIMITS
        )
        organization_number = values.get("organization_number")
        kind = values.get("debtor_type")
        if kind is None:
            kind = DebtorKind.BUSINESS if organization_number is not None else DebtorKind.PRIVATE
        elif isinstance(kind, str) and kind.strip().lower() in DebtorKind.__members__.values():
            kind = kind.strip().lower()
        else:
            raise InvalidRecordError("debtor_type", f"{kind!r} is neither private nor business")
        payload = {
            "invoice_number": _as_text(values["invoice_number"]),
            "accounting_invoice_id": accounting_invoice_id,
            "invoice_date": values["invoice_date"],
            "due_date": values["due_date"],
            "amount": values["amount"],
            "currency": values.get("currency"),
            "description": values.get("description"),
            "document": document,
            "debtor": {
                "name": values["debtor_name"],
                "kind": kind,
                "customer_number": _optional_text(values.get("debtor_number")),
                "email": values.get("debtor_email"),
                "organization_number": _optional_text(organization_number),
                "ssn": _optional_text(values.get("ssn")),
                "address": {
                    "line1": values["address_line1"],
                    "line2": values.get("address_line2"),
                    "postal_code": _as_text(values["postal_code"]),
                    "city": values["city"],
                    "country": values.get("country"),
                },
            },
        }
        try:
            return cls.model_validate(payload)
        except ValidationError as exc:
            raise _first_error(exc) from None

    def fingerprint(self) -> str:
        """A hash of everything that would be sent to Kravia, and whether a copy is attached."""
        payload = self.model_dump(mode="json")
        payload["has_document"] = self.document is not None
        canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:32]

    def days_overdue(self, today: date) -> int:
        return (today - self.due_date).days


_FIELD_NAMES = {
    ("debtor", "name"): "debtor_name",
    ("debtor", "kind"): "debtor_type",
    ("debtor", "customer_number"): "debtor_number",
    ("debtor", "email"): "debtor_email",
    ("debtor", "organization_number"): "organization_number",
    ("debtor", "ssn"): "ssn",
    ("debtor", "address", "line1"): "address_line1",
    ("debtor", "address", "line2"): "address_line2",
    ("debtor", "address", "postal_code"): "postal_code",
    ("debtor", "address", "city"): "city",
    ("debtor", "address", "country"): "country",
}
_MODEL_ERRORS = {
    # model-level validators: which record field their message is about
    "organization_number is required": "organization_number",
    "postal_code": "postal_code",
    "due_date": "due_date",
}


def _first_error(exc: ValidationError) -> InvalidRecordError:
    error = exc.errors(include_url=False)[0]
    location = tuple(str(part) for part in error["loc"])
    message = str(error["msg"]).removeprefix("Value error, ")
    field = _FIELD_NAMES.get(location) or (location[-1] if location else "record")
    if location in {(), ("debtor",), ("debtor", "address")}:
        field = next((name for key, name in _MODEL_ERRORS.items() if key in message), "record")
    if error["type"] == "missing":
        message = "required field is missing or empty"
    return InvalidRecordError(field, message)


def record_accounting_id(
    record: Mapping[str, object], id_prefix: str = "", *, exclude_number: bool = False
) -> str | None:
    """The accountingInvoiceId a flat record carries: its own id, else (unless
    `exclude_number`) its invoice number, with the source's prefix; None when it has neither
    (blank counts as missing)."""
    names = (
        ("accounting_invoice_id",)
        if exclude_number
        else ("accounting_invoice_id", "invoice_number")
    )
    for name in names:
        value = record.get(name)
        text = value.strip() if isinstance(value, str) else None if value is None else str(value)
        if text:
            return f"{id_prefix}{text}"
    return None


def _as_text(value: object) -> str:
    return value if isinstance(value, str) else str(value)


def _optional_text(value: object) -> str | None:
    return None if value is None else _as_text(value)
