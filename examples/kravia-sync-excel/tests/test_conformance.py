"""ExcelConnector passes kravia-sync's conformance kit."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from kravia_sync import Connector
from kravia_sync.testing import ConnectorConformance, minimal_pdf, sample_invoices

from kravia_sync_excel import ExcelConnector
from tests.workbooks import write_workbook


class TestExcelConformance(ConnectorConformance):
    connector: ClassVar[type[Connector]] = ExcelConnector

    def sample(self, directory: Path, count: int) -> Mapping[str, Any]:
        """`count` invoices in a workbook, as Excel users type them, and every other PDF."""
        invoices = sample_invoices(count)
        write_workbook(directory / "overdue.xlsx", invoices)
        for invoice in invoices[::2]:
            number = invoice["invoice_number"]
            (directory / f"{number}.pdf").write_bytes(minimal_pdf(f"Invoice {number}"))
        return {"path": "overdue.xlsx"}

    def failing_source(self, directory: Path) -> Mapping[str, Any]:
        """A workbook that is not an .xlsx file inside (a renamed CSV)."""
        (directory / "broken.xlsx").write_text("invoice_number;amount\n1;100\n", encoding="utf-8")
        return {"path": "broken.xlsx"}
