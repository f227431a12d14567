"""ExcelConnector passes kravia-sync's conformance kit."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from kravia_sync import Connector
from kravia_sync.testing import ConnectorConformance, minimal_pdf, sample_invoices

from kravia_sync_excel import ExcelConnector


class TestExcelConformance(ConnectorConformance):
    connector: ClassVar[type[Connector]] = ExcelConnector

    def sample(self, directory: Path, count: int) -> Mapping[str, Any]:
        """`count` invoices, one per line, with a PDF for every other one."""
        with (directory / "invoices.jsonl").open("w", encoding="utf-8") as out:
            for index, invoice in enumerate(sample_invoices(count)):
                out.write(json.dumps(invoice) + "\n")
                if index % 2 == 0:
                    number = invoice["invoice_number"]
                    (directory / f"{number}.pdf").write_bytes(minimal_pdf(f"Invoice {number}"))
        return {"path": "invoices.jsonl"}

    def failing_source(self, directory: Path) -> Mapping[str, Any]:
        """A file that is not there."""
        return {"path": "missing.jsonl"}
