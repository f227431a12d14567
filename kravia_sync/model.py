"""The canonical invoice: what every connector's records are normalised and validated into.

Connectors yield flat records (a mapping of the canonical field names below to values, strings
or typed); `Invoice.from_record` turns one into a validated `Invoice` or raises
`InvalidRecordError` naming the field and the reason.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
from collections.abc import Callable, Mapping
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from typing import Annotated, Any, BinaryIO, Final, Protocol, runtime_checkable

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from kravia_sync.errors import KraviaSyncError

__all__ = [
    "RECORD_FIELDS",
    "REQUIRED_FIELDS",
    "Debtor",
    "DebtorKind",
    "Document",
    "FileDocument",
    "InvalidRecordError",
    "Invoice",
    "PostalAddress",
    "parse_amount",
    "parse_date",
]

PDF_MAGIC = b"%PDF-"
MAX_DOCUMENT_BYTES: Final = 20 * 1024 * 1024
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


class InvalidRecordError(KraviaSyncError, ValueError):
    """A source record that cannot become a canonical invoice: names the field and the reason."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


@runtime_checkable
class Document(Protocol):
    """A lazily loaded copy of the invoice (a PDF). Nothing is read until `load()`."""

    @property
    def name(self) -> str: ...

    def load(self) -> bytes: ...


class FileDocument:
    """A document stored as a file; read only when needed.

    `load()` reads only a regular file (a link to one is followed) of at most `max_bytes`
    bytes, streamed, so a named pipe, a device or a huge file named like a PDF cannot hang or
    exhaust the process. What cannot be used raises `InvalidRecordError` (field `document`).
    """

    def __init__(self, path: Any, *, max_bytes: int = MAX_DOCUMENT_BYTES) -> None:  # noqa: ANN401 - any os.PathLike
        from pathlib import Path  # noqa: PLC0415 - keep the module import light

        if max_bytes <= 0:
            raise ValueError(f"max_bytes must be positive, not {max_bytes}")
        self._path = Path(path)
        self._max_bytes = max_bytes

    @property
    def name(self) -> str:
        return self._path.name

    @property
    def max_bytes(self) -> int:
        """The largest file `load()` reads."""
        return self._max_bytes

    def load(self) -> bytes:
        """The file's bytes; `InvalidRecordError` when it is not a regular file, is bigger than
        `max_bytes` (also if it grows while it is read) or cannot be read."""
        descriptor = self._open()
        try:
            size = self._measure(descriptor)
        except BaseException:
            os.close(descriptor)
            raise
        with open(descriptor, "rb", buffering=0) as handle:  # noqa: PTH123 - a descriptor
            try:
                data = _read_at_most(handle, self._max_bytes, size)
            except OSError as exc:
                reason = f"{self.name} cannot be read: {exc.strerror or exc}"
                raise InvalidRecordError("document", reason) from None
        if len(data) > self._max_bytes:  # it grew after it was measured
            raise InvalidRecordError("document", self._too_big_reason(len(data), grew=True))
        return data

    def _open(self) -> int:
        try:
            # Non-blocking: opening a named pipe for reading would wait for a writer forever.
            return os.open(self._path, _READ_FLAGS)
        except OSError as exc:
            raise InvalidRecordError("document", self._unopened_reason(exc)) from None

    def _measure(self, descriptor: int) -> int:
        """The opened file's size, if it is a regular file within the limit."""
        info = os.fstat(descriptor)  # of what was opened: the path may have changed since
        if not stat.S_ISREG(info.st_mode):
            reason = f"{self.name} is not a regular file ({_file_kind(info.st_mode)})"
            raise InvalidRecordError("document", reason)
        if info.st_size > self._max_bytes:
            raise InvalidRecordError("document", self._too_big_reason(info.st_size))
        if _NONBLOCK:  # no effect on a regular file on most systems; cleared all the same
            os.set_blocking(descriptor, True)
        return info.st_size

    def _unopened_reason(self, exc: OSError) -> str:
        try:
            mode = self._path.stat().st_mode
        except OSError:
            mode = stat.S_IFREG
        if not stat.S_ISREG(mode):  # a socket cannot be opened at all: say what it is
            return f"{self.name} is not a regular file ({_file_kind(mode)})"
        return f"{self.name} cannot be read: {exc.strerror or exc}"

    def _too_big_reason(self, size: int, *, grew: bool = False) -> str:
        limit = self._max_bytes
        if grew:
            return f"{self.name} grew beyond the limit of {limit} bytes while it was read"
        return f"{self.name} has {size} bytes, more than the limit of {limit}; it was not read"

    def __repr__(self) -> str:
        return f"FileDocument({str(self._path)!r})"


# Read-only, never blocking on a named pipe; binary on Windows (no newline translation).
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
_READ_FLAGS = os.O_RDONLY | _NONBLOCK | getattr(os, "O_BINARY", 0)
_READ_CHUNK_BYTES = 1024 * 1024
_FILE_KINDS: Final = {
    stat.S_IFDIR: "a directory",
    stat.S_IFIFO: "a named pipe",
    stat.S_IFCHR: "a device",
    stat.S_IFBLK: "a device",
    stat.S_IFSOCK: "a socket",
}


def _file_kind(mode: int) -> str:
    """What a file that is not a regular file is, for messages."""
    return _FILE_KINDS.get(stat.S_IFMT(mode), "a special file")


def _read_at_most(handle: BinaryIO, limit: int, expected: int) -> bytes:
    """At most `limit + 1` bytes of `handle`: more than `limit` means the file is too big.

    The first read is sized from the file's measured size (`expected`), so a small file does
    not allocate `limit` bytes; a file that grew since is read on in chunks up to the cap.
    """
    chunks: list[bytes] = []
    left = limit + 1
    want = min(expected, limit) + 1
    while left > 0 and (chunk := handle.read(min(want, left))):
        chunks.append(chunk)
        left -= len(chunk)
        want = _READ_CHUNK_BYTES
    return b"".join(chunks)


class CallableDocument:
    """A document produced by a callable (a database query, an HTTP download)."""

    def __init__(self, name: str, loader: Callable[[], bytes]) -> None:
        self._name = name
        self._loader = loader

    @property
    def name(self) -> str:
        return self._name

    def load(self) -> bytes:
        return self._loader()

    def __repr__(self) -> str:
        return f"CallableDocument({self._name!r})"


def check_pdf(content: bytes, name: str) -> None:
    """Raise `InvalidRecordError` unless `content` is a PDF file."""
    if not content.startswith(PDF_MAGIC):
        head = content[:8]
        raise InvalidRecordError("document", f"{name} is not a PDF (it starts with {head!r})")


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
        """Validate one flat record; raise `InvalidRecordError` naming the first bad field."""
        unknown = sorted(set(record) - set(RECORD_FIELDS))
        if unknown:
            raise InvalidRecordError(unknown[0], "unknown field (see the record format)")
        values = {key: _blank_to_none(value) for key, value in record.items()}
        for name in REQUIRED_FIELDS:
            if values.get(name) is None:
                raise InvalidRecordError(name, "required field is missing or empty")
        accounting_invoice_id = record_accounting_id(values, id_prefix)
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


def record_accounting_id(record: Mapping[str, object], id_prefix: str = "") -> str | None:
    """The accountingInvoiceId a flat record carries: its own id, else its invoice number,
    with the source's prefix; None when it has neither (blank counts as missing)."""
    for name in ("accounting_invoice_id", "invoice_number"):
        value = record.get(name)
        text = value.strip() if isinstance(value, str) else None if value is None else str(value)
        if text:
            return f"{id_prefix}{text}"
    return None


def _as_text(value: object) -> str:
    return value if isinstance(value, str) else str(value)


def _optional_text(value: object) -> str | None:
    return None if value is None else _as_text(value)
