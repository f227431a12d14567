"""The state's schema is defined once (`kravia_sync.state.schema`); the store writes it with plain
SQL. These tests hold the store's column lists and encodings against that one definition, so
the two cannot drift apart."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from dataclasses import fields
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import Boolean, create_engine
from sqlmodel import SQLModel

from kravia_sync.lifecycle import CaseState, Phase
from kravia_sync.state import rows
from kravia_sync.state.bookings import BookingAttempt
from kravia_sync.state.records import JournalEntry, MirrorItem, QuarantineEntry
from kravia_sync.state.rows import DECIMAL_COLUMNS, FLAG_COLUMNS, TIME_COLUMNS
from kravia_sync.state.schema import TABLES, DecimalText, UTCDateTime
from kravia_sync.state.store import StateStore


def python_prints(script: str) -> str:
    """What a fresh interpreter running `script` prints."""
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    return result.stdout.strip()


def columns(table: str) -> set[str]:
    return {column.name for column in TABLES[table].columns}


def columns_of_type(kind: type) -> set[str]:
    return {
        column.name
        for table in TABLES.values()
        for column in table.columns
        if isinstance(column.type, kind)
    }


def test_the_store_writes_every_column_of_each_table_it_writes_whole() -> None:
    assert {f.name for f in fields(CaseState)} == columns("cases")
    assert set(rows.PAYMENT_COLUMNS) == columns("payments")
    assert {f.name for f in fields(JournalEntry)} | {"id"} == columns("journal")
    assert {f.name for f in fields(QuarantineEntry)} | {
        "source",
        "first_seen_at",
        "last_seen_at",
    } == columns("quarantine")
    assert {f.name for f in fields(MirrorItem)} | {"seen_at"} == columns("kravia_cases")
    booking = {f.name for f in fields(BookingAttempt)} - {"outcome_at"}  # an outcome row's `at`
    assert booking | {"id", "kind"} == columns("settlement_bookings")


def test_columns_are_decoded_by_the_kind_the_schema_gives_them() -> None:
    """A time, an amount or a flag of any table comes back as one, and nothing else is
    converted: a column name is one kind in every table."""
    assert columns_of_type(UTCDateTime) == TIME_COLUMNS
    assert columns_of_type(DecimalText) == DECIMAL_COLUMNS
    assert columns_of_type(Boolean) == FLAG_COLUMNS
    for name in TIME_COLUMNS | DECIMAL_COLUMNS | FLAG_COLUMNS:
        kinds = {type(table.c[name].type).__name__ for table in TABLES.values() if name in table.c}
        assert len(kinds) == 1, (name, kinds)


def test_a_new_store_has_the_tables_sqlmodel_would_create(tmp_path: Path) -> None:
    """Created through the store or by sqlmodel from the models: the same tables, columns,
    types, keys and indexes."""
    StateStore(tmp_path / "store.db").close()
    engine = create_engine(f"sqlite:///{tmp_path / 'models.db'}")
    SQLModel.metadata.create_all(engine, tables=list(TABLES.values()))
    engine.dispose()

    def described(path: Path) -> dict[str, object]:
        with sqlite3.connect(path) as db:
            tables = [name for (name,) in db.execute("SELECT name FROM sqlite_master")]
            return {
                name: (
                    db.execute(f"PRAGMA table_info('{name}')").fetchall(),
                    sorted(row[1:] for row in db.execute(f"PRAGMA index_list('{name}')")),
                )
                for name in tables
                if not name.startswith("sqlite_")
            }

    assert described(tmp_path / "store.db") == described(tmp_path / "models.db")


def test_times_amounts_and_flags_come_back_as_they_went_in(tmp_path: Path) -> None:
    """Written through the store, read back through it and through the models."""
    oslo = timezone(timedelta(hours=1))
    seen = datetime(2026, 1, 31, 23, 30, 0, 123456, tzinfo=oslo)
    case = CaseState(
        accounting_invoice_id="A-1",
        source="folder",
        record_key="invoices.csv:2",
        invoice_number="1",
        phase=Phase.STARTED,
        fingerprint="f",
        record_hash="h",
        has_document=True,
        first_seen_at=seen,
        updated_at=seen,
        amount=Decimal("1234.50"),
        amount_floor=Decimal("0.01"),
    )
    with StateStore(tmp_path / "state.db") as store:
        store.write_batch([case], [])
        (back,) = store.load_cases("folder").values()
        assert back.first_seen_at == seen
        assert back.first_seen_at.tzinfo is not None
        assert back.first_seen_at.utcoffset() == timedelta(0)  # kept in UTC
        assert back.amount == Decimal("1234.50")
        assert str(back.amount) == "1234.50"  # exactly, trailing zero and all
        assert back.has_document is True
        assert back.phase is Phase.STARTED
        engine = create_engine(f"sqlite:///{store.path}")
        with engine.connect() as connection:
            row = connection.execute(TABLES["cases"].select()).mappings().one()
        engine.dispose()
        assert row["first_seen_at"] == seen
        assert row["amount"] == Decimal("1234.50")
        assert row["has_document"] is True


def test_naive_times_are_refused(tmp_path: Path) -> None:
    with StateStore(tmp_path / "state.db") as store:
        with pytest.raises(ValueError, match="naive"):
            store.hold("A-1", reason="r", by="me", now=datetime(2026, 1, 1))  # noqa: DTZ001
        assert store.holds() == {}
        store.hold("A-1", reason="r", by="me", now=datetime(2026, 1, 1, tzinfo=UTC))
        assert store.holds()["A-1"]["held_at"] == datetime(2026, 1, 1, tzinfo=UTC)


def test_a_pass_over_an_existing_store_does_not_load_sqlalchemy(tmp_path: Path) -> None:
    """Opening, reading and writing an existing store needs only the sqlite3 driver (the
    schema's models load only to create or migrate a database)."""
    StateStore(tmp_path / "state.db").close()
    script = (
        "import sys\n"
        "from datetime import UTC, datetime, timedelta\n"
        "from pathlib import Path\n"
        "from kravia_sync.state.store import StateStore\n"
        f"with StateStore(Path({str(tmp_path / 'state.db')!r})) as store:\n"
        "    store.acquire_lease(ttl=timedelta(minutes=1), now=datetime.now(UTC))\n"
        "    store.load_cases('folder')\n"
        "    store.start_run(holder='me', command='reconcile', now=datetime.now(UTC))\n"
        "    store.release_lease()\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in {'sqlalchemy', 'sqlmodel'}))\n"
    )
    assert python_prints(script) == "[]"


def test_the_command_line_loads_neither_sqlalchemy_nor_httpx_own_command_line() -> None:
    """What start-up leaves out stays out: the command line's modules import no SQLAlchemy
    (a folder or Fiken source never needs it) and not httpx's own command-line tool."""
    script = (
        "import sys\n"
        "import kravia_sync.cli.app\n"
        "import httpx\n"
        "assert httpx.AsyncClient\n"
        "loaded = [m for m in sys.modules if m.split('.')[0] in {'sqlalchemy', 'sqlmodel'}]\n"
        "print(loaded, getattr(sys.modules['httpx._main'], '__file__', None))\n"
    )
    assert python_prints(script) == "[] None"
