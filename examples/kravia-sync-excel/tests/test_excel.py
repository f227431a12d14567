"""What the Excel connector makes of workbooks as people fill them in."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest
from kravia_sync import ConnectorError, Invoice, SourceRecord
from kravia_sync.testing import sample_invoices
from openpyxl import Workbook

from kravia_sync_excel import ExcelConnector
from tests.workbooks import write_workbook


def read(tmp_path: Path, **settings: object) -> list[SourceRecord]:
    connector = ExcelConnector.from_settings({"path": "book.xlsx", **settings}, base_dir=tmp_path)
    items = list(connector.read())
    assert all(isinstance(item, SourceRecord) for item in items)
    return [item for item in items if isinstance(item, SourceRecord)]


class TestValues:
    def test_float_amounts_become_the_decimal_typed(self, tmp_path: Path) -> None:
        """1234.10 stored as a binary float is read as exactly 1234.10."""
        invoice = {**sample_invoices(1)[0], "amount": "1234.10"}
        write_workbook(tmp_path / "book.xlsx", [invoice])
        (record,) = read(tmp_path)
        assert Invoice.from_record(record.fields).amount == Decimal("1234.10")

    def test_numeric_postal_codes_and_numbers_become_text(self, tmp_path: Path) -> None:
        """A postal code typed as 150 is 0150; an invoice number typed as 7 is "7"."""
        workbook = Workbook()
        sheet = workbook.active
        assert sheet is not None
        fields = sample_invoices(1)[0]
        sheet.append(list(fields))
        sheet.append(
            [
                7 if key == "invoice_number" else 150 if key == "postal_code" else value
                for key, value in fields.items()
            ]
        )
        workbook.save(tmp_path / "book.xlsx")
        (record,) = read(tmp_path)
        invoice = Invoice.from_record(record.fields)
        assert (invoice.invoice_number, invoice.debtor.address.postal_code) == ("7", "0150")
        assert record.key == "7"


class TestLayout:
    def test_headers_map_to_fields_and_blank_rows_are_skipped(self, tmp_path: Path) -> None:
        """`columns` maps a sheet's own headers; empty rows are not invoices."""
        invoices = sample_invoices(2)
        blank = dict.fromkeys(invoices[0], "")
        write_workbook(
            tmp_path / "book.xlsx",
            [invoices[0], blank, invoices[1]],
            headers={"invoice_number": "Fakturanr", "amount": "Utestående"},
        )
        records = read(tmp_path, columns={"invoice_number": "Fakturanr", "amount": "utestående"})
        assert [record.key for record in records] == ["1", "2"]

    def test_a_missing_required_column_fails_the_read_naming_it(self, tmp_path: Path) -> None:
        """No amount column: the read fails (never an empty read), naming the column."""
        invoices = [{k: v for k, v in i.items() if k != "amount"} for i in sample_invoices(2)]
        write_workbook(tmp_path / "book.xlsx", invoices)
        with pytest.raises(ConnectorError, match="no column for amount"):
            read(tmp_path)

    def test_a_missing_sheet_fails_the_read_naming_the_sheets(self, tmp_path: Path) -> None:
        """A sheet name that is not there names the ones that are."""
        write_workbook(tmp_path / "book.xlsx", sample_invoices(1), sheet="Ark1")
        with pytest.raises(ConnectorError, match=r"no sheet 'Invoices' \(Ark1\)"):
            read(tmp_path, sheet="Invoices")

    def test_a_workbook_that_is_not_xlsx_is_a_settings_error(self, tmp_path: Path) -> None:
        """An .xls or .csv path is refused when the settings are read."""
        with pytest.raises(ValueError, match=r"book\.xls is not an \.xlsx workbook"):
            ExcelConnector.from_settings({"path": "book.xls"}, base_dir=tmp_path)
