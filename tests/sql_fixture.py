"""One invoices schema and one set of rows, created alike in PostgreSQL, MariaDB and SQLite.

`open_backend` connects to a database (PostgreSQL and MariaDB on this machine, SQLite in a
temporary file), creates the tables under names unique to the test (servers are shared with
other test runs), fills them with `CUSTOMERS`, `INVOICES` and `PDFS`, and drops them again.
An unreachable server skips the test, except under CI (`CI=true`), where it fails it.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from support import Sim, write_config

from connectors.sql import SqlConnector
from kravia_sync.connector import SourceRecord
from kravia_sync.testing import minimal_pdf

BACKENDS = ("postgresql", "mariadb", "sqlite")
SERVER_BACKENDS = ("postgresql", "mariadb")

# Admin (writable) URLs for the fixture itself; the connector gets `Backend.url`.
POSTGRES_HOST = "127.0.0.1:5432"
MARIADB_HOST = "127.0.0.1:3306"


def today() -> date:
    return datetime.now(ZoneInfo("Europe/Oslo")).date()


# -- the data ------------------------------------------------------------------------------

# id, customer_no, name, email, kind, org_no, street, street2, zip, city, country_code
CUSTOMERS: list[tuple[Any, ...]] = [
    (
        1,
        "K1001",
        "Åse Ødegård",
        "ase@example.no",
        "private",
        None,
        "Storgata 1",
        None,
        "0150",
        "Oslo",
        "NO",
    ),
    (
        2,
        "K1002",
        "Fjordkraft Ærlig AS",
        "post@fjordkraft.example.no",
        "business",
        "923609016",
        "Bryggen 2",
        "Postboks 7",
        "5003",
        "Bergen",
        "NO",
    ),
    (
        3,
        "K1003",
        "Bjørn Åsheim",
        None,
        "private",
        None,
        "Løkkeveien 3",
        None,
        "4008",
        "Stavanger",
        "NO",
    ),
    (
        4,
        "K1004",
        "Sjøhus Bygg AS",
        "faktura@sjohus.example.no",
        "business",
        None,
        "Kaia 4",
        None,
        "7010",
        "Trondheim",
        "NO",
    ),
    (
        5,
        "K1005",
        "Tromsø Øl og Mat AS",
        "regnskap@tromso.example.no",
        "business",
        "974760673",
        "Storgata 5",
        None,
        "9008",
        "Tromsø",
        "NO",
    ),
]


@dataclass(frozen=True)
class FixtureInvoice:
    id: int
    invoice_no: str
    customer_id: int
    due_in_days: int  # negative: overdue
    balance: Decimal
    description: str | None
    has_pdf: bool

    @property
    def due_date(self) -> date:
        return today() + timedelta(days=self.due_in_days)

    @property
    def invoice_date(self) -> datetime:
        return datetime.combine(self.due_date - timedelta(days=14), time(10, 15, 30))


INVOICES: list[FixtureInvoice] = [
    FixtureInvoice(
        1, "20001", 1, -40, Decimal("12480.50"), "Strøm og nettleie, januar", has_pdf=True
    ),
    FixtureInvoice(2, "20002", 2, -30, Decimal("2250.00"), "Rådgivning", has_pdf=True),
    FixtureInvoice(3, "20003", 3, -20, Decimal("499.90"), "Årsavgift", has_pdf=False),  # NULL email
    FixtureInvoice(
        4, "20004", 4, -35, Decimal("7800.00"), "Bad: business, no org no", has_pdf=True
    ),
    FixtureInvoice(5, "20005", 1, 10, Decimal("1500.00"), "Not due yet", has_pdf=False),
    FixtureInvoice(6, "20006", 5, -60, Decimal("100000.00"), None, has_pdf=True),
    FixtureInvoice(7, "20007", 3, -15, Decimal("87.05"), "Purregebyr", has_pdf=False),
    FixtureInvoice(8, "20008", 5, -25, Decimal("3333.33"), "Øl, æbler og ål", has_pdf=True),
    FixtureInvoice(9, "20009", 1, -50, Decimal("0.00"), "Paid", has_pdf=False),  # not returned
    FixtureInvoice(10, "20010", 2, -18, Decimal("15000.10"), "Service, Ålesund", has_pdf=False),
]
BAD_INVOICE = "20004"  # a business debtor without an organisation number
WAITING_INVOICE = "20005"  # due in the future
PAID_INVOICE = "20009"  # balance 0: the query leaves it out
SENT_INVOICES = ["20001", "20002", "20003", "20006", "20007", "20008", "20010"]


def pdf_for(invoice_no: str) -> bytes:
    """A PDF with a binary tail (every byte value), so byte-for-byte means something."""
    return minimal_pdf(f"Faktura {invoice_no}") + b"%" + bytes(range(256)) + b"\n"


PDFS = {invoice.invoice_no: pdf_for(invoice.invoice_no) for invoice in INVOICES if invoice.has_pdf}


def expected_cases() -> list[dict[str, object]]:
    """What Kravia must receive for each sent invoice (invoice number order)."""
    customers = {row[0]: row for row in CUSTOMERS}
    result = []
    for invoice in INVOICES:
        if invoice.invoice_no not in SENT_INVOICES:
            continue
        result.append(
            {
                "invoiceNo": invoice.invoice_no,
                "accountingInvoiceId": invoice.invoice_no,
                "originalAmount": invoice.balance,
                "debtorName": customers[invoice.customer_id][2],
                "invoiceDate": invoice.invoice_date.date().isoformat(),
                "dueDate": invoice.due_date.isoformat(),
            }
        )
    return result


# -- the schema ----------------------------------------------------------------------------

_TYPES = {
    "postgresql": {"timestamp": "TIMESTAMP", "blob": "BYTEA", "text": "TEXT", "table": ""},
    "mariadb": {
        "timestamp": "DATETIME",
        "blob": "LONGBLOB",
        "text": "TEXT",
        "table": " ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci",
    },
    "sqlite": {"timestamp": "DATETIME", "blob": "BLOB", "text": "TEXT", "table": ""},
}

_SCHEMA = [
    """CREATE TABLE {customers} (
        id INTEGER PRIMARY KEY,
        customer_no VARCHAR(20) NOT NULL,
        name VARCHAR(200) NOT NULL,
        email VARCHAR(200) NULL,
        kind VARCHAR(10) NOT NULL,
        org_no VARCHAR(20) NULL,
        street VARCHAR(200) NOT NULL,
        street2 VARCHAR(200) NULL,
        zip VARCHAR(10) NOT NULL,
        city VARCHAR(100) NOT NULL,
        country_code CHAR(2) NOT NULL
    ){table}""",
    """CREATE TABLE {invoices} (
        id INTEGER PRIMARY KEY,
        invoice_no VARCHAR(20) NOT NULL,
        customer_id INTEGER NOT NULL REFERENCES {customers} (id),
        invoice_date {timestamp} NOT NULL,
        due_date DATE NOT NULL,
        due_text VARCHAR(10) NOT NULL,
        balance NUMERIC(12,2) NOT NULL,
        currency CHAR(3) NOT NULL,
        description {text} NULL
    ){table}""",
    """CREATE TABLE {invoice_pdfs} (
        invoice_id INTEGER PRIMARY KEY REFERENCES {invoices} (id),
        pdf {blob} NOT NULL
    ){table}""",
]

# The query every backend runs in the end-to-end tests: two columns mapped with `columns`
# (invoice_no, balance), the rest aliased; `has_document` says which invoices have a PDF.
QUERY = """
SELECT i.invoice_no,
       i.invoice_date,
       i.due_date,
       i.balance,
       i.currency,
       i.description,
       c.name AS debtor_name,
       c.customer_no AS debtor_number,
       c.email AS debtor_email,
       c.kind AS debtor_type,
       c.org_no AS organization_number,
       c.street AS address_line1,
       c.street2 AS address_line2,
       c.zip AS postal_code,
       c.city,
       c.country_code AS country,
       EXISTS (SELECT 1 FROM {invoice_pdfs} p WHERE p.invoice_id = i.id) AS has_document{extra}
FROM {invoices} i
JOIN {customers} c ON c.id = i.customer_id
WHERE i.balance > 0
ORDER BY i.id
"""
COLUMNS = {"invoice_number": "invoice_no", "amount": "balance"}
DOCUMENT_QUERY = """
SELECT p.pdf FROM {invoice_pdfs} p JOIN {invoices} i ON i.id = p.invoice_id
WHERE i.invoice_no = :invoice_number
"""


@dataclass
class Backend:
    """One database with the fixture tables, and a writable engine for the test itself."""

    name: str
    url: str  # for the connector (read-only by the connector's doing)
    engine: sa.Engine
    tables: dict[str, str]
    cleanup: list[str] = field(default_factory=list)

    def sql(self, template: str, **extra: str) -> str:
        """`template` with the test's table names (test code only: never user values)."""
        return template.format(**self.tables, **extra)

    def value(self, value: object) -> object:
        """A parameter as this backend's driver binds it (SQLite: text, like a CSV import)."""
        if self.name != "sqlite":
            return value
        if isinstance(value, datetime):
            return value.isoformat(sep=" ")
        if isinstance(value, date | Decimal):
            return str(value) if isinstance(value, Decimal) else value.isoformat()
        return value

    def execute(self, statement: str, params: dict[str, object] | None = None) -> None:
        with self.engine.begin() as connection:
            connection.execute(
                sa.text(statement), {k: self.value(v) for k, v in (params or {}).items()}
            )

    def scalar(self, statement: str, params: dict[str, object] | None = None) -> Any:
        with self.engine.connect() as connection:
            return connection.execute(sa.text(statement), params or {}).scalar_one()

    def balance(self, invoice_no: str) -> Decimal:
        value = self.scalar(
            self.sql("SELECT balance FROM {invoices} WHERE invoice_no = :n"), {"n": invoice_no}
        )
        return Decimal(repr(value)) if isinstance(value, float) else Decimal(value)

    def set_balance(self, invoice_no: str, amount: Decimal) -> None:
        self.execute(
            self.sql("UPDATE {invoices} SET balance = :b WHERE invoice_no = :n"),
            {"b": amount, "n": invoice_no},
        )


def _unreachable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: database tests must not be skipped)")
    pytest.skip(reason)


def _admin_url(name: str, tmp_path: Path) -> tuple[str, str]:
    """(the fixture's writable SQLAlchemy URL, the URL the connector is given)."""
    if name == "postgresql":
        return (
            f"postgresql+psycopg://postgres@{POSTGRES_HOST}/test?connect_timeout=3",
            f"postgresql://postgres@{POSTGRES_HOST}/test",
        )
    if name == "mariadb":
        return (
            f"mysql+pymysql://root@{MARIADB_HOST}/test?charset=utf8mb4&connect_timeout=3",
            f"mariadb://root@{MARIADB_HOST}/test",
        )
    path = tmp_path / "invoices.sqlite"
    return f"sqlite:///{path}", f"sqlite:///{path}"


@contextmanager
def open_backend(name: str, tmp_path: Path) -> Iterator[Backend]:
    """The fixture schema and rows in backend `name`; dropped afterwards.

    Server tables get a random suffix (the servers are shared); SQLite uses the names of
    the example in docs/sources/sql.md (`invoices`, `customers`, `invoice_pdfs`).
    """
    admin_url, url = _admin_url(name, tmp_path)
    engine = sa.create_engine(admin_url, poolclass=sa.NullPool)
    try:
        with engine.connect() as connection:
            connection.execute(sa.text("SELECT 1"))
    except sa.exc.OperationalError as exc:
        engine.dispose()
        _unreachable(f"{name} is not reachable at {url}: {' '.join(str(exc.orig).split())}")
    if name == "sqlite":
        tables = {"invoices": "invoices", "customers": "customers", "invoice_pdfs": "invoice_pdfs"}
    else:
        suffix = secrets.token_hex(4)
        tables = {
            "invoices": f"ks_invoices_{suffix}",
            "customers": f"ks_customers_{suffix}",
            "invoice_pdfs": f"ks_invoice_pdfs_{suffix}",
        }
    backend = Backend(name, url, engine, tables)
    try:
        create(backend)
        yield backend
    finally:
        try:
            with engine.begin() as connection:
                for statement in backend.cleanup:
                    connection.execute(sa.text(statement))
                for table in ("invoice_pdfs", "invoices", "customers"):
                    connection.execute(sa.text(f"DROP TABLE IF EXISTS {tables[table]}"))
        finally:
            engine.dispose()


def create(backend: Backend) -> None:
    """Create the tables and insert the rows."""
    types = _TYPES[backend.name]
    with backend.engine.begin() as connection:
        for template in _SCHEMA:
            connection.execute(sa.text(template.format(**backend.tables, **types)))
        insert_customer = sa.text(
            backend.sql(
                "INSERT INTO {customers} (id, customer_no, name, email, kind, org_no, street, "
                "street2, zip, city, country_code) VALUES (:id, :customer_no, :name, :email, "
                ":kind, :org_no, :street, :street2, :zip, :city, :country_code)"
            )
        )
        keys = ("id", "customer_no", "name", "email", "kind", "org_no", "street", "street2")
        keys += ("zip", "city", "country_code")
        for row in CUSTOMERS:
            connection.execute(insert_customer, dict(zip(keys, row, strict=True)))
        insert_invoice = sa.text(
            backend.sql(
                "INSERT INTO {invoices} (id, invoice_no, customer_id, invoice_date, due_date, "
                "due_text, balance, currency, description) VALUES (:id, :no, :customer, "
                ":invoice_date, :due_date, :due_text, :balance, 'NOK', :description)"
            )
        )
        insert_pdf = sa.text(
            backend.sql("INSERT INTO {invoice_pdfs} (invoice_id, pdf) VALUES (:id, :pdf)")
        )
        for invoice in INVOICES:
            params: dict[str, object] = {
                "id": invoice.id,
                "no": invoice.invoice_no,
                "customer": invoice.customer_id,
                "invoice_date": invoice.invoice_date,
                "due_date": invoice.due_date,
                "due_text": invoice.due_date.isoformat(),
                "balance": invoice.balance,
                "description": invoice.description,
            }
            connection.execute(insert_invoice, {k: backend.value(v) for k, v in params.items()})
            if invoice.has_pdf:
                connection.execute(insert_pdf, {"id": invoice.id, "pdf": PDFS[invoice.invoice_no]})


# -- settings and connectors for the tests -------------------------------------------------


def toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    return json.dumps(str(value))  # a JSON string is a TOML basic string


def sql_config(tmp_path: Path, sim: Sim, settings: dict[str, object]) -> Path:
    """A configuration (see `support.write_config`) whose one source is an `sql` source."""
    config = write_config(tmp_path, sim.base_url)
    head = config.read_text(encoding="utf-8").split("[[sources]]")[0]
    lines = ["[[sources]]", 'name = "erp"', 'connector = "sql"', "[sources.settings]"]
    columns = settings.get("columns")
    lines += [
        f"{key} = {toml_value(value)}"
        for key, value in settings.items()
        if key != "columns" and value is not None
    ]
    if isinstance(columns, dict):
        lines.append("[sources.settings.columns]")
        lines += [f"{key} = {toml_value(value)}" for key, value in columns.items()]
    config.write_text(head + "\n".join(lines) + "\n", encoding="utf-8")
    return config


def fixture_settings(backend: Backend, **overrides: object) -> dict[str, object]:
    """The settings of the end-to-end tests: `QUERY`, `COLUMNS`, `DOCUMENT_QUERY`."""
    settings: dict[str, object] = {
        "url": backend.url,
        "query": backend.sql(QUERY, extra=""),
        "document_query": backend.sql(DOCUMENT_QUERY),
        "fetch_size": 3,
        "columns": COLUMNS,
    }
    settings.update(overrides)
    return {key: value for key, value in settings.items() if value is not None}


def connector(backend: Backend, base_dir: Path, **overrides: object) -> SqlConnector:
    made = SqlConnector.from_settings(fixture_settings(backend, **overrides), base_dir=base_dir)
    assert isinstance(made, SqlConnector)
    return made


def records(made: SqlConnector) -> list[SourceRecord]:
    result = []
    for item in made.read():
        assert isinstance(item, SourceRecord), item
        result.append(item)
    return result


# -- database users ------------------------------------------------------------------------


def admin_execute(backend: Backend, *statements: str) -> None:
    """Run `statements` as the fixture's admin through the driver itself (no SQLAlchemy
    escaping: a `%` in a password stays one), committed."""
    raw = backend.engine.raw_connection()
    try:
        cursor = raw.cursor()
        for statement in statements:
            cursor.execute(statement)
        cursor.close()
        raw.commit()
    finally:
        raw.close()


@contextmanager
def database_user(backend: Backend, password: str, privileges: str = "SELECT") -> Iterator[str]:
    """A new user of the server `backend` (PostgreSQL or MariaDB) with `password` (no quote
    in it) and `privileges` on the fixture's tables; its name. Dropped afterwards."""
    name = f"ks_user_{secrets.token_hex(4)}"
    tables = list(backend.tables.values())
    if backend.name == "postgresql":
        admin_execute(
            backend,
            f"CREATE ROLE {name} LOGIN PASSWORD '{password}'",
            *(f"GRANT {privileges} ON {table} TO {name}" for table in tables),
        )
        drop = [f"DROP OWNED BY {name}", f"DROP ROLE {name}"]
    else:
        user = f"'{name}'@'%'"
        admin_execute(
            backend,
            f"CREATE USER {user} IDENTIFIED BY '{password}'",
            *(f"GRANT {privileges} ON test.{table} TO {user}" for table in tables),
        )
        drop = [f"DROP USER IF EXISTS {user}"]
    try:
        yield name
    finally:
        admin_execute(backend, *drop)
