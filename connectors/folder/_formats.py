"""The folder source's JSON and CSV files, parsed: a JSON invoice object (numbers as `Decimal`,
a duplicated key refused), a CSV header mapped to the canonical fields, and a CSV row made a
record with its digest."""

from __future__ import annotations

import codecs
import difflib
import hashlib
import json
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Literal, cast

from kravia_sync import (
    PAYMENT_FIELDS,
    RECORD_FIELDS,
    REQUIRED_FIELDS,
    REQUIRED_PAYMENT_FIELDS,
    PaymentRecord,
    RecordError,
    SourceRecord,
    is_payment_record,
)

if TYPE_CHECKING:
    from typing import TypeAlias

    Item: TypeAlias = SourceRecord | PaymentRecord | RecordError
from connectors.folder._documents import InvoiceFile
from connectors.folder._files import FILE

__all__ = []


_KNOWN_COLUMNS = {name.casefold(): name for name in RECORD_FIELDS}


_PAYMENT_COLUMNS = {name.casefold(): name for name in PAYMENT_FIELDS}


class _DuplicateKeyError(ValueError):
    pass


def _invoice_number(value: object) -> str | None:
    """The invoice number as text for keys and PDF names, or None if there is none."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str) and value.strip():
        return value.strip()
    return None


def json_record(item: object, index: int | None, invoice_file: InvoiceFile) -> Item:
    """The record of one JSON object: `index` is its position in a list, None if it is alone."""
    fallback = invoice_file.name if index is None else f"{invoice_file.name}#{index}"
    if not isinstance(item, dict):
        where = "the file" if index is None else f"item {index}"
        reason = f"{where} is {json_type(item)}, not an invoice object"
        return RecordError(fallback, "record", reason)
    if is_payment_record(item):
        key = f"{fallback} (payment {item.get('payment_id')})"
        unknown = [field for field in item if field not in PAYMENT_FIELDS]
        if unknown:
            return RecordError(key, unknown[0], _unknown_reason("field", unknown, PAYMENT_FIELDS))
        return PaymentRecord(key=key, fields=dict(item))
    number = _invoice_number(item.get("invoice_number"))
    key = invoice_file.key(number, fallback, f"#{index}")
    unknown = [field for field in item if field not in RECORD_FIELDS]
    if unknown:
        return RecordError(key, unknown[0], _unknown_reason("field", unknown))
    return SourceRecord(key=key, fields=dict(item), document=invoice_file.document(number))


def parse_json(text: str, name: str) -> object:
    """The parsed document (numbers as `Decimal` or `int`, never float), or a `RecordError`."""
    try:
        return json.loads(
            text,
            parse_float=Decimal,
            parse_constant=Decimal,  # NaN and Infinity: the model refuses them as amounts
            object_pairs_hook=_object_without_duplicate_keys,
        )
    except json.JSONDecodeError as exc:
        reason = f"invalid JSON: {exc.msg} (line {exc.lineno} column {exc.colno})"
        return RecordError(name, FILE, reason)
    except _DuplicateKeyError as exc:
        return RecordError(name, FILE, f"invalid JSON: {exc}")
    except RecursionError:
        return RecordError(name, FILE, "invalid JSON: nested too deeply")


def _object_without_duplicate_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    result: dict[str, object] = {}
    for key, value in pairs:
        if key in result:
            raise _DuplicateKeyError(f"duplicate key {key!r} in an object")
        result[key] = value
    return result


def json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | Decimal):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    return "an object"


def detect_delimiter(header_line: str) -> Literal[",", ";"]:
    """`;` if the header line has more semicolons than commas outside quotes, else `,`."""
    counts = {",": 0, ";": 0}
    quoted = False
    for char in header_line:
        if char == '"':
            quoted = not quoted
        elif not quoted and char in counts:
            counts[char] += 1
    return ";" if counts[";"] > counts[","] else ","


def map_header(header: list[str], name: str) -> tuple[list[str | None], RecordError | None]:
    """The canonical field of each column (None: a column without a name), or the header error.

    Everything wrong with the header is one error: the engine keeps one entry per record key.
    """
    columns: list[str | None] = []
    unknown: list[str] = []
    duplicates: list[str] = []
    labels = [cell.replace("\ufeff", "").strip() for cell in header]
    payments = any(label.casefold() == "payment_id" for label in labels)
    known, required, names = (
        (_PAYMENT_COLUMNS, REQUIRED_PAYMENT_FIELDS, PAYMENT_FIELDS)
        if payments
        else (_KNOWN_COLUMNS, REQUIRED_FIELDS, RECORD_FIELDS)
    )
    for label in labels:
        field = known.get(label.casefold())
        if not label:
            columns.append(None)
        elif field is None:
            unknown.append(label)
            columns.append(None)
        elif field in columns:
            duplicates.append(field)
            columns.append(None)
        else:
            columns.append(field)
    problems: list[tuple[str, str]] = []  # (field, reason)
    missing = [field for field in required if field not in columns]
    if missing:
        listed = ", ".join(repr(field) for field in missing)
        plural = "s" if len(missing) > 1 else ""
        problems.append((missing[0], f"missing required column{plural} {listed}"))
    if duplicates:
        problems.append((duplicates[0], f"duplicate column {duplicates[0]!r}"))
    if unknown:  # last: its reason ends with the long list of known columns
        problems.append((unknown[0], _unknown_reason("column", unknown, names)))
    if not problems:
        return columns, None
    return columns, RecordError(name, problems[0][0], "; ".join(reason for _, reason in problems))


def _unknown_reason(kind: str, unknown: list[str], names: tuple[str, ...] = RECORD_FIELDS) -> str:
    listed = ", ".join(repr(label) for label in unknown)
    plural = "s" if len(unknown) > 1 else ""
    hints = [
        f"{label!r} → {match[0]!r}"
        for label in unknown
        if (match := difflib.get_close_matches(label.casefold(), names, n=1))
    ]
    hint = f" (did you mean {', '.join(hints)}?)" if hints else ""
    return f"unknown {kind}{plural} {listed}{hint}; known {kind}s: {', '.join(names)}"


@dataclass(frozen=True, slots=True)
class CsvLayout:
    """One CSV file's columns, worked out once from its header for every row."""

    columns: list[str | None]  # the canonical field of each column (None: no header)
    unnamed: tuple[int, ...]  # the positions of the columns without a header
    payments: bool  # a file of payments (it has a payment_id column)
    stamp: bytes  # the columns as the digest of each row includes them

    @classmethod
    def of(cls, columns: list[str | None]) -> CsvLayout:
        return cls(
            columns,
            tuple(index for index, field in enumerate(columns) if field is None),
            "payment_id" in columns,
            "\x1f".join(field or "" for field in columns).encode() + b"\x1e",
        )


def csv_record(
    row: list[str], layout: CsvLayout, line: int, invoice_file: InvoiceFile
) -> Item | None:
    """The record of the CSV row starting at `line`, or None for a row with nothing in it (a
    blank line, a `;;;;` row of a spreadsheet export). Runs for every row of every pass, so
    it is kept lean: an invoice's fields are its non-empty cells by column (kept as text,
    exactly as in the file), and its digest is a hash of the row with the file's columns, so
    the engine recognises an unchanged row without hashing its fields."""
    blanks = not row or "" in row or any(map(str.isspace, row))
    if blanks and not "".join(row).strip():
        return None
    columns = layout.columns
    if len(row) != len(columns):
        reason = f"line {line} has {len(row)} cells, the header has {len(columns)}"
        return RecordError(f"{invoice_file.name}:line {line}", "row", reason)
    for position in layout.unnamed:
        if row[position].strip():
            reason = f"line {line} has a value in column {position + 1}, which has no known header"
            return RecordError(f"{invoice_file.name}:line {line}", "row", reason)
    line_key = f"{invoice_file.name}:line {line}"
    if layout.payments:
        paid = {
            field: cell
            for field, cell in zip(columns, row, strict=True)
            if field is not None and cell and not cell.isspace()
        }
        return PaymentRecord(key=f"{line_key} (payment {paid.get('payment_id')})", fields=paid)
    fields: dict[str | None, object]
    if blanks:  # empty cells leave their field out
        fields = {
            field: cell
            for field, cell in zip(columns, row, strict=True)
            if field is not None and cell and not cell.isspace()
        }
    else:
        fields = dict(zip(columns, row, strict=True))
        fields.pop(None, None)  # (a column without a header holds nothing here: checked above)
    given = fields.get("invoice_number")
    number = given.strip() or None if isinstance(given, str) else None
    key = invoice_file.key(number, line_key, f"line {line}")
    text = "\x1f".join(row)
    if text.count("\x1f") != len(row) - 1:  # a cell holds the separator: spelled out instead
        text = json.dumps(row)
    digest = hashlib.blake2b(layout.stamp, digest_size=16)
    digest.update(text.encode())
    return SourceRecord(
        key=key,
        fields=cast("dict[str, object]", fields),  # no None key: removed just above
        document=invoice_file.document(number),
        digest=digest.hexdigest(),
    )


def decode_reason(exc: UnicodeDecodeError, line: int, encoding: str) -> str:
    byte = exc.object[exc.start : exc.start + 1].hex()
    reason = f"not {encoding} text: byte 0x{byte} on line {line} cannot be decoded"
    if codecs.lookup(encoding).name.startswith("utf-8"):
        reason += "; if a Windows program such as Excel saved it, set encoding = 'cp1252'"
    return reason
