"""Reads overdue invoices from an Excel workbook (.xlsx), one invoice per row.

The first row of the sheet (or `header_row`) names the columns: the canonical field names
(`kravia_sync.RECORD_FIELDS`, in any case), or any headers mapped to fields with `columns`.
Other columns are ignored. Rows are read one at a time (openpyxl's read-only mode), so a big
workbook is never held as records in memory. `<invoice_number>.pdf` in `pdf_folder` (by default
the workbook's folder) is the invoice's copy, read only when kravia-sync sends it.

Excel keeps every number as a binary float: an amount typed as 1234.50 is read back as the
shortest decimal that float stands for (`Decimal("1234.5")`), and a postal code or
organisation number typed as a number is turned back into text (Norwegian postal codes get
their leading zero back).
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterator, Mapping
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, ClassVar, Literal

from kravia_sync import (
    RECORD_FIELDS,
    REQUIRED_FIELDS,
    Connector,
    ConnectorError,
    ConnectorSettings,
    FileDocument,
    PaymentRecord,
    RecordError,
    SourceRecord,
)
from openpyxl import load_workbook
from openpyxl.utils.exceptions import InvalidFileException
from pydantic import Field, field_validator

__all__ = ["ExcelConnector", "ExcelSettings"]

_TEXT_FIELDS = frozenset({"invoice_number", "accounting_invoice_id", "debtor_number", "ssn"})
_NUMBER_AS_TEXT = frozenset({"organization_number", *_TEXT_FIELDS})


class ExcelSettings(ConnectorSettings):
    """The `[sources.settings]` table of an `excel` source. Unknown keys are errors."""

    path: Path
    """The workbook (.xlsx); a relative path is taken from the configuration file's folder."""
    sheet: str | None = None
    """The sheet to read; the first one when not given."""
    header_row: int = Field(default=1, ge=1)
    """The row holding the column headers; invoices are the rows below it."""
    columns: dict[str, str] = Field(default_factory=dict)
    """Record field → the header of its column, for headers that are not field names."""
    pdf_folder: Path | None = None
    """Where `<invoice_number>.pdf` copies are; the workbook's folder when not given."""

    @field_validator("path")
    @classmethod
    def _xlsx(cls, value: Path) -> Path:
        if value.suffix.lower() not in {".xlsx", ".xlsm"}:
            raise ValueError(f"{value.name} is not an .xlsx workbook (save it as .xlsx)")
        return value

    @field_validator("columns")
    @classmethod
    def _fields(cls, value: dict[str, str]) -> dict[str, str]:
        for field in value:
            if field not in RECORD_FIELDS:
                raise ValueError(f"{field!r} is not a record field: {', '.join(RECORD_FIELDS)}")
        return value


class ExcelConnector(Connector):
    """Yields one record per row of the sheet, read as the rows stream in."""

    settings_model: ClassVar[type[ConnectorSettings]] = ExcelSettings
    payments_default: ClassVar[Literal["amount_drops", "records"]] = "amount_drops"
    example_config: ClassVar[str] = """\
[[sources]]
name = "excel"                   # a short, stable name; it keys the state of this source
connector = "excel"
[sources.settings]
path = "overdue.xlsx"            # one invoice per row, headers in the first row
# sheet = "Invoices"             # default: the first sheet
# header_row = 1
# pdf_folder = "pdf"             # <invoice_number>.pdf; default: the workbook's folder
# [sources.settings.columns]     # record field = "the column's header"
# invoice_number = "Fakturanr"
# amount = "Utestående"
"""
    settings: ExcelSettings

    def __init__(self, settings: ConnectorSettings, *, base_dir: Path) -> None:
        if not isinstance(settings, ExcelSettings):
            raise TypeError(f"ExcelConnector needs ExcelSettings, not {settings!r}")
        super().__init__(settings, base_dir=base_dir)
        self.settings = settings

    @property
    def workbook_path(self) -> Path:
        return self.base_dir / self.settings.path

    @property
    def pdf_folder(self) -> Path:
        folder = self.settings.pdf_folder
        return self.workbook_path.parent if folder is None else self.base_dir / folder

    def read(self) -> Iterator[SourceRecord | PaymentRecord | RecordError]:
        """One item per non-blank row below the header, in sheet order."""
        path = self.workbook_path
        try:
            workbook = load_workbook(path, read_only=True, data_only=True)
        except (OSError, zipfile.BadZipFile, InvalidFileException, KeyError) as exc:
            raise ConnectorError(f"cannot open the workbook {path}: {_reason(exc)}") from None
        try:
            yield from self._rows(workbook)
        except (OSError, zipfile.BadZipFile, KeyError, ValueError) as exc:
            raise ConnectorError(f"cannot read the workbook {path}: {_reason(exc)}") from None
        finally:
            workbook.close()

    def _rows(self, workbook: Any) -> Iterator[SourceRecord | RecordError]:  # noqa: ANN401 - openpyxl's Workbook
        name = self.settings.sheet
        if name is not None and name not in workbook.sheetnames:
            sheets = ", ".join(workbook.sheetnames)
            raise ConnectorError(f"{self.workbook_path.name} has no sheet {name!r} ({sheets})")
        sheet = workbook[name] if name is not None else workbook.worksheets[0]
        rows = sheet.iter_rows(min_row=self.settings.header_row, values_only=True)
        header = next(rows, None)
        if header is None:
            raise ConnectorError(f"{self.workbook_path.name}: sheet {sheet.title!r} is empty")
        layout = self._layout(header, sheet.title)
        for number, row in enumerate(rows, start=self.settings.header_row + 1):
            if all(
                value is None or (isinstance(value, str) and not value.strip()) for value in row
            ):
                continue
            yield self._record(f"{sheet.title}!{number}", row, layout)

    def _layout(self, header: tuple[object, ...], sheet: str) -> dict[str, int]:
        """Record field → column position; `ConnectorError` when a required one is missing."""
        positions = {
            str(title).strip().casefold(): index
            for index, title in enumerate(header)
            if title is not None and str(title).strip()
        }
        layout = {}
        for field in RECORD_FIELDS:
            title = self.settings.columns.get(field, field).strip().casefold()
            if title in positions:
                layout[field] = positions[title]
        missing = [field for field in REQUIRED_FIELDS if field not in layout]
        if missing:
            wanted = ", ".join(self.settings.columns.get(field, field) for field in missing)
            raise ConnectorError(
                f"{self.workbook_path.name}, sheet {sheet!r}, row {self.settings.header_row}: "
                f"no column for {wanted} (name the headers so, or map them with `columns`)"
            )
        return layout

    def _record(self, ref: str, row: tuple[object, ...], layout: Mapping[str, int]) -> SourceRecord:
        fields = {
            field: _cell(field, row[position] if position < len(row) else None)
            for field, position in layout.items()
        }
        if isinstance(fields.get("postal_code"), int):
            country = fields.get("country")
            code = fields["postal_code"]
            no = country is None or str(country).strip().upper() in {"", "NO"}
            fields["postal_code"] = f"{code:04d}" if no else str(code)
        number = fields.get("invoice_number")
        text = "" if number is None else str(number).strip()
        pdf = self.pdf_folder / f"{text}.pdf"
        document = FileDocument(pdf) if text and pdf.is_file() else None
        # The invoice number is the record's identity; the cell reference only when it is blank.
        return SourceRecord(key=text or ref, fields=fields, document=document)


def _cell(field: str, value: object) -> object:
    """A cell's value as the canonical model takes it."""
    if isinstance(value, float) and not (field in _NUMBER_AS_TEXT and value.is_integer()):
        return Decimal(repr(value))  # the decimal the float was typed as
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(int(value)) if field in _NUMBER_AS_TEXT else value
    if isinstance(value, datetime):
        return value.date()
    if value is None or isinstance(value, bool | date | str):
        return value
    return str(value)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__
