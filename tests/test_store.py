"""Tests of the state store (`kravia_sync.state.store`) on a real SQLite file."""

from __future__ import annotations

import contextlib
import os
import socket
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import insert, select
from state_sql import JOURNAL, LEASE, state_engine

from kravia_sync.lifecycle import CaseState, Phase
from kravia_sync.payments import PaymentKind, PaymentLine, PaymentPhase, PaymentState
from kravia_sync.state.bookings import BookingAttempt, BookingOutcome
from kravia_sync.state.case_table import NOTED_OF_SOURCE
from kravia_sync.state.database import SCHEMA_VERSION
from kravia_sync.state.errors import LeaseHeldError, LeaseLostError, SchemaError, StateConflictError
from kravia_sync.state.process import start_time, this_process
from kravia_sync.state.records import (
    CaseWrite,
    InvoiceAlias,
    JournalEntry,
    MirrorItem,
    QuarantineEntry,
    WriteStatus,
)
from kravia_sync.state.source_read import SAME_NUMBER_SQL, SourceRead
from kravia_sync.state.store import StateStore

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
TTL = timedelta(minutes=2)
OSLO = timezone(timedelta(hours=1), "CET")


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "kravia-sync.db"


@pytest.fixture
def store(db_path: Path) -> Iterator[StateStore]:
    opened = StateStore(db_path)
    yield opened
    opened.close()


def raw_sql(path: Path, *statements: str) -> list[tuple[object, ...]]:
    """Run SQL on the file with the stdlib driver (as another tool would); the last result."""
    with contextlib.closing(sqlite3.connect(path)) as connection, connection:
        rows: list[tuple[object, ...]] = []
        for statement in statements:
            rows = connection.execute(statement).fetchall()
        return rows


def make_case(aid: str = "A-1", **changes: object) -> CaseState:
    values: dict[str, object] = {
        "accounting_invoice_id": aid,
        "source": "erp",
        "record_key": f"invoices.csv:{aid}",
        "invoice_number": aid.removeprefix("A-"),
        "phase": Phase.NEW,
        "fingerprint": "f" * 32,
        "record_hash": "h" * 32,
        "has_document": False,
        "first_seen_at": T0,
        "updated_at": T0,
    }
    return CaseState(**{**values, **changes})  # type: ignore[arg-type]


def intent(aid: str = "A-1", attempt: str = "att-1", **changes: object) -> JournalEntry:
    values: dict[str, object] = {
        "attempt_id": attempt,
        "kind": "intent",
        "operation": "register",
        "accounting_invoice_id": aid,
        "at": T0,
    }
    return JournalEntry(**{**values, **changes})  # type: ignore[arg-type]


def booking_intent(attempt: str = "b-1", **changes: object) -> BookingAttempt:
    values: dict[str, object] = {
        "attempt_id": attempt,
        "settlement_id": 90001,
        "reference": "BILAG 7",
        "booked_by": "kari",
        "at": T0,
    }
    return BookingAttempt(**{**values, **changes})  # type: ignore[arg-type]


def put_lease(
    store: StateStore,
    *,
    expires_at: datetime,
    host_key: str | None = "other-host.example|boot|pid:[1]",
    pid: int = 1,
    started: str | None = None,
    epoch: int = 7,
) -> None:
    """A lease row as another holder would have written it (`host_key` None: this
    machine's)."""
    key = host_key or this_process().host_key
    with state_engine(store).begin() as connection:
        connection.execute(
            insert(LEASE).values(
                name="writer",
                holder=f"pid {pid} on {key.split('|')[0]}",
                host=key.split("|")[0],
                pid=pid,
                acquired_at=T0 - timedelta(minutes=1),
                expires_at=expires_at,
                holder_id="someone-else",
                epoch=epoch,
                host_key=key,
                started=started,
            )
        )


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


# What schema 6 added, undone: a database as schema 5 left it.
SCHEMA_6_UNDONE = ("DROP INDEX ix_cases_noted",)
SCHEMA_5_UNDONE = (*SCHEMA_6_UNDONE, "DROP TABLE settlement_bookings")


# What schemas 4 and 5 added, undone: a database as schema 3 left it.
SCHEMA_4_UNDONE = (*SCHEMA_5_UNDONE, "DROP TABLE invoice_aliases")


# What schemas 3 to 5 added, undone: a database as schema 2 left it.
SCHEMA_3_UNDONE = (
    *SCHEMA_4_UNDONE,
    "DROP TABLE kravia_cases",
    *(
        f"ALTER TABLE cases DROP COLUMN {c}"
        for c in ("revision", "settle_after", "not_kravia_ids", "amount_floor")
    ),
    *(f"ALTER TABLE lease DROP COLUMN {c}" for c in ("holder_id", "epoch", "host_key", "started")),
    "ALTER TABLE payments DROP COLUMN settle_after",
)


NOTED_INDEX_SQL = "SELECT name FROM sqlite_master WHERE name = 'ix_cases_noted'"


class TestSchema:
    def test_new_database(self, store, db_path):
        """A new store creates its file, the tables and schema version 6."""
        assert db_path.is_file()
        assert store.schema_version() == SCHEMA_VERSION == 6
        tables = {row[0] for row in raw_sql(db_path, "SELECT name FROM sqlite_master")}
        assert {"meta", "cases", "journal", "runs", "quarantine", "lease"} <= tables
        assert {"payments", "holds", "kravia_cases", "invoice_aliases"} <= tables
        assert "settlement_bookings" in tables

    def test_schema_1_is_migrated(self, store, db_path):
        """A state database of schema 1 (before payments and holds) is migrated in place:
        its cases keep their values and gain the new columns, empty."""
        store.write_batch([make_case("A-1", phase=Phase.STARTED, kravia_id=5)], [])
        store.close()
        added = ["amount", "payouts_accounted", "attention", "approved_at", "kravia_status"]
        added += ["kravia_remaining", "status_at", "hold_action_at", "registered_at"]
        raw_sql(
            db_path,
            *SCHEMA_3_UNDONE,
            "DROP TABLE payments",
            "DROP TABLE holds",
            "DROP INDEX ix_journal_payment_id",
            "ALTER TABLE journal DROP COLUMN payment_id",
            *(f"ALTER TABLE cases DROP COLUMN {column}" for column in added),
            "UPDATE meta SET value = '1' WHERE key = 'schema_version'",
        )

        again = StateStore(db_path)
        try:
            assert again.schema_version() == SCHEMA_VERSION
            case = again.load_cases("erp")["A-1"]
            assert (case.phase, case.kravia_id, case.amount, case.attention) == (
                Phase.STARTED,
                5,
                None,
                None,
            )
            assert case.record_hash == ""  # validated once more: the case learns its amount
            again.write_batch([replace(case, amount=Decimal("12.30"))], [])
            assert again.load_cases("erp")["A-1"].amount == Decimal("12.30")
        finally:
            again.close()

    def test_schema_2_is_migrated(self, store, db_path):
        """A schema-2 database gains revisions (its cases start at 1), the fenced lease (an old,
        expired lease is dropped: it has no epoch) and the mirror of Kravia's cases."""
        store.write_batch([make_case("A-1", phase=Phase.STARTED, kravia_id=5)], [])
        store.close()
        raw_sql(
            db_path,
            *SCHEMA_3_UNDONE,
            "INSERT INTO lease VALUES ('writer', 'pid 1 on old', 'old', 1, '2025', '2025')",
            "INSERT INTO meta VALUES ('status_cursor', '2025-01-01T00:00:00+00:00')",
            "UPDATE meta SET value = '2' WHERE key = 'schema_version'",
        )

        again = StateStore(db_path)
        try:
            assert again.schema_version() == SCHEMA_VERSION
            case = again.load_cases("erp")["A-1"]
            assert (case.phase, case.kravia_id, case.revision) == (Phase.STARTED, 5, 1)
            assert again.current_lease() is None
            assert again.meta("status_cursor") is None
            assert again.mirrored_count() == 0
            again.acquire_lease(ttl=TTL, now=T0)
            assert again.current_lease()["epoch"] == 1
        finally:
            again.close()

    def test_schema_3_is_migrated(self, store, db_path):
        """A schema-3 database gains the table of invoices' other ids, empty; its cases stay."""
        store.write_batch([make_case("A-1", phase=Phase.STARTED, kravia_id=5)], [])
        store.close()
        raw_sql(
            db_path,
            *SCHEMA_4_UNDONE,
            "UPDATE meta SET value = '3' WHERE key = 'schema_version'",
        )

        again = StateStore(db_path)
        try:
            assert again.schema_version() == SCHEMA_VERSION
            assert again.load_cases("erp")["A-1"].kravia_id == 5
            assert again.aliases("erp") == {}
            alias = InvoiceAlias("erp", "ERP-1", "A-1", "1", T0)
            again.record_aliases([alias])
            assert again.alias_records() == [alias]
            moved = replace(alias, accounting_invoice_id="B-1", invoice_number="2")
            again.record_aliases([moved])  # the id names another invoice's case now
            assert again.alias_records() == [moved]
            assert again.last_booking(90001) is None
        finally:
            again.close()

    def test_schema_4_is_migrated(self, store, db_path):
        """A schema-4 database gains the journal of settlement bookings, empty; its cases and
        lease stay as they were."""
        store.write_batch([make_case("A-1", phase=Phase.STARTED, kravia_id=5)], [])
        store.acquire_lease(ttl=TTL, now=T0)
        store.close()
        raw_sql(
            db_path, *SCHEMA_5_UNDONE, "UPDATE meta SET value = '4' WHERE key = 'schema_version'"
        )

        again = StateStore(db_path)
        try:
            assert again.schema_version() == SCHEMA_VERSION
            case = again.load_cases("erp")["A-1"]
            assert (case.phase, case.kravia_id, case.revision) == (Phase.STARTED, 5, 1)
            assert again.current_lease()["epoch"] == 1
            assert again.last_booking(90001) is None
            assert again.record_booking_intent(booking_intent(), after=None)
            assert again.last_booking(90001) == booking_intent()
        finally:
            again.close()

    def test_schema_5_is_migrated(self, store, db_path):
        """A schema-5 database gains the index of noted cases; its cases and notes stay."""
        store.write_batch([make_case("A-1", phase=Phase.STARTED, kravia_id=5)], [])
        store.set_case_notes([("A-1", {"attention": "look at me"})])
        store.close()
        raw_sql(
            db_path, *SCHEMA_6_UNDONE, "UPDATE meta SET value = '5' WHERE key = 'schema_version'"
        )
        assert not raw_sql(db_path, NOTED_INDEX_SQL)

        again = StateStore(db_path)
        try:
            assert again.schema_version() == SCHEMA_VERSION
            assert raw_sql(db_path, NOTED_INDEX_SQL)
            assert again.ids_noted("erp", "look") == ["A-1"]
            assert again.load_cases("erp")["A-1"].kravia_id == 5
        finally:
            again.close()

    def test_the_noted_cases_of_a_source_are_found_through_their_index(self, store, db_path):
        """`ids_noted` reads the index of noted cases, not every case of the source (a pass
        asks it of every source), and finds only that source's notes with that start."""
        store.write_batch(
            [make_case(f"A-{n}", phase=Phase.STARTED, kravia_id=n) for n in range(1, 4)], []
        )
        store.set_case_notes(
            [("A-1", {"attention": "gone: look"}), ("A-2", {"attention": "other: look"})]
        )
        with contextlib.closing(sqlite3.connect(db_path)) as connection:
            plan = connection.execute(f"EXPLAIN QUERY PLAN {NOTED_OF_SOURCE}", ("erp", 5, "gone:"))
            assert "INDEX ix_cases_noted (source=? AND attention>?)" in str(plan.fetchall())
        assert store.ids_noted("erp", "gone:") == ["A-1"]
        assert store.ids_noted("other", "gone:") == []

    def test_the_cases_with_a_records_number_are_found_through_the_index_of_numbers(
        self, store, db_path
    ):
        """Asked for each record whose id is new to the store (every record, after an ERP
        renumbers its keys): the index of invoice numbers, never every case of the source."""
        store.write_batch(
            [
                make_case("A-1", phase=Phase.STARTED, kravia_id=1),
                make_case("A-2", phase=Phase.STARTED, kravia_id=2),
                make_case("B-1", source="shop", invoice_number="1"),
                make_case("C-1", invoice_number="1"),
            ],
            [],
        )
        with contextlib.closing(sqlite3.connect(db_path)) as connection:
            plan = connection.execute(f"EXPLAIN QUERY PLAN {SAME_NUMBER_SQL}", ("1", "erp", "X"))
            assert "INDEX ix_cases_invoice_number (invoice_number=?)" in str(plan.fetchall())
        with SourceRead(db_path, "erp") as read:
            assert read.same_number("X-1", "1") == ["A-1", "C-1"]
            assert read.same_number("A-1", "1") == ["C-1"]
            assert read.same_number("X-3", "3") == []

    def test_a_store_without_the_index_of_noted_cases_still_answers(self, store, db_path):
        """Dropped by another tool: the noted cases are still found (through the index of every
        case of the source), so no pass fails for it."""
        store.write_batch([make_case("A-1", phase=Phase.STARTED, kravia_id=5)], [])
        store.set_case_notes([("A-1", {"attention": "gone: look"})])
        raw_sql(db_path, *SCHEMA_6_UNDONE)

        assert store.ids_noted("erp", "gone:") == ["A-1"]

    def test_schema_version_0_is_refused(self, store, db_path):
        store.close()
        raw_sql(db_path, "UPDATE meta SET value = '0' WHERE key = 'schema_version'")
        with pytest.raises(SchemaError, match="unknown schema version '0'"):
            StateStore(db_path)

    def test_a_live_lease_of_an_older_version_stops_the_migration(self, store, db_path):
        """While an older kravia-sync holds an unexpired lease, the upgrade is refused naming
        it, and the database stays at schema 2 (that process would write unfenced)."""
        store.close()
        raw_sql(
            db_path,
            *SCHEMA_3_UNDONE,
            "INSERT INTO lease VALUES ('writer', 'pid 7 on old', 'old', 7, '2025', '2999-01-01')",
            "UPDATE meta SET value = '2' WHERE key = 'schema_version'",
        )

        with pytest.raises(SchemaError, match="pid 7 on old"):
            StateStore(db_path).close()

        assert raw_sql(db_path, "SELECT value FROM meta WHERE key = 'schema_version'") == [("2",)]

    def test_wal_and_full_sync(self, store):
        """Connections run in WAL mode with synchronous=FULL."""
        with state_engine(store).connect() as connection:
            journal_mode = connection.exec_driver_sql("PRAGMA journal_mode").scalar()
            synchronous = connection.exec_driver_sql("PRAGMA synchronous").scalar()

        assert journal_mode == "wal"
        assert synchronous == 2  # FULL

    def test_reopen(self, store, db_path):
        """Reopening an existing store keeps its data."""
        store.write_batch([make_case()], [])
        store.close()

        again = StateStore(db_path)
        try:
            assert set(again.load_cases("erp")) == {"A-1"}
            assert again.schema_version() == SCHEMA_VERSION
        finally:
            again.close()

    def test_newer_schema_refused(self, store, db_path):
        """A database from a newer kravia-sync is refused naming both versions."""
        store.close()
        raw_sql(db_path, "UPDATE meta SET value = '7' WHERE key = 'schema_version'")

        with pytest.raises(SchemaError) as info:
            StateStore(db_path).close()

        message = str(info.value)
        assert "schema version 7" in message
        assert f"({SCHEMA_VERSION})" in message
        assert str(db_path) in message

    @pytest.mark.parametrize("value", ["banana", None])
    def test_unknown_schema_refused(self, store, db_path, value):
        """A missing or non-numeric schema version is refused."""
        store.close()
        if value is None:
            raw_sql(db_path, "DELETE FROM meta")
        else:
            raw_sql(db_path, f"UPDATE meta SET value = '{value}'")  # noqa: S608

        with pytest.raises(SchemaError, match="unknown schema version"):
            StateStore(db_path).close()

    def test_foreign_database_refused(self, tmp_path):
        """An SQLite file of something else (no meta table) is refused, and left untouched."""
        path = tmp_path / "other.db"
        raw_sql(path, "CREATE TABLE invoices (id INTEGER)", "INSERT INTO invoices VALUES (1)")

        with pytest.raises(SchemaError, match="not a kravia-sync state database"):
            StateStore(path).close()

        tables = {row[0] for row in raw_sql(path, "SELECT name FROM sqlite_master")}
        assert tables == {"invoices"}


class TestCases:
    def test_round_trip(self, store):
        """Every field of a case comes back equal; datetimes stay timezone-aware."""
        case = make_case(
            phase=Phase.REGISTERING,
            kravia_id=4711,
            registered_fingerprint="r" * 32,
            pending_attempt="att-3",
            pending_since=T0.astimezone(OSLO) + timedelta(microseconds=123456),
            attempts=2,
            lookups=1,
            next_attempt_at=T0 + timedelta(seconds=90),
            last_error="read timeout ✓ æøå",
            changed_at=T0 - timedelta(days=2),
            first_seen_at=T0.astimezone(OSLO),
            has_document=True,
        )
        store.write_batch([case], [])

        loaded = store.load_cases("erp")["A-1"]

        assert loaded == replace(case, revision=1)
        for name in ("first_seen_at", "updated_at", "pending_since", "next_attempt_at"):
            value = getattr(loaded, name)
            assert value.tzinfo is not None
            assert value.utcoffset() == timedelta(0)
        assert loaded.phase is Phase.REGISTERING

    def test_naive_datetime_refused(self, store):
        """A naive datetime is refused rather than stored with a guessed zone."""
        naive = datetime(2025, 3, 1, 12, 0)  # noqa: DTZ001 - the point of the test

        with pytest.raises(ValueError, match="naive"):
            store.write_batch([make_case(updated_at=naive)], [])

        assert store.load_cases("erp") == {}

    def test_upsert_last_in_batch_wins(self, store):
        """Within a batch the last version of a case wins; later batches update in place."""
        first = make_case(phase=Phase.NEW)
        second = replace(first, phase=Phase.REGISTERING, pending_attempt="att-1")
        store.write_batch([first, make_case("A-2"), second], [])

        assert store.load_cases("erp")["A-1"] == replace(second, revision=1)
        assert len(store.load_cases("erp")) == 2

        third = replace(second, phase=Phase.REGISTERED, kravia_id=9, pending_attempt=None)
        store.write_batch([third], [])

        assert store.load_cases("erp")["A-1"] == replace(third, revision=1)
        assert store.phase_counts() == {"registered": 1, "new": 1}

    def test_journal_appended(self, store):
        """Journal rows are appended in order, never replaced."""
        store.write_batch([make_case()], [intent()])
        store.write_batch(
            [],
            [
                intent(kind="outcome", outcome="ok", kravia_id=9, http_status=200),
                intent(attempt="att-2", operation="document"),
            ],
        )

        rows = store.journal_for("A-1")

        assert [(row["attempt_id"], row["kind"], row["operation"]) for row in rows] == [
            ("att-1", "intent", "register"),
            ("att-1", "outcome", "register"),
            ("att-2", "intent", "document"),
        ]
        assert rows[1]["outcome"] == "ok"
        assert rows[1]["kravia_id"] == 9
        assert rows[0]["at"] == T0

    def test_batch_is_one_transaction(self, store):
        """A batch that fails writes neither its cases nor its journal."""
        bad = intent(operation=None)  # NOT NULL: fails inside the transaction, after the case

        with pytest.raises(sqlite3.IntegrityError, match="NOT NULL"):
            store.write_batch([make_case("A-9")], [bad])

        assert store.load_cases("erp") == {}
        with state_engine(store).connect() as connection:
            assert connection.execute(select(JOURNAL)).all() == []

    def test_sources_kept_apart(self, store):
        """load_cases returns one source's cases; a source read sees every source's ids."""
        store.write_batch([make_case("A-1"), make_case("B-1", source="shop")], [])

        assert set(store.load_cases("erp")) == {"A-1"}
        assert set(store.load_cases("shop")) == {"B-1"}
        with store.source_read("erp") as read:
            stored, _ = read.triage([("A-1", "k1", "h"), ("B-1", "k2", "h")], quiet={"none"})
        assert {aid: summary.source for aid, summary in stored.items() if summary} == {
            "A-1": "erp",
            "B-1": "shop",
        }

    @pytest.mark.parametrize("in_memory", [250_000, 3, 0])
    def test_source_read_finds_repeats_and_what_is_unseen(self, store, monkeypatch, in_memory):
        """Ids repeated across chunks name their first record; unseen cases are counted,
        whether the seen ids are kept in memory, move to SQLite midway, or start there."""
        monkeypatch.setattr(SourceRead, "IN_MEMORY_IDS", in_memory)
        store.write_batch(
            [
                make_case("A-1"),
                make_case("A-2"),
                make_case("A-3", phase=Phase.REGISTERING, pending_attempt="att-9"),
            ],
            [],
        )
        with store.source_read("erp") as read:
            _, first = read.triage(
                [("A-1", "k1", "h"), ("N-1", "k2", "h"), ("A-1", "k3", "h")], quiet=set()
            )
            _, second = read.triage([("N-1", "k4", "h"), ("N-2", "k5", "h")], quiet=set())
            gone, settling = read.unseen()

        assert first == [None, None, "k1"]
        assert second == ["k2", None]
        assert (gone, settling) == (2, ["A-3"])

    def test_triage_singles_out_all_but_quiet_identical_cases(self, store):
        """Only a stored case of this source, in a quiet phase, with the very same record hash
        goes unmentioned; everything else comes back with its summary (None: not stored)."""
        store.write_batch(
            [
                make_case("A-1", phase=Phase.STARTED),
                make_case("A-2", phase=Phase.STARTED),
                make_case("A-3", phase=Phase.NEEDS_REVIEW),
                make_case("A-4", phase=Phase.REGISTERED),
                make_case("B-1", phase=Phase.STARTED, source="shop"),
            ],
            [],
        )
        same, other = "h" * 32, "x" * 32
        with store.source_read("erp") as read:
            looked_at, earlier = read.triage(
                [
                    ("A-1", "k1", same),
                    ("A-2", "k2", other),
                    ("A-3", "k3", same),
                    ("A-4", "k4", same),
                    ("B-1", "k5", same),
                    ("N-1", "k6", same),
                ],
                quiet={Phase.STARTED.value},
            )

        assert "A-1" not in looked_at
        assert {aid: (s.phase, s.source) for aid, s in looked_at.items() if s} == {
            "A-2": (Phase.STARTED, "erp"),
            "A-3": (Phase.NEEDS_REVIEW, "erp"),
            "A-4": (Phase.REGISTERED, "erp"),
            "B-1": (Phase.STARTED, "shop"),
        }
        assert looked_at["N-1"] is None
        assert earlier == [None] * 6

    @pytest.mark.parametrize("in_memory", [250_000, 0])
    def test_unseen_counts_only_this_sources_cases_once(self, store, monkeypatch, in_memory):
        """A repeated id, an id of another source and a new id do not hide a gone case."""
        monkeypatch.setattr(SourceRead, "IN_MEMORY_IDS", in_memory)
        store.write_batch(
            [
                make_case("A-1", phase=Phase.STARTED),
                make_case("A-2", phase=Phase.STARTED),
                make_case("A-3", phase=Phase.STARTING, pending_attempt="att-3"),
                make_case("B-1", phase=Phase.STARTED, source="shop"),
            ],
            [],
        )
        with store.source_read("erp") as read:
            read.triage(
                [("A-1", "k1", "h" * 32), ("A-1", "k2", "h" * 32), ("B-1", "k3", "h" * 32)],
                quiet={Phase.STARTED.value},
            )
            read.triage([("N-1", "k4", "h" * 32), ("A-1", "k5", "x")], quiet={"started"})
            gone, settling = read.unseen()

        assert (gone, settling) == (2, ["A-3"])

    def test_release_clears_every_hold_note(self, store):
        """A hold whose pause action was refused leaves a note and a time; release clears
        both, so a later hold sends the action again."""
        note = "the hold action 'Pause' was refused by Kravia (400): pause the case in Kravia"
        store.write_batch(
            [make_case("A-1", phase=Phase.STARTED, attention=note, hold_action_at=T0)], []
        )
        store.hold("A-1", reason="disputed", by="ops", now=T0)

        assert store.release("A-1")

        case = store.load_cases("erp")["A-1"]
        assert (case.attention, case.hold_action_at) == (None, None)
        assert store.holds() == {}

    @pytest.mark.parametrize(("term", "found"), [("A-1", ["A-1"]), ("1", ["A-1"]), ("77", ["A-2"])])
    def test_find_cases(self, store, term, found):
        """find_cases matches the accountingInvoiceId, the invoice number or the Kravia id."""
        store.write_batch([make_case("A-1"), make_case("A-2", kravia_id=77)], [])

        assert [case.accounting_invoice_id for case in store.find_cases(term)] == found

    def test_cases_in(self, store):
        """cases_in lists the cases in the given phases, most recently updated first."""
        store.write_batch(
            [
                make_case("A-1", phase=Phase.REJECTED, updated_at=T0),
                make_case("A-2", phase=Phase.NEEDS_REVIEW, updated_at=T0 + TTL),
                make_case("A-3", phase=Phase.STARTED),
            ],
            [],
        )

        found = store.cases_in([Phase.REJECTED, Phase.NEEDS_REVIEW])

        assert [case.accounting_invoice_id for case in found] == ["A-2", "A-1"]


class TestLease:
    def test_acquire(self, store):
        """acquire_lease records this store as holder until now + ttl, at epoch 1."""
        holder = store.acquire_lease(ttl=TTL, now=T0)

        lease = store.current_lease()
        assert lease is not None
        assert holder == f"pid {os.getpid()} on {socket.gethostname()}"
        assert lease["holder"] == holder
        assert lease["pid"] == os.getpid()
        assert lease["holder_id"] == store.holder_id
        assert lease["epoch"] == 1
        assert lease["expires_at"] == T0 + TTL

    def test_reacquire_own_keeps_the_epoch(self, store):
        """A store may take its own lease again: renewed, at the same epoch."""
        store.acquire_lease(ttl=TTL, now=T0)
        store.acquire_lease(ttl=TTL, now=T0 + timedelta(seconds=10))

        lease = store.current_lease()
        assert lease is not None
        assert lease["expires_at"] == T0 + timedelta(seconds=10) + TTL
        assert lease["epoch"] == 1

    @pytest.mark.parametrize(
        ("host_key", "pid", "started"),
        [
            ("other-host.example|boot|pid:[1]", os.getpid(), None),
            ("other-host.example|boot|pid:[1]", 1, "5"),
            (None, os.getppid(), None),
            (None, os.getpid(), None),  # this very process, another store (holder)
        ],
        ids=["another-host", "another-host-pid-1", "our-parent", "this-process"],
    )
    def test_held_by_another(self, store, host_key, pid, started):
        """A live (or unknowable) lease of another holder raises LeaseHeldError naming it."""
        put_lease(store, host_key=host_key, pid=pid, started=started, expires_at=T0 + TTL)

        with pytest.raises(LeaseHeldError) as info:
            store.acquire_lease(ttl=TTL, now=T0)

        assert f"pid {pid} on" in info.value.holder
        assert f"pid {pid} on" in str(info.value)
        lease = store.current_lease()
        assert lease is not None
        assert lease["holder_id"] == "someone-else"

    def test_same_hostname_and_pid_in_another_container_is_waited_for(self, store):
        """Two containers with one hostname both run their process as PID 1: a lease whose
        holder has our hostname and PID but another PID namespace cannot be judged dead, so it
        is waited for (not shared, not taken)."""
        me = this_process()
        other_namespace = f"{me.host}|{me.host_key.split('|')[1]}|pid:[4026599999]"
        put_lease(
            store, host_key=other_namespace, pid=me.pid, started=me.started, expires_at=T0 + TTL
        )

        with pytest.raises(LeaseHeldError):
            store.acquire_lease(ttl=TTL, now=T0)

    def test_pid_reused_by_a_later_process_is_taken_over(self, store):
        """A lease whose holder's PID now belongs to another process (another start time) is
        taken over at once."""
        me = this_process()
        put_lease(store, host_key=me.host_key, pid=os.getppid(), started="1", expires_at=T0 + TTL)

        store.acquire_lease(ttl=TTL, now=T0)

        assert store.current_lease()["holder_id"] == store.holder_id

    def test_expired_taken_over_at_the_next_epoch(self, store):
        """An expired lease of another host is taken over, and the epoch grows."""
        put_lease(store, expires_at=T0 - timedelta(seconds=1), epoch=41)

        holder = store.acquire_lease(ttl=TTL, now=T0)

        lease = store.current_lease()
        assert lease is not None
        assert lease["holder"] == holder
        assert lease["pid"] == os.getpid()
        assert lease["epoch"] == 42

    def test_dead_pid_on_this_host_taken_over(self, store):
        """An unexpired lease of a process of this machine that no longer exists is taken
        over at once."""
        me = this_process()
        put_lease(store, host_key=me.host_key, pid=dead_pid(), expires_at=T0 + TTL)

        store.acquire_lease(ttl=TTL, now=T0)

        lease = store.current_lease()
        assert lease is not None
        assert lease["pid"] == os.getpid()

    def test_release_keeps_the_epoch(self, store, db_path):
        """release_lease gives the lease up; its row stays with its epoch, so the next holder
        takes it at a higher one."""
        store.acquire_lease(ttl=TTL, now=T0)

        store.release_lease()

        assert store.current_lease() is None
        other = StateStore(db_path)
        try:
            other.acquire_lease(ttl=TTL, now=T0)
            assert other.current_lease()["epoch"] == 2
        finally:
            other.close()

    def test_release_leaves_others(self, store):
        """release_lease never removes a lease another holder has."""
        put_lease(store, expires_at=T0 + TTL)

        store.release_lease()

        assert store.current_lease() is not None

    def test_renew_extends_own_only(self, store, db_path):
        """renew_lease moves this store's expiry; once another took the lease over, it says
        so and changes nothing."""
        store.acquire_lease(ttl=TTL, now=T0)
        assert store.renew_lease(ttl=TTL, now=T0 + TTL)
        assert store.current_lease()["expires_at"] == T0 + 2 * TTL

        other = StateStore(db_path)
        try:
            other.acquire_lease(ttl=TTL, now=T0 + 3 * TTL)  # ours expired
            assert not store.renew_lease(ttl=TTL, now=T0 + 3 * TTL)
            assert other.current_lease()["holder_id"] == other.holder_id
        finally:
            other.close()

    def test_force_unlock_of_a_holder_elsewhere(self, store):
        """force_unlock removes a lease whose holder cannot be checked from here, and returns
        it; None when nobody holds the lease."""
        put_lease(store, host_key="other-host.example|b|n", pid=42, expires_at=T0 + TTL)

        removed = store.force_unlock()

        assert removed is not None
        assert removed["holder"] == "pid 42 on other-host.example"
        assert store.current_lease() is None
        assert store.force_unlock() is None
        store.acquire_lease(ttl=TTL, now=T0)

    def test_force_unlock_refuses_a_live_holder_on_this_machine(self, store):
        """force_unlock refuses while the holder runs on this machine (here: a live parent
        process), naming it; the lease stays."""
        me = this_process()
        put_lease(
            store,
            host_key=me.host_key,
            pid=os.getppid(),
            started=start_time(os.getppid()),
            expires_at=T0 + TTL,
        )

        with pytest.raises(LeaseHeldError, match=f"pid {os.getppid()}"):
            store.force_unlock()

        assert store.current_lease() is not None

    def test_second_store_on_same_file(self, store, db_path):
        """A second StateStore on the file sees the lease the first took."""
        store.acquire_lease(ttl=TTL, now=T0)

        other = StateStore(db_path)
        try:
            lease = other.current_lease()
        finally:
            other.close()

        assert lease is not None
        assert lease["pid"] == os.getpid()


class TestFencing:
    def test_a_deposed_writer_cannot_write_an_intent(self, store, db_path):
        """Once another store took the lease over, this store writes no case row: its intents
        are refused (FENCED, not journaled) and its outcomes, facts, reach only the journal
        (the row is the new holder's to settle)."""
        store.acquire_lease(ttl=TTL, now=T0)
        store.write_batch([make_case("A-2", phase=Phase.REGISTERING, pending_attempt="a")], [])
        registering = store.load_cases("erp")["A-2"]
        other = StateStore(db_path)
        try:
            other.acquire_lease(ttl=TTL, now=T0 + 2 * TTL)

            new, outcome = store.commit_case_writes(
                [
                    CaseWrite(make_case("A-1", phase=Phase.REGISTERING), intent(), intent=True),
                    CaseWrite(
                        replace(registering, phase=Phase.REGISTERED, kravia_id=9),
                        intent("A-2", "a", kind="outcome", outcome="ok"),
                    ),
                ]
            )
        finally:
            other.close()

        assert new.status is WriteStatus.FENCED
        assert outcome.status is WriteStatus.FENCED
        assert "A-1" not in store.load_cases("erp")
        assert store.load_cases("erp")["A-2"].kravia_id is None
        assert [row["kind"] for row in store.journal_for("A-1")] == []
        assert [row["kind"] for row in store.journal_for("A-2")] == ["outcome"]

    @pytest.mark.parametrize(
        "write",
        [
            lambda s: s.set_case_notes([("A-1", {"attention": "x"})]),
            lambda s: s.set_meta("k", "v"),
            lambda s: s.write_payments([], [], [s.load_cases("erp")["A-1"]]),
            lambda s: s.sync_quarantine("erp", {"r": entry("r")}, complete=True, now=T0),
        ],
    )
    def test_every_engine_write_is_fenced(self, store, db_path, write):
        """Notes, bookkeeping, the read's case updates and the quarantine are refused with
        LeaseLostError once the lease was taken over: a deposed writer writes nothing."""
        store.write_batch([make_case("A-1")], [])
        store.acquire_lease(ttl=TTL, now=T0)
        other = StateStore(db_path)
        try:
            other.acquire_lease(ttl=TTL, now=T0 + 2 * TTL)
            with pytest.raises(LeaseLostError):
                write(store)
        finally:
            other.close()

    def test_a_store_that_released_the_lease_is_fenced(self, store):
        """After giving the lease up, a store's intents are refused like a deposed writer's."""
        store.acquire_lease(ttl=TTL, now=T0)
        store.release_lease()

        (result,) = store.commit_case_writes([CaseWrite(make_case(), intent(), intent=True)])

        assert result.status is WriteStatus.FENCED


class TestCompareAndSet:
    def test_a_stale_write_is_refused(self, store):
        """A case write names the revision it read: after another write moved the row on, the
        stale one is refused and changes nothing (its intent is not journaled)."""
        store.write_batch([make_case()], [])
        read = store.load_cases("erp")["A-1"]
        (first,) = store.commit_case_writes([CaseWrite(replace(read, phase=Phase.REGISTERING))])

        (stale,) = store.commit_case_writes(
            [CaseWrite(replace(read, phase=Phase.REJECTED), intent(), intent=True)]
        )

        assert first.status is WriteStatus.OK
        assert first.case.revision == read.revision + 1
        assert stale.status is WriteStatus.CONFLICT
        assert store.load_cases("erp")["A-1"].phase is Phase.REGISTERING
        assert store.journal_for("A-1") == []

    def test_a_new_case_is_inserted_once(self, store):
        """A case never stored is inserted by its first write; a second first write (another
        writer's) is a conflict."""
        (first,) = store.commit_case_writes([CaseWrite(make_case())])
        (second,) = store.commit_case_writes([CaseWrite(make_case(phase=Phase.REJECTED))])

        assert (first.status, second.status) == (WriteStatus.OK, WriteStatus.CONFLICT)
        assert store.load_cases("erp")["A-1"].phase is Phase.NEW

    @pytest.mark.parametrize("held", ["A-1", "1"])
    def test_an_intent_for_a_held_invoice_is_refused(self, store, held):
        """A hold by accountingInvoiceId or invoice number, placed at any time before the
        intent's transaction, refuses it with the hold's reason."""
        store.hold(held, reason="disputed", by="ops", now=T0)

        (result,) = store.commit_case_writes(
            [CaseWrite(make_case(), intent(), intent=True, holds=("A-1", "1"))]
        )

        assert result.status is WriteStatus.HELD
        assert "disputed" in result.reason
        assert store.load_cases("erp") == {}

    def test_notes_survive_a_case_write(self, store):
        """A case write leaves the columns others own (status pulled back, approval, notes)
        as they are, even from a stale copy."""
        store.write_batch([make_case(phase=Phase.REGISTERED, kravia_id=3)], [])
        read = store.load_cases("erp")["A-1"]
        store.approve(["A-1"], now=T0)
        store.set_case_notes([("A-1", {"attention": "check it"})])

        store.commit_case_writes([CaseWrite(replace(read, phase=Phase.STARTING))])

        stored = store.load_cases("erp")["A-1"]
        assert stored.phase is Phase.STARTING
        assert stored.approved_at == T0
        assert stored.attention == "check it"

    def test_a_read_update_over_a_moved_case_is_refused_whole(self, store):
        """The read's writes (payments and cases) are one transaction: a case moved on since
        it was read (an operator resolved it) refuses them all."""
        store.write_batch([make_case()], [])
        read = store.load_cases("erp")["A-1"]
        store.commit_case_writes([CaseWrite(replace(read, phase=Phase.NEEDS_REVIEW))])

        with pytest.raises(StateConflictError, match="A-1"):
            store.write_payments([], [], [replace(read, amount=Decimal(5))])

        assert store.load_cases("erp")["A-1"].amount is None


def entry(key: str, reason: str = "postal_code '12' is not…", **changes: str) -> QuarantineEntry:
    values = {"record_key": key, "kind": "invalid", "field": "postal_code", "reason": reason}
    return QuarantineEntry(**{**values, **changes})  # type: ignore[arg-type]


class TestQuarantine:
    def test_insert(self, store):
        """New entries are stored with first and last seen time."""
        store.sync_quarantine("erp", {"r1": entry("r1")}, complete=True, now=T0)

        (row,) = store.quarantined()
        assert row["source"] == "erp"
        assert row["record_key"] == "r1"
        assert row["field"] == "postal_code"
        assert row["first_seen_at"] == T0
        assert row["last_seen_at"] == T0
        assert store.load_quarantine("erp") == {"r1": entry("r1")}

    def test_update_keeps_first_seen(self, store):
        """A changed entry is updated in place; its first-seen time stays."""
        store.sync_quarantine("erp", {"r1": entry("r1")}, complete=True, now=T0)
        changed = entry("r1", "amount: not an amount", field="amount")

        store.sync_quarantine("erp", {"r1": changed}, complete=True, now=T0 + TTL)

        (row,) = store.quarantined()
        assert (row["field"], row["reason"]) == ("amount", "amount: not an amount")
        assert row["first_seen_at"] == T0
        assert row["last_seen_at"] == T0 + TTL

    def test_complete_read_deletes_resolved(self, store):
        """After a complete read, entries no longer quarantined are forgotten."""
        store.sync_quarantine("erp", {"r1": entry("r1"), "r2": entry("r2")}, complete=True, now=T0)

        store.sync_quarantine("erp", {"r2": entry("r2")}, complete=True, now=T0 + TTL)

        assert set(store.load_quarantine("erp")) == {"r2"}

    def test_incomplete_read_keeps_all(self, store):
        """After an incomplete read, nothing is forgotten."""
        store.sync_quarantine("erp", {"r1": entry("r1"), "r2": entry("r2")}, complete=True, now=T0)

        store.sync_quarantine("erp", {}, complete=False, now=T0 + TTL)

        assert set(store.load_quarantine("erp")) == {"r1", "r2"}

    def test_sources_apart(self, store):
        """One source's complete read never forgets another source's entries."""
        store.sync_quarantine("erp", {"r1": entry("r1")}, complete=True, now=T0)
        store.sync_quarantine("shop", {"r1": entry("r1")}, complete=True, now=T0)

        store.sync_quarantine("erp", {}, complete=True, now=T0 + TTL)

        assert store.load_quarantine("erp") == {}
        assert set(store.load_quarantine("shop")) == {"r1"}

    def test_filter_by_kind(self, store):
        """quarantined(kind) lists only that kind."""
        store.sync_quarantine(
            "erp",
            {"r1": entry("r1"), "r2": entry("r2", kind="waiting", field="due_date")},
            complete=True,
            now=T0,
        )

        assert [row["record_key"] for row in store.quarantined("waiting")] == ["r2"]
        assert [row["record_key"] for row in store.quarantined("invalid")] == ["r1"]


class TestRuns:
    def test_start_and_finish(self, store):
        """A run is recorded as running, then finished with its status and counts."""
        run_id = store.start_run(holder="pid 1 on h", command="reconcile", now=T0)

        (running,) = store.last_runs()
        assert running["id"] == run_id
        assert running["status"] == "running"
        assert running["finished_at"] is None
        assert running["counts"] == {}

        store.finish_run(run_id, status="done", counts={"new": 3, "read": 10}, now=T0 + TTL)

        (finished,) = store.last_runs()
        assert finished["status"] == "done"
        assert finished["counts"] == {"new": 3, "read": 10}
        assert finished["started_at"] == T0
        assert finished["finished_at"] == T0 + TTL
        assert finished["error"] is None

    def test_last_runs_newest_first(self, store):
        """last_runs lists the newest runs first, up to the limit."""
        ids = [store.start_run(holder="h", command=f"c{n}", now=T0) for n in range(4)]

        runs = store.last_runs(limit=3)

        assert [run["id"] for run in runs] == ids[::-1][:3]
        assert len(set(ids)) == 4

    def test_failed_run_error(self, store):
        """A failed run keeps its error text."""
        run_id = store.start_run(holder="h", command="reconcile", now=T0)

        store.finish_run(run_id, status="failed", counts={}, now=T0, error="boom")

        assert store.last_runs()[0]["error"] == "boom"


class TestPayments:
    def test_a_payment_is_begun_once(self, store):
        """Two writers racing to send one payment: only the first moves it to `sending`
        (with its intent); the second is told no and writes nothing."""
        new = PaymentState(
            source="erp",
            payment_id="P-1",
            kind=PaymentKind.PAYMENT,
            paid_on=T0.date(),
            lines=(PaymentLine("A-1", Decimal("10.00")),),
            phase=PaymentPhase.NEW,
            fingerprint="f",
            first_seen_at=T0,
            updated_at=T0,
        )
        store.write_payments([new], [])
        sending = replace(new, phase=PaymentPhase.SENDING, pending_attempt="att-1")

        first = store.begin_payment(sending, intent(attempt="att-1", payment_id="P-1"))
        second = store.begin_payment(
            replace(sending, pending_attempt="att-2"), intent(attempt="att-2", payment_id="P-1")
        )

        assert (first, second) == (True, False)
        assert store.load_payments("erp", ["P-1"])["P-1"].pending_attempt == "att-1"
        assert [e["attempt_id"] for e in store.payment_journal("P-1")] == ["att-1"]


class TestApprove:
    def test_a_number_two_sources_share_is_not_approved_for_both(self, store):
        """`start 5` when two sources each have an invoice 5 approves neither: the operator
        names the accountingInvoiceId."""
        store.write_batch(
            [
                make_case("a-5", invoice_number="5", phase=Phase.DOCUMENTED, kravia_id=1),
                make_case("b-5", invoice_number="5", phase=Phase.DOCUMENTED, kravia_id=2),
            ],
            [],
        )

        approved, refused = store.approve(["5"], now=T0)
        by_id, _ = store.approve(["b-5"], now=T0)

        assert approved == []
        assert "several cases (a-5, b-5)" in refused[0]
        assert by_id == ["b-5"]


class TestDuplicatesInKravia:
    def test_an_invoice_kravia_holds_twice_is_reported(self, store):
        """After a search, an accountingInvoiceId of ours with two Kravia cases is found."""
        store.write_batch([make_case("A-1"), make_case("A-2")], [])
        store.record_mirror(
            [
                MirrorItem(10, "A-1", "1", None, None, None),
                MirrorItem(11, "A-1", "1", None, None, None),
                MirrorItem(12, "A-2", "2", None, None, None),
                MirrorItem(13, "X-9", "9", None, None, None),
                MirrorItem(14, "X-9", "9", None, None, None),  # not ours
            ],
            meta={},
            now=T0,
        )

        assert store.kravia_duplicates() == {"A-1": [10, 11]}


class TestSettlementBookings:
    def test_an_intent_then_its_outcome(self, store):
        """The latest attempt comes back with its latest outcome, times tz-aware."""
        assert store.record_booking_intent(booking_intent(), after=None)
        assert store.last_booking(90001).outcome is None
        lost = replace(booking_intent(), outcome=BookingOutcome.UNKNOWN, outcome_at=T0)
        store.record_booking_outcome(replace(lost, message="answer lost", http_status=502))
        later = T0 + timedelta(minutes=5)
        confirmed = replace(lost, outcome=BookingOutcome.BOOKED, outcome_at=later)
        store.record_booking_outcome(replace(confirmed, booked_by="ola"))

        back = store.last_booking(90001)

        assert back == confirmed  # the intent's person; the latest outcome
        assert back.at.tzinfo is not None
        assert back.unsettled is False

    def test_the_latest_intent_of_each_settlement(self, store):
        store.record_booking_intent(booking_intent("b-1"), after=None)
        store.record_booking_intent(booking_intent("b-2", reference="BILAG 8"), after="b-1")
        store.record_booking_intent(booking_intent("c-1", settlement_id=90002), after=None)

        latest = store.last_bookings([90001, 90002, 90003])

        assert {key: value.attempt_id for key, value in latest.items()} == {
            90001: "b-2",
            90002: "c-1",
        }
        assert latest[90001].reference == "BILAG 8"
        assert latest[90001].unsettled is True

    def test_an_intent_is_refused_once_another_booking_began(self, store):
        """Written only over the latest attempt the decision to send was taken on."""
        assert store.record_booking_intent(booking_intent("b-1"), after=None)
        assert not store.record_booking_intent(booking_intent("b-2"), after=None)
        assert not store.record_booking_intent(booking_intent("b-2"), after="b-0")
        assert store.last_booking(90001).attempt_id == "b-1"
        assert store.record_booking_intent(booking_intent("b-2"), after="b-1")

    def test_outcomes_need_what_and_when(self, store):
        with pytest.raises(ValueError, match="outcome"):
            store.record_booking_outcome(booking_intent())
        with pytest.raises(ValueError, match="before its outcome"):
            store.record_booking_intent(
                replace(booking_intent(), outcome=BookingOutcome.BOOKED, outcome_at=T0),
                after=None,
            )

    def test_cases_by_kravia_id(self, store):
        """Only cases the store knows (with a Kravia id) are found: the rest are not ours."""
        store.write_batch(
            [make_case("A-1", kravia_id=5), make_case("A-2", kravia_id=6), make_case("A-3")], []
        )

        found = store.cases_by_kravia_id([5, 6, 7])

        assert {key: case.accounting_invoice_id for key, case in found.items()} == {
            5: "A-1",
            6: "A-2",
        }
