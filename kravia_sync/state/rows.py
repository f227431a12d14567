"""How rows are written and read: the columns of the tables, the SQL the tables share, and times,
amounts and flags to and from SQLite (each refused before it is written when of the wrong
type)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import fields, replace
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from kravia_sync.lifecycle import CaseState, Phase
from kravia_sync.payments import (
    PaymentState,
)
from kravia_sync.state.records import JournalEntry
from kravia_sync.state.stored import utc_text

__all__ = [
    "BUSY_TIMEOUT_SECONDS",
    "CASE_COLUMNS",
    "CASE_FIELDS",
    "DECIMAL_COLUMNS",
    "DRIVER_FIELDS",
    "DRIVER_UPDATE_SQL",
    "FLAG_COLUMNS",
    "INSERT_JOURNAL_SQL",
    "NOTE_FIELDS",
    "PAYMENT_ASSIGNMENTS",
    "PAYMENT_COLUMNS",
    "TIME_COLUMNS",
    "UPSERT_META_SQL",
    "WRITER_LEASE",
    "assignments_sql",
    "bound_values",
    "cas_sql",
    "cas_write",
    "case_row",
    "connect",
    "decimal_or_none",
    "decoded_row",
    "decoder",
    "id_chunks",
    "insert_sql",
    "journal_row",
    "payment_values",
    "time_or_none",
    "write_note_row",
]

# Read when a connection is made (tests shorten it).
BUSY_TIMEOUT_SECONDS = 30  # how long a write waits for another writer's lock


# How columns are stored, by name (the same name is the same kind in every table; the schema
# test holds these against `kravia_sync.state.schema`): times as UTC ISO text, amounts as text,
# flags as 0/1. Every other column is stored as the driver gives it back.
TIME_COLUMNS = frozenset(
    {
        "acquired_at",
        "approved_at",
        "at",
        "changed_at",
        "expires_at",
        "finished_at",
        "first_seen_at",
        "held_at",
        "hold_action_at",
        "last_seen_at",
        "next_attempt_at",
        "pending_since",
        "recorded_at",
        "registered_at",
        "seen_at",
        "settle_after",
        "started_at",
        "status_at",
        "updated_at",
    }
)


DECIMAL_COLUMNS = frozenset(
    {"amount", "amount_floor", "kravia_remaining", "payouts_accounted", "remaining"}
)


FLAG_COLUMNS = frozenset({"derived", "has_document"})


CASE_FIELDS = tuple(f.name for f in fields(CaseState))


WRITER_LEASE = "writer"


_JOURNAL_FIELDS = tuple(f.name for f in fields(JournalEntry))


# Column names come from our own dataclasses, never from input: the values are bound.
CASE_COLUMNS = ", ".join(CASE_FIELDS)


_INSERT_CASE_SQL = (
    f"INSERT INTO cases ({CASE_COLUMNS}) VALUES ({', '.join('?' for _ in CASE_FIELDS)}) "  # noqa: S608
    "ON CONFLICT (accounting_invoice_id) DO NOTHING"
)


# Notes other parts of the engine and operators write column by column (status pulled back,
# holds, approvals, payouts): a case write never overwrites them from its own copy.
NOTE_FIELDS = frozenset(
    {
        "kravia_status",
        "kravia_remaining",
        "status_at",
        "hold_action_at",
        "payouts_accounted",
        "approved_at",
    }
)


# The engine's case writes (the lifecycle) leave the attention note alone too; the diff owns it.
DRIVER_FIELDS = tuple(f for f in CASE_FIELDS[1:] if f not in NOTE_FIELDS | {"attention"})


def cas_sql(columns: tuple[str, ...]) -> str:
    assignments = ", ".join(f"{name} = ?" for name in columns)
    return (
        f"UPDATE cases SET {assignments} "  # noqa: S608 - our own column names
        "WHERE accounting_invoice_id = ? AND revision = ?"
    )


DRIVER_UPDATE_SQL = cas_sql(DRIVER_FIELDS)


_JOURNAL_COLUMNS = ", ".join(_JOURNAL_FIELDS)


INSERT_JOURNAL_SQL = (
    f"INSERT INTO journal ({_JOURNAL_COLUMNS}) VALUES ({', '.join('?' for _ in _JOURNAL_FIELDS)})"  # noqa: S608
)


def insert_sql(table: str, names: Iterable[str], *, upsert_on: tuple[str, ...] = ()) -> str:
    """An INSERT of named values (`:name`) into `table`; with `upsert_on`, one that updates the
    other columns of a row with that key instead. Table and column names are our own."""
    listed = list(names)
    sql = (
        f"INSERT INTO {table} ({', '.join(listed)}) "  # noqa: S608 - our own names
        f"VALUES ({', '.join(f':{name}' for name in listed)})"
    )
    if upsert_on:
        updates = ", ".join(f"{name} = excluded.{name}" for name in listed if name not in upsert_on)
        sql += f" ON CONFLICT ({', '.join(upsert_on)}) DO UPDATE SET {updates}"
    return sql


def assignments_sql(names: Iterable[str]) -> str:
    return ", ".join(f"{name} = :{name}" for name in names)


# The columns of `payments`, as `payment_values` gives them.
PAYMENT_COLUMNS = (
    "source",
    "payment_id",
    "kind",
    "paid_on",
    "lines",
    "phase",
    "fingerprint",
    "first_seen_at",
    "updated_at",
    "description",
    "derived",
    "pending_attempt",
    "pending_since",
    "attempts",
    "next_attempt_at",
    "note",
    "settle_after",
)


PAYMENT_ASSIGNMENTS = assignments_sql(PAYMENT_COLUMNS[2:])


UPSERT_META_SQL = insert_sql("meta", ("key", "value"), upsert_on=("key",))


# Columns of a case that are notes, written on their own (`StateStore.set_case_notes`).
_NOTE_COLUMNS = frozenset({"attention", "hold_action_at", "payouts_accounted", "updated_at"})


def write_note_row(
    connection: sqlite3.Connection | sqlite3.Cursor, aid: str, values: Mapping[str, Any]
) -> None:
    unknown = set(values) - _NOTE_COLUMNS
    if unknown:
        raise ValueError(f"not a note column: {sorted(unknown)}")
    if not values:
        return
    assignments = ", ".join(f"{name} = ?" for name in values)
    connection.execute(
        f"UPDATE cases SET {assignments} WHERE accounting_invoice_id = ?",  # noqa: S608 - checked column names
        (*bound_values(values).values(), aid),
    )


def id_chunks(ids: Iterable[str], size: int = 500) -> Iterator[list[str]]:
    """`ids` in lists of `size`, to stay below SQLite's limit on bound variables."""
    wanted = list(ids)
    for start in range(0, len(wanted), size):
        yield wanted[start : start + size]


def _db_value(value: object) -> object:
    """A value as the driver stores it: the same encoding `UTCDateTime` and the enums use."""
    if isinstance(value, datetime):
        return utc_text(value)
    if isinstance(value, Phase):
        return value.value
    if isinstance(value, Decimal):
        return str(value)
    return value


def decimal_or_none(value: object) -> Decimal | None:
    return None if value is None else Decimal(str(value))


def case_row(case: CaseState, names: Iterable[str]) -> tuple[object, ...]:
    return tuple(_db_value(getattr(case, name)) for name in names)


def journal_row(entry: JournalEntry) -> tuple[object, ...]:
    return tuple(_db_value(getattr(entry, name)) for name in _JOURNAL_FIELDS)


def cas_write(
    connection: sqlite3.Connection | sqlite3.Cursor,
    case: CaseState,
    names: tuple[str, ...],
    update_sql: str,
) -> CaseState | None:
    """Write `case` as the revision after the one it carries (0: insert a new row), only if
    the stored row is still at that revision; the case as stored, or None (a conflict)."""
    stored = replace(case, revision=case.revision + 1)
    if case.revision == 0:
        result = connection.execute(_INSERT_CASE_SQL, case_row(stored, CASE_FIELDS))
    else:
        values = (*case_row(stored, names), case.accounting_invoice_id, case.revision)
        result = connection.execute(update_sql, values)
    return stored if result.rowcount == 1 else None


def decoder(name: str) -> Callable[[Any], Any]:
    """How a stored value of column `name` comes back as the value the code works with."""
    if name in TIME_COLUMNS:
        return time_or_none
    if name in DECIMAL_COLUMNS:
        return decimal_or_none
    if name in FLAG_COLUMNS:
        return _flag_or_none
    return _as_stored


def time_or_none(value: object) -> datetime | None:
    return None if value is None else datetime.fromisoformat(str(value))


def _flag_or_none(value: object) -> bool | None:
    return None if value is None else bool(value)


def _as_stored(value: object) -> object:
    return value


def decoded_row(row: sqlite3.Row) -> dict[str, Any]:
    """A row as a dict of the values the code works with (times, amounts, flags decoded)."""
    return {name: decoder(name)(row[name]) for name in row.keys()}  # noqa: SIM118 - a Row


def payment_values(payment: PaymentState) -> dict[str, Any]:
    return {
        "source": payment.source,
        "payment_id": payment.payment_id,
        "kind": payment.kind.value,
        "paid_on": payment.paid_on.isoformat(),
        "lines": json.dumps(
            [
                {
                    "accounting_invoice_id": line.accounting_invoice_id,
                    "amount": str(line.amount),
                    "sent": None if line.sent is None else str(line.sent),
                    "left": None if line.left_before is None else str(line.left_before),
                }
                for line in payment.lines
            ]
        ),
        "phase": payment.phase.value,
        "fingerprint": payment.fingerprint,
        "first_seen_at": payment.first_seen_at,
        "updated_at": payment.updated_at,
        "description": payment.description,
        "derived": payment.derived,
        "pending_attempt": payment.pending_attempt,
        "pending_since": payment.pending_since,
        "attempts": payment.attempts,
        "next_attempt_at": payment.next_attempt_at,
        "note": payment.note,
        "settle_after": payment.settle_after,
    }


def bound_values(values: Mapping[str, Any]) -> dict[str, Any]:
    """Named values as the driver stores them (see `_db_value`), each checked against the
    kind its column name stands for: a time, an amount or a flag of another type is refused
    (`TypeError`) rather than stored in a form no read could decode."""
    return {name: _db_value(_checked(name, value)) for name, value in values.items()}


def _checked(name: str, value: object) -> object:
    if value is None:
        return value
    if name in TIME_COLUMNS and not isinstance(value, datetime):
        raise TypeError(f"{name} is a time, not {type(value).__name__}: {value!r}")
    if name in DECIMAL_COLUMNS and not isinstance(value, Decimal):
        raise TypeError(f"{name} is an amount (Decimal), not {type(value).__name__}: {value!r}")
    if name in FLAG_COLUMNS and not isinstance(value, bool):
        raise TypeError(f"{name} is a flag (bool), not {type(value).__name__}: {value!r}")
    return value


def connect(path: Path, *, rows: bool = True) -> sqlite3.Connection:
    """A connection to the state database: autocommit (we issue BEGIN ourselves), WAL, every
    commit on disk before it returns, waiting up to 30 s for another writer's lock; with
    `rows`, rows readable by column name."""
    connection = sqlite3.connect(
        path, timeout=BUSY_TIMEOUT_SECONDS, isolation_level=None, check_same_thread=False
    )
    try:
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=FULL")
        connection.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_SECONDS * 1000}")
    except BaseException:
        connection.close()
        raise
    if rows:
        connection.row_factory = sqlite3.Row
    return connection
