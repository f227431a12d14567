"""The built-in connectors pass the conformance kit that third-party connectors run.

Each class below is what a connector author writes: a sample source of `count` invoices and a
source that fails. `folder` reads JSON files, `sql` an SQLite and a PostgreSQL database, `fiken` and `rest` the
Fiken simulator over real HTTP.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import tomllib
from collections.abc import Iterator, Mapping
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any, ClassVar

import pytest
import sqlalchemy as sa
from sql_fixture import open_backend

from connectors.fiken import FikenConnector
from connectors.folder import FolderConnector
from connectors.rest import EXAMPLE_SETTINGS as REST_EXAMPLE
from connectors.rest import RestConnector
from connectors.sql import SqlConnector
from kravia_sync import RECORD_FIELDS, Connector
from kravia_sync.testing import ConnectorConformance, minimal_pdf, sample_invoices
from kravia_sync.testing.fiken import FikenSimulator, RunningFiken, demo_company

FIKEN_TOKEN = "fiken-pat-Conformance-7Hq2"
CLOSED_PORT_URL = "http://127.0.0.1:9/api/v2/"  # the discard port: nothing listens


class TestFolderConformance(ConnectorConformance):
    connector: ClassVar[type[Connector]] = FolderConnector

    def sample(self, directory: Path, count: int) -> Mapping[str, Any]:
        folder = directory / "invoices"
        folder.mkdir()
        for index, record in enumerate(sample_invoices(count)):
            number = record["invoice_number"]
            (folder / f"{number}.json").write_text(json.dumps(record), encoding="utf-8")
            if index % 2 == 0:
                (folder / f"{number}.pdf").write_bytes(minimal_pdf(f"Invoice {number}"))
        return {"path": "invoices"}

    def failing_source(self, directory: Path) -> Mapping[str, Any]:
        return {"path": "no-such-folder"}


class TestSqlConformance(ConnectorConformance):
    connector: ClassVar[type[Connector]] = SqlConnector

    def sample(self, directory: Path, count: int) -> Mapping[str, Any]:
        columns = [name for name in RECORD_FIELDS if name != "accounting_invoice_id"]
        with sqlite3.connect(directory / "erp.sqlite") as db:
            # the column names are the canonical field names, not input
            db.execute(f"CREATE TABLE invoices (id INTEGER PRIMARY KEY, {', '.join(columns)})")
            db.execute("CREATE TABLE pdfs (invoice_number TEXT PRIMARY KEY, pdf BLOB)")
            for record in sample_invoices(count):
                values = [record.get(name) for name in columns]
                db.execute(
                    f"INSERT INTO invoices ({', '.join(columns)}) "  # noqa: S608 - field names
                    f"VALUES ({', '.join('?' for _ in columns)})",
                    values,
                )
                if int(record["invoice_number"]) % 2:
                    number = record["invoice_number"]
                    db.execute("INSERT INTO pdfs VALUES (?, ?)", (number, minimal_pdf(number)))
        return {
            "url": f"sqlite:///{directory / 'erp.sqlite'}",
            "query": (
                f"SELECT {', '.join(columns)}, EXISTS (SELECT 1 FROM pdfs p "  # noqa: S608
                "WHERE p.invoice_number = i.invoice_number) AS has_document "
                "FROM invoices i ORDER BY id"
            ),
            "document_query": "SELECT pdf FROM pdfs WHERE invoice_number = :invoice_number",
            "fetch_size": 100,
        }

    def failing_source(self, directory: Path) -> Mapping[str, Any]:
        (directory / "erp.sqlite").touch()  # an empty database: the table is not there
        return {"url": "sqlite:///erp.sqlite", "query": "SELECT * FROM invoices"}


class TestPostgresSqlConformance(ConnectorConformance):
    """The sql connector on PostgreSQL, where it also offers a two-phase read."""

    connector: ClassVar[type[Connector]] = SqlConnector
    tables: list[str]

    @pytest.fixture(autouse=True)
    def _postgres(self, tmp_path: Path) -> Iterator[None]:
        with open_backend("postgresql", tmp_path) as backend:
            self.engine = backend.engine
            self.url = backend.url
            self.tables = []
            yield
            with self.engine.begin() as connection:
                for table in self.tables:
                    connection.execute(sa.text(f"DROP TABLE IF EXISTS {table}"))

    def sample(self, directory: Path, count: int) -> Mapping[str, Any]:
        table = f"ks_conformance_{secrets.token_hex(4)}"
        self.tables.append(table)
        columns = [name for name in RECORD_FIELDS if name != "accounting_invoice_id"]
        kinds = {"amount": "NUMERIC(12, 2)", "invoice_date": "DATE", "due_date": "DATE"}
        declared = ", ".join(f"{name} {kinds.get(name, 'TEXT')}" for name in columns)
        with self.engine.begin() as connection:
            # the column names are the canonical field names, not input
            connection.execute(
                sa.text(f"CREATE TABLE {table} (id SERIAL PRIMARY KEY, {declared}, pdf BYTEA)")
            )
            for record in sample_invoices(count):
                values = {name: record.get(name) for name in columns}
                values["amount"] = Decimal(str(values["amount"]))
                for name in ("invoice_date", "due_date"):
                    values[name] = date.fromisoformat(str(values[name]))
                number = str(record["invoice_number"])
                values["pdf"] = minimal_pdf(number) if int(number) % 2 else None
                connection.execute(
                    sa.text(
                        f"INSERT INTO {table} ({', '.join(values)}) "  # noqa: S608 - field names
                        f"VALUES ({', '.join(':' + name for name in values)})"
                    ),
                    values,
                )
        return {
            "url": self.url,
            "query": (
                f"SELECT {', '.join(columns)}, pdf IS NOT NULL AS has_document "  # noqa: S608
                f"FROM {table} ORDER BY id"
            ),
            "document_query": f"SELECT pdf FROM {table} WHERE invoice_number = :invoice_number",  # noqa: S608
            "fetch_size": 100,
        }

    def failing_source(self, directory: Path) -> Mapping[str, Any]:
        return {"url": self.url, "query": "SELECT * FROM ks_no_such_table"}

    def test_the_stamped_read_is_offered(self, tmp_path: Path) -> None:
        """On PostgreSQL the kit's stamped-read check really runs (it is not skipped)."""
        assert self.conformance_kit(tmp_path).check_stamped_read() is True


class _FikenSample:
    """Serves a Fiken company of `count` unsettled invoices per sample."""

    servers: list[RunningFiken]

    @pytest.fixture(autouse=True)
    def _fiken(self, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
        monkeypatch.setenv("FIKEN_TOKEN", FIKEN_TOKEN)
        self.servers = []
        yield
        for server in self.servers:
            server.stop()

    def serve(self, count: int) -> str:
        company = demo_company(invoices=count, customers=20, with_settled=False, slug="acme")
        simulator = FikenSimulator(company, token=FIKEN_TOKEN, requests_per_second=500.0, burst=50)
        server = RunningFiken(simulator)
        server.start()
        self.servers.append(server)
        return simulator.base_url


class TestFikenConformance(_FikenSample, ConnectorConformance):
    connector: ClassVar[type[Connector]] = FikenConnector

    def sample(self, directory: Path, count: int) -> Mapping[str, Any]:
        return {
            "company_slug": "acme",
            "credit_notes_since": "2000-01-01",
            "token_env": "FIKEN_TOKEN",
            "base_url": self.serve(count),
            "requests_per_second": 500,
        }

    def failing_source(self, directory: Path) -> Mapping[str, Any]:
        return {
            "company_slug": "acme",
            "credit_notes_since": "2000-01-01",
            "token_env": "FIKEN_TOKEN",
            "base_url": CLOSED_PORT_URL,
            "retry": {"attempts": 1},
        }


class TestRestConformance(_FikenSample, ConnectorConformance):
    """The hand-written `rest` example of docs/sources/rest.md, asking for every unsettled invoice."""

    connector: ClassVar[type[Connector]] = RestConnector

    def settings(self, base_url: str) -> dict[str, Any]:
        text = REST_EXAMPLE.replace("companies/fiken-demo-as/", "companies/acme/")
        settings: dict[str, Any] = tomllib.loads(text)["sources"][0]["settings"]
        settings["base_url"] = base_url
        settings["rate_limit"]["requests_per_second"] = 500
        settings["invoices"]["params"] = {"settled": False}
        return settings

    def sample(self, directory: Path, count: int) -> Mapping[str, Any]:
        return self.settings(self.serve(count))

    def failing_source(self, directory: Path) -> Mapping[str, Any]:
        settings = self.settings(CLOSED_PORT_URL)
        settings["retry"] = {"attempts": 1}
        return settings
