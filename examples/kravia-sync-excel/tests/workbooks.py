"""Workbooks written the way people fill them in: dates as dates, amounts as numbers."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from decimal import Decimal
from pathlib import Path

from openpyxl import Workbook

NUMERIC = frozenset({"amount"})
DATES = frozenset({"invoice_date", "due_date"})


def write_workbook(
    path: Path,
    invoices: Sequence[dict[str, str]],
    *,
    headers: dict[str, str] | None = None,
    sheet: str = "Invoices",
) -> None:
    """Invoices one per row under a header row; `headers` renames columns (field → header)."""
    fields = list(invoices[0]) if invoices else ["invoice_number"]
    workbook = Workbook(write_only=True)
    worksheet = workbook.create_sheet(sheet)
    worksheet.append([(headers or {}).get(field, field) for field in fields])
    for invoice in invoices:
        worksheet.append([_typed(field, invoice.get(field, "")) for field in fields])
    workbook.save(path)


def _typed(field: str, text: str) -> object:
    if not text:
        return None
    if field in NUMERIC:
        return float(Decimal(text))  # Excel holds numbers as binary floats
    if field in DATES:
        return date.fromisoformat(text)
    return text
