"""The state database itself: connections, transactions, the writer's fence, the schema's
creation and its migrations.

SQLite (WAL, `synchronous=FULL`, `BEGIN IMMEDIATE` for writes), through the sqlite3 driver and
plain SQL. The tables are defined once, as sqlmodel models in `kravia_sync.state.schema`, which
is loaded only to create a new state database or migrate an older one: a pass never imports
SQLAlchemy for its state. The reads and writes of each group of tables are in the classes built
on `Database` (`case_table`, `payment_table`, `operator_tables`, `kravia_tables`, `run_tables`,
`payout_tables`), which `kravia_sync.state.store.StateStore` puts together.
"""

from __future__ import annotations

import sqlite3
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Self

from kravia_sync.state.errors import LeaseLostError, SchemaError, state_errors
from kravia_sync.state.rows import UPSERT_META_SQL, WRITER_LEASE, connect
from kravia_sync.state.stored import utc_text

__all__ = ["SCHEMA_VERSION", "Database"]


SCHEMA_VERSION = 6


_IDLE_CONNECTIONS = 4  # connections kept open for the next read or write


# Columns schema 2 added to `cases`, for the migration from schema 1.
_CASES_V2_COLUMNS = (
    "amount VARCHAR(40)",
    "payouts_accounted VARCHAR(40)",
    "attention VARCHAR",
    "approved_at VARCHAR(40)",
    "kravia_status VARCHAR",
    "kravia_remaining VARCHAR(40)",
    "status_at VARCHAR(40)",
    "hold_action_at VARCHAR(40)",
    "registered_at VARCHAR(40)",
)


_FENCE_SQL = "SELECT holder_id, epoch FROM lease WHERE name = ?"


_LEASE_LOST = (
    "the writer lease was taken over by another process: this one stops writing and sending "
    "(raise state.lease_seconds if passes stall this long)"
)


def _create_statements(*tables: str) -> list[str]:
    """The statements creating these tables (all, when none is named), from the one schema.
    Loaded only here: a new or older state database is the only time it is needed."""
    from kravia_sync.state.schema import create_statements  # noqa: PLC0415 - see the docstring

    return create_statements(*tables)


def _create_missing_tables(connection: sqlite3.Connection) -> None:
    """Every table of the schema the database does not have yet, created empty."""
    from kravia_sync.state.schema import TABLES  # noqa: PLC0415 - see `_create_statements`

    tables = {name for (name,) in connection.execute("SELECT name FROM sqlite_master")}
    for name in (name for name in TABLES if name not in tables):
        for statement in _create_statements(name):
            connection.execute(statement)


def _create_missing_indexes(connection: sqlite3.Connection) -> None:
    """Every index of the schema the database does not have yet."""
    existing = {name for (name,) in connection.execute("SELECT name FROM sqlite_master")}
    for statement in _create_statements():
        words = statement.removeprefix("CREATE UNIQUE ").removeprefix("CREATE ").split()
        if words[0] == "INDEX" and words[1] not in existing:
            connection.execute(statement)


@contextmanager
def _committed(connection: sqlite3.Connection, begin: str) -> Iterator[None]:
    """A transaction on `connection` (`begin` opens it): committed when the block ends, rolled
    back when it raises."""
    connection.execute(begin)
    try:
        yield
        connection.execute("COMMIT")
    except BaseException:
        if connection.in_transaction:
            connection.execute("ROLLBACK")
        raise


class Database:
    """One SQLite state database. Reads may come from any thread; writes are short
    transactions.

    Each store is its own lease holder (a random `holder_id`). Once it has taken the writer
    lease, every write the engine makes checks, in its transaction, that the lease is still
    this store's at the epoch it took it at (a fence): a writer whose lease another process
    took over cannot write or send anything more."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        # Connections for reads and short writes, one thread at a time each.
        self._pool_lock = threading.Lock()
        self._idle: list[sqlite3.Connection] = []
        self._closed = False
        # The hot write path keeps one driver connection (used by one thread at a time).
        self._batch_lock = threading.Lock()
        self._batch_connection: sqlite3.Connection | None = None
        self._lookup_lock = threading.Lock()
        self._lookup_connection: sqlite3.Connection | None = None
        self.holder_id = uuid.uuid4().hex
        self._epoch: int | None = None  # the lease's epoch when this store took it
        try:
            self._check_schema()
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        with self._batch_lock:
            if self._batch_connection is not None:
                self._batch_connection.close()
                self._batch_connection = None
        with self._lookup_lock:
            if self._lookup_connection is not None:
                self._lookup_connection.close()
                self._lookup_connection = None
        with self._pool_lock:
            idle, self._idle = self._idle, []
            self._closed = True
        for connection in idle:
            connection.close()

    @contextmanager
    def _transaction(self, begin: str) -> Iterator[sqlite3.Connection]:
        """A connection of the pool in a transaction: committed when the block ends, rolled
        back when it raises."""
        with self._pool_lock:
            connection = self._idle.pop() if self._idle else None
        with state_errors(self.path):
            if connection is None:
                connection = connect(self.path)
            try:
                with _committed(connection, begin):
                    yield connection
            except BaseException:
                connection.close()
                raise
        with self._pool_lock:
            keep = not self._closed and len(self._idle) < _IDLE_CONNECTIONS
            if keep:
                self._idle.append(connection)
        if not keep:
            connection.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._transaction("BEGIN IMMEDIATE") as connection:
            yield connection

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        with self._transaction("BEGIN") as connection:
            yield connection

    @contextmanager
    def _fenced_write(self) -> Iterator[sqlite3.Connection]:
        """A write transaction of the engine: refused (`LeaseLostError`, nothing written) when
        this store took the writer lease and it is no longer ours."""
        with self._write() as connection:
            if not self._fence_holds(connection):
                raise LeaseLostError(_LEASE_LOST)
            yield connection

    def _fence_holds(self, connection: sqlite3.Connection | sqlite3.Cursor) -> bool:
        """Whether the writer lease is still this store's, read inside the caller's
        transaction. A store that never took the lease (an operator command, a test) is not
        fenced."""
        if self._epoch is None:
            return True
        row = connection.execute(_FENCE_SQL, (WRITER_LEASE,)).fetchone()
        return row is not None and (row[0], row[1]) == (self.holder_id, self._epoch)

    def _check_schema(self) -> None:
        with self._write() as connection:
            tables = {
                name
                for (name,) in connection.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'table' "
                    "AND name NOT LIKE 'sqlite%'"
                )
            }
            if not tables:
                for statement in _create_statements():
                    connection.execute(statement)
                connection.execute(
                    "INSERT INTO meta (key, value) VALUES ('schema_version', ?)",
                    (str(SCHEMA_VERSION),),
                )
                return
            if "meta" not in tables:
                raise SchemaError(
                    f"{self.path} is not a kravia-sync state database (it has no schema version)"
                )
            row = connection.execute(
                "SELECT value FROM meta WHERE key = 'schema_version'"
            ).fetchone()
            found = None if row is None else row[0]
            if not isinstance(found, str) or not found.isdigit() or int(found) < 1:
                raise SchemaError(f"{self.path} has an unknown schema version {found!r}")
            version = int(found)
            if version > SCHEMA_VERSION:
                raise SchemaError(
                    f"{self.path} has schema version {version}, newer than this kravia-sync "
                    f"understands ({SCHEMA_VERSION}): upgrade kravia-sync, do not downgrade"
                )
            steps = (
                self._migrate_1_to_2,
                self._migrate_2_to_3,
                self._migrate_3_to_4,
                self._migrate_4_to_5,
                self._migrate_5_to_6,
            )
            for migrate in steps[version - 1 :]:  # each step sets the version it reaches
                migrate(connection)

    @staticmethod
    def _migrate_1_to_2(connection: sqlite3.Connection) -> None:
        """Schema 2 keeps cases in step after registration: new case columns, payments and
        holds. Existing rows keep their values; the new columns start empty."""
        for column in _CASES_V2_COLUMNS:
            connection.execute(f"ALTER TABLE cases ADD COLUMN {column}")
        # Every record is validated once more, so each case learns its amount (a later drop
        # in it is money paid) instead of waiting for its first change.
        connection.execute("UPDATE cases SET record_hash = ''")
        connection.execute("ALTER TABLE journal ADD COLUMN payment_id VARCHAR")
        connection.execute("CREATE INDEX ix_journal_payment_id ON journal (payment_id)")
        for statement in _create_statements("payments", "holds"):
            connection.execute(statement)
        connection.execute("UPDATE meta SET value = '2' WHERE key = 'schema_version'")

    @staticmethod
    def _migrate_2_to_3(connection: sqlite3.Connection) -> None:
        """Schema 3 fences writers and mirrors Kravia: a revision per case row (compare-and-
        set), a holder id and epoch on the lease, and the table of Kravia's cases (filled from
        scratch by the next pass that registers or pulls back statuses, which replaces the
        old status cursor). Refused while an older kravia-sync holds an unexpired lease: it
        would go on writing unfenced."""
        live = connection.execute("SELECT holder, expires_at FROM lease").fetchall()
        now = utc_text(datetime.now(UTC))
        for holder, expires_at in live:
            if str(expires_at) > now:
                raise SchemaError(
                    f"an older kravia-sync ({holder}) holds this state store's lease until "
                    f"{expires_at}: stop it (or wait for its lease to expire), then run this "
                    "version again"
                )
        for column in (
            "revision INTEGER NOT NULL DEFAULT 1",
            "settle_after VARCHAR(40)",
            "not_kravia_ids VARCHAR",
            "amount_floor VARCHAR(40)",
        ):
            connection.execute(f"ALTER TABLE cases ADD COLUMN {column}")
        for column in (
            "holder_id VARCHAR NOT NULL DEFAULT ''",
            "epoch INTEGER NOT NULL DEFAULT 0",
            "host_key VARCHAR NOT NULL DEFAULT ''",
            "started VARCHAR",
        ):
            connection.execute(f"ALTER TABLE lease ADD COLUMN {column}")
        payment_columns = {row[1] for row in connection.execute("PRAGMA table_info(payments)")}
        if "settle_after" not in payment_columns:  # a table made by the 1→2 step has it
            connection.execute("ALTER TABLE payments ADD COLUMN settle_after VARCHAR(40)")
        # A lease of an older version holds no epoch: it is taken as released.
        connection.execute("DELETE FROM lease")
        for statement in _create_statements("kravia_cases"):
            connection.execute(statement)
        connection.execute("DELETE FROM meta WHERE key = 'status_cursor'")
        connection.execute("UPDATE meta SET value = '3' WHERE key = 'schema_version'")

    @staticmethod
    def _migrate_3_to_4(connection: sqlite3.Connection) -> None:
        """Schema 4 only adds tables (an invoice's other ids, `invoice_aliases`): each one
        missing is created, empty."""
        _create_missing_tables(connection)
        connection.execute("UPDATE meta SET value = '4' WHERE key = 'schema_version'")

    @staticmethod
    def _migrate_4_to_5(connection: sqlite3.Connection) -> None:
        """Schema 5 only adds a table: the journal of settlement bookings (`kravia-sync
        payouts book`), `settlement_bookings`, created empty where missing (the step to 4 may
        have made it already)."""
        _create_missing_tables(connection)
        connection.execute("UPDATE meta SET value = '5' WHERE key = 'schema_version'")

    @staticmethod
    def _migrate_5_to_6(connection: sqlite3.Connection) -> None:
        """Schema 6 only adds an index: the cases with a note, by source (`ix_cases_noted`),
        so that a pass finds the noted cases of a source without reading every case."""
        _create_missing_indexes(connection)
        connection.execute("UPDATE meta SET value = '6' WHERE key = 'schema_version'")

    def schema_version(self) -> int:
        with self._read() as connection:
            (value,) = connection.execute(
                "SELECT value FROM meta WHERE key = 'schema_version'"
            ).fetchone()
        return int(value)

    @contextmanager
    def _batch(self) -> Iterator[sqlite3.Cursor]:
        """A write transaction on the hot path's own driver connection: rows go to the driver
        as plain tuples (every remote call writes twice, so this is kept lean)."""
        with self._batch_lock, state_errors(self.path):
            if self._batch_connection is None:
                self._batch_connection = connect(self.path, rows=False)
            cursor = self._batch_connection.cursor()
            try:
                with _committed(self._batch_connection, "BEGIN IMMEDIATE"):
                    yield cursor
            finally:
                cursor.close()

    def meta(self, key: str) -> str | None:
        with self._read() as connection:
            row = connection.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        """Set a value the engine keeps (fenced)."""
        with self._fenced_write() as connection:
            connection.execute(UPSERT_META_SQL, {"key": key, "value": value})
