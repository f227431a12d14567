"""The local state store: cases, the journal of remote calls, runs, quarantine and the lease.

SQLite (WAL, `synchronous=FULL`, `BEGIN IMMEDIATE` for writes), through the sqlite3 driver and
plain SQL. The tables are defined once, as sqlmodel models in `kravia_sync.state.schema`, which is
loaded only to create a new state database or migrate an older one: a pass never imports
SQLAlchemy for its state.
"""

from __future__ import annotations

import itertools
import json
import sqlite3
import threading
import uuid
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields, replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from pathlib import Path
from typing import Any, Self

from kravia_sync.errors import KraviaSyncError
from kravia_sync.identity import KnownCase
from kravia_sync.lifecycle import CaseState, CaseSummary, Phase
from kravia_sync.payments import (
    FINAL_PAYMENT_PHASES,
    PaymentKind,
    PaymentLine,
    PaymentPhase,
    PaymentState,
)
from kravia_sync.state.process import holder_alive, this_process
from kravia_sync.state.stored import utc_text

__all__ = [
    "SCHEMA_VERSION",
    "CaseWrite",
    "JournalEntry",
    "JournalKind",
    "LeaseHeldError",
    "LeaseLostError",
    "MirrorItem",
    "QuarantineEntry",
    "SchemaError",
    "StateConflictError",
    "StateError",
    "StateStore",
    "WriteResult",
    "WriteStatus",
    "utc_text",
]

SCHEMA_VERSION = 3
BUSY_TIMEOUT_SECONDS = 30  # how long a write waits for another writer's lock
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


class _NotNewError(Exception):
    """The payment is no longer new: another writer began it."""


class StateError(KraviaSyncError, RuntimeError):
    """The state database could not be read or written: locked by another program past the
    wait, a full disk, a file that is not a database or is damaged. What the pass had not
    committed is not sent; the next pass starts from what was."""


def _state_error(path: Path, exc: sqlite3.Error) -> StateError:
    reason = str(exc) or type(exc).__name__
    if "locked" in reason or "busy" in reason:
        reason += (
            f" (waited {BUSY_TIMEOUT_SECONDS} s): another program holds a lock on it, e.g. a "
            "database browser with a transaction open; close it and run again"
        )
    elif "disk is full" in reason or "disk I/O" in reason:
        reason += ": check the disk it is on"
    return StateError(f"the state store {path} could not be used: {reason}")


# The driver's errors that say the database cannot be used (locked, unreadable, full disk,
# not a database) rather than that a statement is wrong: those stay as they are (a bug, or a
# race the caller handles).
_STATEMENT_ERRORS = (
    sqlite3.IntegrityError,
    sqlite3.ProgrammingError,
    sqlite3.InterfaceError,
    sqlite3.NotSupportedError,
)


@contextmanager
def _state_errors(path: Path) -> Iterator[None]:
    """The driver's errors inside the block that say the database cannot be used, as
    `StateError`s naming the file."""
    try:
        yield
    except _STATEMENT_ERRORS:
        raise
    except sqlite3.Error as exc:
        raise _state_error(path, exc) from exc


class SchemaError(KraviaSyncError, RuntimeError):
    """The state database is not one this version of kravia-sync can use."""


class LeaseHeldError(KraviaSyncError, RuntimeError):
    """Another process holds the writer lease."""

    def __init__(self, holder: str, acquired_at: datetime, expires_at: datetime) -> None:
        super().__init__(
            f"another kravia-sync is writing to this state store: {holder}, "
            f"since {acquired_at:%Y-%m-%d %H:%M:%S %Z}, lease valid until "
            f"{expires_at:%Y-%m-%d %H:%M:%S %Z}. Wait for it to finish: a lease whose holder "
            "died is taken over when it expires (at once when it died on this machine); "
            "`kravia-sync unlock --force` removes it sooner, but never while its holder runs "
            "here."
        )
        self.holder = holder


class LeaseLostError(KraviaSyncError, RuntimeError):
    """The writer lease is no longer this store's (another process took it over): nothing
    more may be written or sent."""


class StateConflictError(KraviaSyncError, RuntimeError):
    """A case changed in the state store after it was read (an operator command during the
    read): the read's writes were not made; the next pass reads it again."""


class WriteStatus(StrEnum):
    OK = "ok"
    CONFLICT = "conflict"  # the row is not at the revision the write read: nothing written
    HELD = "held"  # an intent for an invoice an operator holds: not written, not to be sent
    FENCED = "fenced"  # an intent after the lease was lost: not written, the pass must stop


@dataclass(frozen=True, slots=True)
class CaseWrite:
    """One write of the engine: a case row (compare-and-set on the revision it carries: the
    one it was read at; 0 inserts a case never stored), a journal entry, or both.

    Nothing of it is written once this store, having taken the writer lease, no longer holds
    it at the epoch it took it at — except the journal entry of an outcome (a fact). An
    `intent` (a call about to leave) is also refused while any of `holds` (its
    accountingInvoiceId and invoice number) is held, or, with `held_only`, unless one of them
    is. An outcome's journal entry is appended even when its row moved on."""

    case: CaseState | None = None
    entry: JournalEntry | None = None
    intent: bool = False
    holds: tuple[str, ...] = ()
    held_only: bool = False
    # Note columns of one case (accountingInvoiceId, values) written with it, e.g. that a
    # hold action was sent, so a crash right after can never send it twice.
    notes: tuple[str, Mapping[str, Any]] | None = None
    # A case Kravia's answer showed exists (a register's new id): into the mirror of Kravia's
    # cases at once, whatever else is refused (it is a fact about Kravia).
    kravia_case: KnownCase | None = None


@dataclass(frozen=True, slots=True)
class WriteResult:
    status: WriteStatus
    case: CaseState | None = None  # as stored, at its new revision
    reason: str | None = None  # why held

    @property
    def ok(self) -> bool:
        return self.status is WriteStatus.OK


@dataclass(frozen=True, slots=True)
class MirrorItem:
    """One case as Kravia's search reported it."""

    kravia_id: int
    accounting_invoice_id: str | None
    invoice_number: str | None
    status: str | None
    remaining: Decimal | None
    last_updated: str | None


class JournalKind(StrEnum):
    """What a journal row records."""

    INTENT = "intent"  # a call about to leave (committed before it is sent)
    OUTCOME = "outcome"  # what came back (or that nothing did)
    DECISION = "decision"  # what the engine decided without a call (e.g. a case adopted)
    OPERATOR = "operator"  # a person's decision on a parked case or payment


@dataclass(frozen=True, slots=True)
class JournalEntry:
    attempt_id: str
    kind: JournalKind
    operation: str
    accounting_invoice_id: str
    at: datetime
    run_id: int | None = None
    kravia_id: int | None = None
    outcome: str | None = None
    http_status: int | None = None
    duration_ms: int | None = None
    message: str | None = None
    payment_id: str | None = None


@dataclass(frozen=True, slots=True)
class QuarantineEntry:
    record_key: str
    kind: str
    field: str
    reason: str
    accounting_invoice_id: str | None = None
    invoice_number: str | None = None


_CASE_FIELDS = tuple(f.name for f in fields(CaseState))
WRITER_LEASE = "writer"


_JOURNAL_FIELDS = tuple(f.name for f in fields(JournalEntry))
# Column names come from our own dataclasses, never from input: the values are bound.
_CASE_COLUMNS = ", ".join(_CASE_FIELDS)
_CASE_UPDATES = ", ".join(f"{name} = excluded.{name}" for name in _CASE_FIELDS[1:])
_UPSERT_CASE_SQL = (
    f"INSERT INTO cases ({_CASE_COLUMNS}) VALUES ({', '.join('?' for _ in _CASE_FIELDS)}) "  # noqa: S608
    f"ON CONFLICT (accounting_invoice_id) DO UPDATE SET {_CASE_UPDATES}"
)
_INSERT_CASE_SQL = (
    f"INSERT INTO cases ({_CASE_COLUMNS}) VALUES ({', '.join('?' for _ in _CASE_FIELDS)}) "  # noqa: S608
    "ON CONFLICT (accounting_invoice_id) DO NOTHING"
)
# Notes other parts of the engine and operators write column by column (status pulled back,
# holds, approvals, payouts): a case write never overwrites them from its own copy.
_NOTE_FIELDS = frozenset(
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
_DRIVER_FIELDS = tuple(f for f in _CASE_FIELDS[1:] if f not in _NOTE_FIELDS | {"attention"})
_DIFF_FIELDS = tuple(f for f in _CASE_FIELDS[1:] if f not in _NOTE_FIELDS)


def _cas_sql(columns: tuple[str, ...]) -> str:
    assignments = ", ".join(f"{name} = ?" for name in columns)
    return (
        f"UPDATE cases SET {assignments} "  # noqa: S608 - our own column names
        "WHERE accounting_invoice_id = ? AND revision = ?"
    )


_DRIVER_UPDATE_SQL = _cas_sql(_DRIVER_FIELDS)
_DIFF_UPDATE_SQL = _cas_sql(_DIFF_FIELDS)
_HELD_SQL = "SELECT invoice, reason FROM holds WHERE invoice IN (?, ?) ORDER BY held_at LIMIT 1"
_FENCE_SQL = "SELECT holder_id, epoch FROM lease WHERE name = ?"
_KNOWN_IN_KRAVIA_SQL = (
    "SELECT kravia_id, accounting_invoice_id, invoice_number FROM kravia_cases "
    "WHERE accounting_invoice_id = ? UNION "
    "SELECT kravia_id, accounting_invoice_id, invoice_number FROM kravia_cases "
    "WHERE invoice_number = ?"
)
_LEASE_LOST = (
    "the writer lease was taken over by another process: this one stops writing and sending "
    "(raise state.lease_seconds if passes stall this long)"
)
_JOURNAL_COLUMNS = ", ".join(_JOURNAL_FIELDS)
_INSERT_JOURNAL_SQL = (
    f"INSERT INTO journal ({_JOURNAL_COLUMNS}) VALUES ({', '.join('?' for _ in _JOURNAL_FIELDS)})"  # noqa: S608
)


def _insert_sql(table: str, names: Iterable[str], *, upsert_on: tuple[str, ...] = ()) -> str:
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


def _assignments(names: Iterable[str]) -> str:
    return ", ".join(f"{name} = :{name}" for name in names)


_QUARANTINE_FIELDS = tuple(f.name for f in fields(QuarantineEntry))
_QUARANTINE_COLUMNS = ", ".join(_QUARANTINE_FIELDS)
_INSERT_QUARANTINE_SQL = _insert_sql(
    "quarantine", ("source", *_QUARANTINE_FIELDS, "first_seen_at", "last_seen_at")
)
_UPDATE_QUARANTINE_SQL = (
    f"UPDATE quarantine SET {_assignments((*_QUARANTINE_FIELDS[1:], 'last_seen_at'))} "  # noqa: S608
    "WHERE source = :source AND record_key = :record_key"
)
# The columns of `payments`, as `_payment_values` gives them.
_PAYMENT_COLUMNS = (
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
_UPSERT_PAYMENT_SQL = _insert_sql("payments", _PAYMENT_COLUMNS, upsert_on=("source", "payment_id"))
_PAYMENT_ASSIGNMENTS = _assignments(_PAYMENT_COLUMNS[2:])
_UPSERT_META_SQL = _insert_sql("meta", ("key", "value"), upsert_on=("key",))
# Kravia's word on one of our cases (by its Kravia id), written only where it changed.
_STATUS_SQL = (
    "UPDATE cases SET kravia_status = :status, kravia_remaining = :remaining, status_at = :now "
    "WHERE kravia_id = :kravia_id "
    "AND (kravia_status IS NOT :status OR kravia_remaining IS NOT :remaining)"
)
# A case Kravia's search reported, by Kravia id; a search that leaves the accountingInvoiceId
# out does not forget one its details gave.
_UPSERT_MIRROR_SQL = (
    _insert_sql(
        "kravia_cases",
        (
            "kravia_id",
            "accounting_invoice_id",
            "invoice_number",
            "status",
            "remaining",
            "last_updated",
            "seen_at",
        ),
    )
    + " ON CONFLICT (kravia_id) DO UPDATE SET "
    "accounting_invoice_id = coalesce(excluded.accounting_invoice_id, "
    "kravia_cases.accounting_invoice_id), invoice_number = excluded.invoice_number, "
    "status = excluded.status, remaining = excluded.remaining, "
    "last_updated = excluded.last_updated, seen_at = excluded.seen_at"
)
# Columns of a case that are notes, written on their own (`StateStore.set_case_notes`).
_NOTE_COLUMNS = frozenset({"attention", "hold_action_at", "payouts_accounted", "updated_at"})


def _create_statements(*tables: str) -> list[str]:
    """The statements creating these tables (all, when none is named), from the one schema.
    Loaded only here: a new or older state database is the only time it is needed."""
    from kravia_sync.state.schema import create_statements  # noqa: PLC0415 - see the docstring

    return create_statements(*tables)


def _write_note_row(
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
        (*_bound(values).values(), aid),
    )


def _write_notes(
    connection: sqlite3.Connection, updates: Iterable[tuple[str, Mapping[str, Any]]]
) -> None:
    for aid, values in updates:
        _write_note_row(connection, aid, values)


def _lease_row(connection: sqlite3.Connection) -> dict[str, Any] | None:
    row = connection.execute("SELECT * FROM lease WHERE name = ?", (WRITER_LEASE,)).fetchone()
    return None if row is None else _decoded(row)


class SourceRead:
    """Look-ups for one source read, a chunk of records at a time, in flat memory.

    For each chunk: the stored summary of every accountingInvoiceId in it (of any source), and
    the key of an earlier record of this read with the same id. The ids seen so far are kept
    in a dict up to IN_MEMORY_IDS, and beyond that in a temporary table of this connection
    (SQLite spills it to a temporary file), so a read of ten million rows needs no more
    memory than one of a hundred thousand. After the read: the stored cases it did not see.
    """

    CHUNK = 2000  # ids per statement (fewer where SQLite allows fewer bound variables)
    IN_MEMORY_IDS = 100_000  # about 10 MB

    def __init__(self, path: Path, source: str) -> None:
        self._source = source
        self._path = path
        with _state_errors(path):
            self._db = sqlite3.connect(path, timeout=BUSY_TIMEOUT_SECONDS, isolation_level=None)
        variables = self._db.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
        self._chunk = max(1, min(self.CHUNK, (variables - 32) // 3))
        self._phases = {phase.value: phase for phase in Phase}
        self._in_memory: dict[str, str] | None = {}  # None once moved to the table
        self._triage_statements: dict[tuple[int, int], str] = {}
        self._seen_here = 0  # ids seen in this read whose stored case is of this source
        self._quiet = CaseSummary("", Phase.STARTED, source)
        self._chunks_seen = 0  # chunks recorded in the temporary table

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        self._db.close()

    def triage(
        self, records: list[tuple[str, str, str]], *, quiet: Collection[str]
    ) -> tuple[dict[str, CaseSummary | None], list[str | None]]:
        """See `_triage`; the driver's errors as `StateError`s."""
        with _state_errors(self._path):
            return self._triage(records, quiet=quiet)

    def _triage(
        self, records: list[tuple[str, str, str]], *, quiet: Collection[str]
    ) -> tuple[dict[str, CaseSummary | None], list[str | None]]:
        """For (accountingInvoiceId, record key, record hash) triples in read order: which ids
        need a closer look, and per triple the key of an earlier record of this read with its
        id (None for the first).

        An id needs a closer look unless its stored case belongs to this source, is in one of
        the `quiet` phases and has this very record hash; the dict maps each such id to its
        stored summary, or to None when nothing is stored. The comparison runs inside SQLite,
        so an unchanged record costs no Python object at all."""
        looked_at: dict[str, CaseSummary | None] = {}
        earlier: list[str | None] = []
        phases = sorted(quiet)
        for start in range(0, len(records), self._chunk):
            chunk = records[start : start + self._chunk]
            statement = self._triage_statements.get((len(chunk), len(phases)))
            if statement is None:
                statement = self._triage_statement(len(chunk), len(phases))
            rows = self._db.execute(
                statement,
                [
                    *itertools.chain.from_iterable((aid, hashed) for aid, _, hashed in chunk),
                    self._source,
                    *phases,
                ],
            )
            for aid, hashed, phase, source in rows:
                looked_at[aid] = (
                    None if phase is None else CaseSummary(hashed, self._phases[phase], source)
                )
            seen = self._seen_before([(aid, key) for aid, key, _ in chunk])
            for aid, key, _ in chunk:
                first = seen.get(aid)
                earlier.append(first)
                if first is None:
                    seen[aid] = key
                    # Not singled out means stored, quiet and of this source.
                    stored = looked_at.get(aid, self._quiet)
                    if stored is not None and stored.source == self._source:
                        self._seen_here += 1
        return looked_at, earlier

    def _triage_statement(self, size: int, phases: int) -> str:
        statement = (
            f"WITH given(aid, hash) AS (VALUES {','.join(['(?, ?)'] * size)}) "  # noqa: S608 - placeholders only
            "SELECT given.aid, c.record_hash, c.phase, c.source FROM given "
            "LEFT JOIN main.cases AS c ON c.accounting_invoice_id = given.aid "
            "WHERE c.accounting_invoice_id IS NULL OR c.record_hash IS NOT given.hash "
            f"OR c.source IS NOT ? OR c.phase NOT IN ({','.join('?' * phases)})"
        )
        self._triage_statements[size, phases] = statement
        return statement

    def _seen_before(self, chunk: list[tuple[str, str]]) -> dict[str, str]:
        """Record the chunk's ids as seen; the first keys of those seen in earlier chunks.
        The dict returned may be the in-memory record itself (the caller adds to it)."""
        seen = self._in_memory
        if seen is not None and len(seen) + len(chunk) > self.IN_MEMORY_IDS:
            self._move_to_table(seen)
            seen = None
        if seen is not None:
            return seen
        firsts: dict[str, str] = {}
        for aid, key in chunk:
            firsts.setdefault(aid, key)
        # One statement records the chunk's ids (numbered by chunk); only when fewer were new
        # than given does a second one fetch the first keys of the others.
        self._chunks_seen += 1
        number = self._chunks_seen
        values = ", ".join(["(?, ?, ?)"] * len(firsts))
        inserted = self._db.execute(
            f"INSERT INTO temp.seen_ids (aid, record_key, chunk) VALUES {values} "  # noqa: S608
            "ON CONFLICT DO NOTHING",
            [part for aid, key in firsts.items() for part in (aid, key, number)],
        ).rowcount
        if inserted == len(firsts):
            return {}
        return dict(
            self._db.execute(
                "SELECT aid, record_key FROM temp.seen_ids "  # noqa: S608
                f"WHERE chunk < ? AND aid IN ({','.join('?' * len(firsts))})",
                [number, *firsts],
            )
        )

    def _move_to_table(self, seen: dict[str, str]) -> None:
        self._db.execute("PRAGMA temp_store = FILE")
        self._db.execute(
            "CREATE TEMP TABLE seen_ids (aid TEXT PRIMARY KEY, record_key TEXT NOT NULL, "
            "chunk INTEGER NOT NULL) WITHOUT ROWID"
        )
        # In statements of a chunk's size (much faster than one row at a time).
        items = list(seen.items())
        for start in range(0, len(items), self._chunk):
            part = items[start : start + self._chunk]
            self._db.execute(
                "INSERT INTO temp.seen_ids (aid, record_key, chunk) "  # noqa: S608 - placeholders
                f"VALUES {', '.join(['(?, ?, 0)'] * len(part))}",
                [value for pair in part for value in pair],
            )
        self._in_memory = None

    def known(self) -> int:
        """How many cases of the source the state holds."""
        with _state_errors(self._path):
            (stored,) = self._db.execute(
                "SELECT count(*) FROM main.cases WHERE source = ?", (self._source,)
            ).fetchone()
        return int(stored)

    def unseen(self) -> tuple[int, list[str]]:
        """How many stored cases of the source this read did not see, and the ids of those
        with a call whose answer was lost (they still need settling)."""
        return self.known() - self._seen_here, self.unseen_in(_SETTLING)

    def unseen_in(self, phases: Collection[str]) -> list[str]:
        """The ids of the source's stored cases in these phases that this read did not see."""
        listed = sorted(phases)
        marks = ", ".join("?" * len(listed))
        # `+source`: look cases up by phase (few are in these), not by source (all are).
        query = (
            "SELECT accounting_invoice_id FROM main.cases "  # noqa: S608 - placeholders only
            f"WHERE +source = ? AND phase IN ({marks})"
        )
        seen = self._in_memory
        if seen is None:
            query += " AND accounting_invoice_id NOT IN (SELECT aid FROM temp.seen_ids)"
        with _state_errors(self._path):
            rows = self._db.execute(query, (self._source, *listed)).fetchall()
        return [aid for (aid,) in rows if seen is None or aid not in seen]


_SETTLING = (Phase.REGISTERING.value, Phase.UPLOADING.value, Phase.STARTING.value)


def _chunks(ids: Iterable[str], size: int = 500) -> Iterator[list[str]]:
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


def _mirror_known(cursor: Any, known: KnownCase) -> None:  # noqa: ANN401 - a DB-API cursor
    """A case Kravia's answer showed exists, into the mirror (a search's fuller view of it,
    when there is one already, stays)."""
    cursor.execute(
        "INSERT INTO kravia_cases (kravia_id, accounting_invoice_id, invoice_number, seen_at) "
        "VALUES (?, ?, ?, ?) ON CONFLICT (kravia_id) DO NOTHING",
        (
            known.kravia_id,
            known.accounting_invoice_id,
            known.invoice_number,
            utc_text(datetime.now(UTC)),
        ),
    )


def _decimal_or_none(value: object) -> Decimal | None:
    return None if value is None else Decimal(str(value))


def _case_row(case: CaseState, names: Iterable[str]) -> tuple[object, ...]:
    return tuple(_db_value(getattr(case, name)) for name in names)


def _journal_row(entry: JournalEntry) -> tuple[object, ...]:
    return tuple(_db_value(getattr(entry, name)) for name in _JOURNAL_FIELDS)


def _cas_write(
    connection: sqlite3.Connection | sqlite3.Cursor,
    case: CaseState,
    names: tuple[str, ...],
    update_sql: str,
) -> CaseState | None:
    """Write `case` as the revision after the one it carries (0: insert a new row), only if
    the stored row is still at that revision; the case as stored, or None (a conflict)."""
    stored = replace(case, revision=case.revision + 1)
    if case.revision == 0:
        result = connection.execute(_INSERT_CASE_SQL, _case_row(stored, _CASE_FIELDS))
    else:
        values = (*_case_row(stored, names), case.accounting_invoice_id, case.revision)
        result = connection.execute(update_sql, values)
    return stored if result.rowcount == 1 else None


def _decoder(name: str) -> Callable[[Any], Any]:
    """How a stored value of column `name` comes back as the value the code works with."""
    if name in TIME_COLUMNS:
        return _time_or_none
    if name in DECIMAL_COLUMNS:
        return _decimal_or_none
    if name in FLAG_COLUMNS:
        return _flag_or_none
    return _as_stored


def _time_or_none(value: object) -> datetime | None:
    return None if value is None else datetime.fromisoformat(str(value))


def _flag_or_none(value: object) -> bool | None:
    return None if value is None else bool(value)


def _as_stored(value: object) -> object:
    return value


def _decoded(row: sqlite3.Row) -> dict[str, Any]:
    """A row as a dict of the values the code works with (times, amounts, flags decoded)."""
    return {name: _decoder(name)(row[name]) for name in row.keys()}  # noqa: SIM118 - a Row


_CASE_DECODERS: tuple[Callable[[Any], Any], ...] = tuple(
    Phase if name == "phase" else _decoder(name) for name in _CASE_FIELDS
)


def _case_from_row(row: Sequence[Any]) -> CaseState:
    """A case from a row of `SELECT {_CASE_COLUMNS} FROM cases` (in that column order)."""
    values: list[Any] = [decode(value) for decode, value in zip(_CASE_DECODERS, row, strict=True)]
    return CaseState(*values)


def _payment_from_row(stored: sqlite3.Row) -> PaymentState:
    row = _decoded(stored)
    lines = tuple(
        PaymentLine(
            line["accounting_invoice_id"],
            Decimal(line["amount"]),
            _decimal_or_none(line.get("sent")),
            _decimal_or_none(line.get("left")),
        )
        for line in json.loads(row["lines"])
    )
    return PaymentState(
        source=row["source"],
        payment_id=row["payment_id"],
        kind=PaymentKind(row["kind"]),
        paid_on=date.fromisoformat(row["paid_on"]),
        lines=lines,
        phase=PaymentPhase(row["phase"]),
        fingerprint=row["fingerprint"],
        first_seen_at=row["first_seen_at"],
        updated_at=row["updated_at"],
        description=row["description"],
        derived=bool(row["derived"]),
        pending_attempt=row["pending_attempt"],
        pending_since=row["pending_since"],
        attempts=row["attempts"],
        next_attempt_at=row["next_attempt_at"],
        note=row["note"],
        settle_after=row["settle_after"],
    )


def _payment_values(payment: PaymentState) -> dict[str, Any]:
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


def _bound(values: Mapping[str, Any]) -> dict[str, Any]:
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


def _connect(path: Path, *, rows: bool = True) -> sqlite3.Connection:
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


class StateStore:
    """The state database. Reads may come from any thread; writes are short transactions.

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
        with _state_errors(self.path):
            if connection is None:
                connection = _connect(self.path)
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

    # --- schema -------------------------------------------------------------------------------
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
            if not isinstance(found, str) or not found.isdigit():
                raise SchemaError(f"{self.path} has an unknown schema version {found!r}")
            version = int(found)
            if version > SCHEMA_VERSION:
                raise SchemaError(
                    f"{self.path} has schema version {version}, newer than this kravia-sync "
                    f"understands ({SCHEMA_VERSION}): upgrade kravia-sync, do not downgrade"
                )
            if version == 1:
                self._migrate_1_to_2(connection)
                version = 2
            if version == 2:
                self._migrate_2_to_3(connection)

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

    def schema_version(self) -> int:
        with self._read() as connection:
            (value,) = connection.execute(
                "SELECT value FROM meta WHERE key = 'schema_version'"
            ).fetchone()
        return int(value)

    # --- cases --------------------------------------------------------------------------------
    def _cases_where(self, condition: str, parameters: Sequence[object] = ()) -> list[CaseState]:
        with self._read() as connection:
            rows = connection.execute(
                f"SELECT {_CASE_COLUMNS} FROM cases WHERE {condition}",  # noqa: S608 - our own SQL
                parameters,
            )
            return [_case_from_row(row) for row in rows]

    def load_cases(self, source: str) -> dict[str, CaseState]:
        return {
            case.accounting_invoice_id: case for case in self._cases_where("source = ?", (source,))
        }

    def source_read(self, source: str) -> SourceRead:
        """The state side of reading `source` in chunks (see `SourceRead`)."""
        return SourceRead(self.path, source)

    def load_cases_by_id(self, ids: Iterable[str]) -> dict[str, CaseState]:
        """The full stored state of the cases `ids` (in chunks, for SQLite's variable limit)."""
        found: dict[str, CaseState] = {}
        with self._read() as connection:
            for chunk in _chunks(ids):
                rows = connection.execute(
                    f"SELECT {_CASE_COLUMNS} FROM cases "  # noqa: S608 - placeholders only
                    f"WHERE accounting_invoice_id IN ({','.join('?' * len(chunk))})",
                    chunk,
                )
                found.update((row[0], _case_from_row(row)) for row in rows)
        return found

    def find_cases(self, term: str) -> list[CaseState]:
        """Cases whose invoice number, accountingInvoiceId or Kravia id is `term`."""
        if term.isdigit():
            return self._cases_where(
                "invoice_number = ? OR accounting_invoice_id = ? OR kravia_id = ?",
                (term, term, int(term)),
            )
        return self._cases_where("invoice_number = ? OR accounting_invoice_id = ?", (term, term))

    def cases_in(self, phases: Iterable[Phase], limit: int = 50) -> list[CaseState]:
        values = [phase.value for phase in phases]
        return self._cases_where(
            f"phase IN ({','.join('?' * len(values))}) ORDER BY updated_at DESC LIMIT ?",
            (*values, limit),
        )

    def cases_with_attention(self, limit: int = 50) -> list[CaseState]:
        """Cases with a change a person must make in Kravia, the most recent first."""
        return self._cases_where("attention IS NOT NULL ORDER BY updated_at DESC LIMIT ?", (limit,))

    def kravia_status_counts(self) -> dict[str, int]:
        """Cases by the status Kravia last reported (pulled back; unknown ones left out)."""
        with self._read() as connection:
            rows = connection.execute(
                "SELECT kravia_status, count(*) FROM cases WHERE kravia_status IS NOT NULL "
                "GROUP BY kravia_status"
            )
            return {str(status): int(count) for status, count in rows}

    def phase_counts(self) -> dict[str, int]:
        with self._read() as connection:
            rows = connection.execute("SELECT phase, count(*) FROM cases GROUP BY phase")
            return {str(phase): int(count) for phase, count in rows}

    def quarantine_counts(self) -> dict[str, int]:
        """Quarantined records by kind (invalid, waiting)."""
        with self._read() as connection:
            rows = connection.execute("SELECT kind, count(*) FROM quarantine GROUP BY kind")
            return {str(kind): int(count) for kind, count in rows}

    def write_batch(self, cases: Iterable[CaseState], journal: Iterable[JournalEntry]) -> None:
        """Set state up as given: upsert the cases whole (last one wins, each at the next
        revision) and append the journal, in one transaction, with no fence and no
        compare-and-set. For tests, benchmarks and imports; the engine writes through
        `commit_case_writes`."""
        latest: dict[str, CaseState] = {}
        for case in cases:
            latest[case.accounting_invoice_id] = replace(case, revision=case.revision + 1)
        case_rows = [_case_row(case, _CASE_FIELDS) for case in latest.values()]
        journal_rows = [_journal_row(entry) for entry in journal]
        with self._batch() as cursor:
            if case_rows:
                cursor.executemany(_UPSERT_CASE_SQL, case_rows)
            if journal_rows:
                cursor.executemany(_INSERT_JOURNAL_SQL, journal_rows)

    @contextmanager
    def _batch(self) -> Iterator[sqlite3.Cursor]:
        """A write transaction on the hot path's own driver connection: rows go to the driver
        as plain tuples (every remote call writes twice, so this is kept lean)."""
        with self._batch_lock, _state_errors(self.path):
            if self._batch_connection is None:
                self._batch_connection = _connect(self.path, rows=False)
            cursor = self._batch_connection.cursor()
            try:
                with _committed(self._batch_connection, "BEGIN IMMEDIATE"):
                    yield cursor
            finally:
                cursor.close()

    def commit_case_writes(self, writes: Sequence[CaseWrite]) -> list[WriteResult]:
        """The engine's case writes, in order, in one transaction (see `CaseWrite`); the
        result of each. The lease is read once, inside the transaction."""
        with self._batch() as cursor:
            fence_holds = self._fence_holds(cursor)
            return [self._commit_one(cursor, write, fence_holds=fence_holds) for write in writes]

    def _commit_one(
        self, cursor: sqlite3.Cursor, write: CaseWrite, *, fence_holds: bool
    ) -> WriteResult:
        if write.kravia_case is not None:
            _mirror_known(cursor, write.kravia_case)
        if not fence_holds:
            # A writer that lost the lease writes no case row; what a call of its answered
            # is still a fact, kept in the journal (an intent is not: it is not sent).
            if write.entry is not None and not write.intent:
                cursor.execute(_INSERT_JOURNAL_SQL, _journal_row(write.entry))
            return WriteResult(WriteStatus.FENCED)
        if write.holds:
            held = cursor.execute(_HELD_SQL, (write.holds[0], write.holds[-1])).fetchone()
            if (held is not None) != write.held_only:
                reason = None if held is None else f"on hold ({held[1]})"
                return WriteResult(WriteStatus.HELD, reason=reason or "no longer on hold")
        status = WriteStatus.OK
        stored: CaseState | None = None
        if write.case is not None:
            stored = _cas_write(cursor, write.case, _DRIVER_FIELDS, _DRIVER_UPDATE_SQL)
            if stored is None:
                status = WriteStatus.CONFLICT
        if write.notes is not None and status is WriteStatus.OK:
            _write_note_row(cursor, *write.notes)
        if write.entry is not None and (status is WriteStatus.OK or not write.intent):
            cursor.execute(_INSERT_JOURNAL_SQL, _journal_row(write.entry))
        return WriteResult(status, stored)

    # --- payments -----------------------------------------------------------------------------
    def load_payments(
        self, source: str, payment_ids: Iterable[str] = (), *, unfinished: bool = False
    ) -> dict[str, PaymentState]:
        """The source's payments with these ids, and with `unfinished` all not yet final."""
        found: dict[str, PaymentState] = {}
        with self._read() as connection:
            for chunk in _chunks(payment_ids):
                rows = connection.execute(
                    "SELECT * FROM payments WHERE source = ? "  # noqa: S608 - placeholders only
                    f"AND payment_id IN ({','.join('?' * len(chunk))})",
                    (source, *chunk),
                )
                found.update((row["payment_id"], _payment_from_row(row)) for row in rows)
            if unfinished:
                final = [phase.value for phase in FINAL_PAYMENT_PHASES]
                rows = connection.execute(
                    "SELECT * FROM payments WHERE source = ? "  # noqa: S608 - placeholders only
                    f"AND phase NOT IN ({','.join('?' * len(final))})",
                    (source, *final),
                )
                found.update((row["payment_id"], _payment_from_row(row)) for row in rows)
        return found

    def all_payments(self, limit: int = 200) -> list[PaymentState]:
        """Payments of every source, the most recently changed first."""
        with self._read() as connection:
            rows = connection.execute(
                "SELECT * FROM payments ORDER BY updated_at DESC LIMIT ?", (limit,)
            )
            return [_payment_from_row(row) for row in rows]

    def payment_counts(self) -> dict[str, int]:
        with self._read() as connection:
            rows = connection.execute("SELECT phase, count(*) FROM payments GROUP BY phase")
            return {str(phase): int(count) for phase, count in rows}

    def write_payments(
        self,
        payments: Iterable[PaymentState],
        journal: Iterable[JournalEntry] = (),
        cases: Iterable[CaseState] = (),
        case_notes: Iterable[tuple[str, Mapping[str, Any]]] = (),
    ) -> list[CaseState]:
        """One fenced transaction: upsert the payments, write the cases (compare-and-set on
        the revision each was read at), append the journal (a case whose amount drop a
        derived payment stands for is never stored without it). The cases as stored;
        `StateConflictError` (nothing written) when one changed since it was read."""
        stored_cases: list[CaseState] = []
        with self._fenced_write() as connection:
            for payment in payments:
                connection.execute(_UPSERT_PAYMENT_SQL, _bound(_payment_values(payment)))
            for case in cases:
                stored = _cas_write(connection, case, _DIFF_FIELDS, _DIFF_UPDATE_SQL)
                if stored is None:
                    raise StateConflictError(
                        f"case {case.accounting_invoice_id} changed in the state store while "
                        "its source was read (an operator command?); the next pass reads it "
                        "again"
                    )
                stored_cases.append(stored)
            _write_notes(connection, case_notes)
            connection.executemany(_INSERT_JOURNAL_SQL, [_journal_row(entry) for entry in journal])
        return stored_cases

    def begin_payment(
        self,
        pending: PaymentState,
        intent: JournalEntry,
        case_notes: Iterable[tuple[str, Mapping[str, Any]]] = (),
    ) -> bool:
        """Commit a payment's move to `sending` with its intent, only if it is still `new`
        and not in flight (so two writers can never both send it); False if it is not."""
        values = _bound(_payment_values(pending)) | {"new": PaymentPhase.NEW.value}
        try:
            with self._fenced_write() as connection:
                result = connection.execute(
                    f"UPDATE payments SET {_PAYMENT_ASSIGNMENTS} "  # noqa: S608 - our own names
                    "WHERE source = :source AND payment_id = :payment_id AND phase = :new "
                    "AND pending_attempt IS NULL",
                    values,
                )
                if result.rowcount != 1:
                    raise _NotNewError  # noqa: TRY301 - leaving the block rolls back
                _write_notes(connection, case_notes)
                connection.execute(_INSERT_JOURNAL_SQL, _journal_row(intent))
        except _NotNewError:
            return False
        return True

    def payment_journal(self, payment_id: str) -> list[dict[str, Any]]:
        with self._read() as connection:
            rows = connection.execute(
                "SELECT * FROM journal WHERE payment_id = ? ORDER BY id", (payment_id,)
            )
            return [_decoded(row) for row in rows]

    def set_case_notes(self, updates: Iterable[tuple[str, Mapping[str, Any]]]) -> None:
        """Set only these columns of these cases (accountingInvoiceId → values), leaving the
        rest of each row (its phase, its attempts, its revision) as the pass's other writes
        left it. Fenced."""
        with self._fenced_write() as connection:
            _write_notes(connection, updates)

    # --- holds --------------------------------------------------------------------------------
    def hold(self, invoice: str, *, reason: str, by: str, now: datetime) -> None:
        with self._write() as connection:
            connection.execute(
                _insert_sql(
                    "holds", ("invoice", "reason", "held_at", "held_by"), upsert_on=("invoice",)
                ),
                _bound({"invoice": invoice, "reason": reason, "held_at": now, "held_by": by}),
            )

    def release(self, invoice: str) -> bool:
        """Remove a hold; the cases it flagged lose the flag (a pause sent is undone in
        Kravia by a person)."""
        held = "(accounting_invoice_id = :invoice OR invoice_number = :invoice)"
        with self._write() as connection:
            result = connection.execute(
                "DELETE FROM holds WHERE invoice = :invoice", {"invoice": invoice}
            )
            connection.execute(
                f"UPDATE cases SET hold_action_at = NULL WHERE {held}",  # noqa: S608 - our SQL
                {"invoice": invoice},
            )
            connection.execute(
                f"UPDATE cases SET attention = NULL WHERE {held} "  # noqa: S608 - our SQL
                "AND (attention LIKE 'on hold (%' OR attention LIKE 'the hold action %')",
                {"invoice": invoice},
            )
            return bool(result.rowcount)

    def approve(self, invoices: list[str] | None, *, now: datetime) -> tuple[list[str], list[str]]:
        """Mark cases awaiting approval (registered, not started) as approved to start: these
        invoices (number or accountingInvoiceId), or with None every one. The ids approved,
        and a line for each invoice that could not be."""
        waiting = (Phase.REGISTERED.value, Phase.DOCUMENTED.value)
        approved: list[str] = []
        refused: list[str] = []
        with self._write() as connection:
            if invoices is None:
                targets = [
                    aid
                    for (aid,) in connection.execute(
                        "SELECT accounting_invoice_id FROM cases WHERE phase IN (?, ?) "
                        "AND approved_at IS NULL",
                        waiting,
                    )
                ]
            else:
                targets = []
                for invoice in invoices:
                    found = connection.execute(
                        "SELECT accounting_invoice_id, phase FROM cases "
                        "WHERE accounting_invoice_id = ? OR invoice_number = ?",
                        (invoice, invoice),
                    ).fetchall()
                    if not found:
                        refused.append(f"{invoice}: no such case")
                    if len(found) > 1:
                        ids = ", ".join(aid for aid, _ in found)
                        refused.append(
                            f"{invoice}: matches several cases ({ids}): name the "
                            "accountingInvoiceId"
                        )
                        continue
                    for aid, phase in found:
                        if phase in waiting:
                            targets.append(aid)
                        else:
                            refused.append(f"{invoice}: {aid} is {phase}, not awaiting approval")
            for aid in targets:
                connection.execute(
                    "UPDATE cases SET approved_at = ? WHERE accounting_invoice_id = ?",
                    (utc_text(now), aid),
                )
                approved.append(aid)
        return approved, refused

    # --- status pulled back from Kravia --------------------------------------------------------
    def meta(self, key: str) -> str | None:
        with self._read() as connection:
            row = connection.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        """Set a value the engine keeps (fenced)."""
        with self._fenced_write() as connection:
            connection.execute(_UPSERT_META_SQL, {"key": key, "value": value})

    def earliest_first_seen(self) -> datetime | None:
        with self._read() as connection:
            (value,) = connection.execute(
                "SELECT min(first_seen_at) FROM cases WHERE kravia_id IS NOT NULL"
            ).fetchone()
        return _time_or_none(value)

    def record_statuses(
        self, statuses: Iterable[tuple[int, str | None, Decimal | None]], *, now: datetime
    ) -> int:
        """Store what Kravia reports of its cases (Kravia id, status, capital left); cases we
        do not know are ignored. How many of ours changed."""
        changed = 0
        with self._fenced_write() as connection:
            for kravia_id, status, remaining in statuses:
                result = connection.execute(
                    _STATUS_SQL,
                    _bound(
                        {
                            "kravia_id": kravia_id,
                            "status": status,
                            "remaining": remaining,
                            "now": now,
                        }
                    ),
                )
                changed += result.rowcount
        return changed

    def holds(self) -> dict[str, dict[str, Any]]:
        """Every hold, by the accountingInvoiceId or invoice number it was placed on."""
        with self._read() as connection:
            rows = connection.execute("SELECT * FROM holds ORDER BY held_at")
            return {row["invoice"]: _decoded(row) for row in rows}

    def journal_for(self, accounting_invoice_id: str) -> list[dict[str, Any]]:
        with self._read() as connection:
            rows = connection.execute(
                "SELECT * FROM journal WHERE accounting_invoice_id = ? ORDER BY id",
                (accounting_invoice_id,),
            )
            return [_decoded(row) for row in rows]

    # --- quarantine ---------------------------------------------------------------------------
    def load_quarantine(self, source: str) -> dict[str, QuarantineEntry]:
        with self._read() as connection:
            rows = connection.execute(
                f"SELECT {_QUARANTINE_COLUMNS} FROM quarantine WHERE source = ?",  # noqa: S608
                (source,),
            )
            return {row[0]: QuarantineEntry(*row) for row in rows}

    def sync_quarantine(
        self,
        source: str,
        current: Mapping[str, QuarantineEntry],
        *,
        complete: bool,
        now: datetime,
    ) -> None:
        """Record what is quarantined now; after a complete read, forget what is resolved."""
        known = self.load_quarantine(source)
        changed = [entry for key, entry in current.items() if known.get(key) != entry]
        resolved = [key for key in known if key not in current] if complete else []
        if not changed and not resolved:
            return
        with self._fenced_write() as connection:
            for entry in changed:
                values = _bound(asdict(entry) | {"source": source, "last_seen_at": now})
                if entry.record_key in known:
                    connection.execute(_UPDATE_QUARANTINE_SQL, values)
                else:
                    connection.execute(
                        _INSERT_QUARANTINE_SQL, values | {"first_seen_at": values["last_seen_at"]}
                    )
            for chunk in _chunks(resolved):
                connection.execute(
                    "DELETE FROM quarantine WHERE source = ? "  # noqa: S608 - placeholders only
                    f"AND record_key IN ({','.join('?' * len(chunk))})",
                    (source, *chunk),
                )

    def quarantined(self, kind: str | None = None) -> list[dict[str, Any]]:
        where, parameters = ("", ()) if kind is None else ("WHERE kind = ? ", (kind,))
        with self._read() as connection:
            rows = connection.execute(
                f"SELECT * FROM quarantine {where}ORDER BY source, record_key",  # noqa: S608
                parameters,
            )
            return [_decoded(row) for row in rows]

    # --- runs ---------------------------------------------------------------------------------
    def start_run(self, *, holder: str, command: str, now: datetime) -> int:
        with self._write() as connection:
            result = connection.execute(
                "INSERT INTO runs (started_at, holder, command, status, counts) "
                "VALUES (?, ?, ?, 'running', '{}')",
                (utc_text(now), holder, command),
            )
            run_id = result.lastrowid
        assert run_id is not None  # noqa: S101 - an insert into a rowid table always gives one
        return run_id

    def finish_run(
        self,
        run_id: int,
        *,
        status: str,
        counts: Mapping[str, Any],
        now: datetime,
        error: str | None = None,
    ) -> None:
        with self._write() as connection:
            connection.execute(
                "UPDATE runs SET finished_at = ?, status = ?, counts = ?, error = ? WHERE id = ?",
                (
                    utc_text(now),
                    status,
                    json.dumps(counts, sort_keys=True, default=str),
                    error,
                    run_id,
                ),
            )

    def last_runs(self, limit: int = 5) -> list[dict[str, Any]]:
        with self._read() as connection:
            rows = connection.execute("SELECT * FROM runs ORDER BY id DESC LIMIT ?", (limit,))
            return [_decoded(row) | {"counts": json.loads(row["counts"])} for row in rows]

    # --- lease --------------------------------------------------------------------------------
    def acquire_lease(self, *, ttl: timedelta, now: datetime) -> str:
        """Take the writer lease (or renew it, if this store holds it) or raise
        `LeaseHeldError` naming who holds it. Every take-over by another holder adds one to the
        lease's epoch, which fences the writes of the one it was taken from.

        A lease whose holder is known to be gone (a process of this machine, in this process
        namespace, that no longer runs) is taken over at once; any other lease only once it
        has expired.
        """
        me = this_process()
        holder = f"pid {me.pid} on {me.host}"
        with self._write() as connection:
            row = _lease_row(connection)
            ours = row is not None and row["holder_id"] == self.holder_id
            if row is not None and row["holder_id"] and not ours:
                alive = holder_alive(row["host_key"], row["pid"], row["started"])
                if row["expires_at"] > now and alive is not False:
                    raise LeaseHeldError(row["holder"], row["acquired_at"], row["expires_at"])
            epoch = (0 if row is None else int(row["epoch"])) + (0 if ours else 1)
            values = {
                "name": WRITER_LEASE,
                "holder": holder,
                "host": me.host,
                "pid": me.pid,
                "acquired_at": row["acquired_at"] if ours and row is not None else now,
                "expires_at": now + ttl,
                "holder_id": self.holder_id,
                "epoch": epoch,
                "host_key": me.host_key,
                "started": me.started,
            }
            connection.execute("DELETE FROM lease WHERE name = ?", (WRITER_LEASE,))
            connection.execute(_insert_sql("lease", values), _bound(values))
        self._epoch = epoch
        return holder

    def renew_lease(self, *, ttl: timedelta, now: datetime) -> bool:
        """Extend our lease; False when it is no longer ours (it was taken over)."""
        if self._epoch is None:
            return False
        with self._write() as connection:
            result = connection.execute(
                "UPDATE lease SET expires_at = ? WHERE name = ? AND holder_id = ? AND epoch = ?",
                (utc_text(now + ttl), WRITER_LEASE, self.holder_id, self._epoch),
            )
            return result.rowcount == 1

    def release_lease(self) -> None:
        """Give the lease up (if it is still ours). Its row stays, with its epoch; this store
        is fenced from then on, as if the lease had been taken over."""
        with self._write() as connection:
            connection.execute(
                "UPDATE lease SET holder_id = '' WHERE name = ? AND holder_id = ?",
                (WRITER_LEASE, self.holder_id),
            )

    @property
    def holds_lease(self) -> bool:
        """Whether this store took the writer lease and has not been fenced off since."""
        if self._epoch is None:
            return False
        with self._read() as connection:
            return self._fence_holds(connection)

    def current_lease(self) -> dict[str, Any] | None:
        """The writer lease as held now, or None when nobody holds it."""
        with self._read() as connection:
            row = _lease_row(connection)
        return None if row is None or not row["holder_id"] else row

    def force_unlock(self) -> dict[str, Any] | None:
        """Remove the writer lease, whoever holds it; what was removed, or None. Refused
        (`LeaseHeldError`) while its holder runs on this machine: that process would go on
        writing (it is fenced from its next write on, but its calls in flight finish)."""
        with self._write() as connection:
            row = _lease_row(connection)
            if row is None or not row["holder_id"]:
                return None
            if holder_alive(row["host_key"], row["pid"], row["started"]):
                raise LeaseHeldError(row["holder"], row["acquired_at"], row["expires_at"])
            connection.execute("UPDATE lease SET holder_id = '' WHERE name = ?", (WRITER_LEASE,))
            return row

    # --- the mirror of Kravia's cases ---------------------------------------------------------
    def record_mirror(
        self, items: Iterable[MirrorItem], *, meta: Mapping[str, str], now: datetime
    ) -> list[int]:
        """Store what Kravia's search reported of its cases (by Kravia id: a case seen again
        is updated) and the mirror's bookkeeping `meta`, in one fenced transaction; the
        Kravia ids of our cases whose status or capital changed, after the same values were
        written to them."""
        changed: list[int] = []
        with self._fenced_write() as connection:
            for item in items:
                values = _bound(asdict(item) | {"seen_at": now})
                connection.execute(_UPSERT_MIRROR_SQL, values)
                result = connection.execute(
                    _STATUS_SQL,
                    values | {"now": values["seen_at"]},
                )
                if result.rowcount:
                    changed.append(item.kravia_id)
            for key, value in meta.items():
                connection.execute(_UPSERT_META_SQL, {"key": key, "value": value})
        return changed

    def known_in_kravia(self, accounting_invoice_id: str, invoice_number: str) -> list[KnownCase]:
        """Kravia's cases, as last mirrored, with this accountingInvoiceId or invoice number.
        Asked for every invoice kept out of collection in every read, so it runs as one plain
        statement on a connection of its own (no transaction to open and close)."""
        with self._lookup_lock, _state_errors(self.path):
            if self._lookup_connection is None:
                self._lookup_connection = _connect(self.path, rows=False)
            rows = self._lookup_connection.execute(
                _KNOWN_IN_KRAVIA_SQL, (accounting_invoice_id, invoice_number)
            ).fetchall()
        return [KnownCase(kravia_id, aid, number) for kravia_id, aid, number in rows]

    def latest_kravia_id(self) -> int | None:
        """The Kravia id of the case of this store updated last, None when none has one."""
        with self._read() as connection:
            row = connection.execute(
                "SELECT kravia_id FROM cases WHERE kravia_id IS NOT NULL "
                "ORDER BY updated_at DESC LIMIT 1"
            ).fetchone()
        return None if row is None else int(row[0])

    def has_kravia_cases(self) -> bool:
        """Whether any case of this store has a Kravia id."""
        with self._read() as connection:
            row = connection.execute(
                "SELECT 1 FROM cases WHERE kravia_id IS NOT NULL LIMIT 1"
            ).fetchone()
        return row is not None

    def kravia_duplicates(self) -> dict[str, list[int]]:
        """Our accountingInvoiceIds that Kravia (as mirrored) holds more than one case of."""
        with self._read() as connection:
            rows = connection.execute(
                "SELECT k.accounting_invoice_id, k.kravia_id FROM kravia_cases AS k "
                "WHERE k.accounting_invoice_id IN ("
                "  SELECT accounting_invoice_id FROM kravia_cases"
                "  WHERE accounting_invoice_id IS NOT NULL"
                "  GROUP BY accounting_invoice_id HAVING count(*) > 1) "
                "AND EXISTS (SELECT 1 FROM cases AS c "
                "  WHERE c.accounting_invoice_id = k.accounting_invoice_id) "
                "ORDER BY k.accounting_invoice_id, k.kravia_id"
            ).fetchall()
        found: dict[str, list[int]] = {}
        for aid, kravia_id in rows:
            found.setdefault(str(aid), []).append(int(kravia_id))
        return found

    def mirrored_case(self, kravia_id: int) -> KnownCase | None:
        """Kravia's case `kravia_id` as last mirrored, or None when its search never
        reported it."""
        with self._read() as connection:
            row = connection.execute(
                "SELECT kravia_id, accounting_invoice_id, invoice_number FROM kravia_cases "
                "WHERE kravia_id = ?",
                (kravia_id,),
            ).fetchone()
        return None if row is None else KnownCase(row[0], row[1], row[2])

    def mirrored_count(self) -> int:
        with self._read() as connection:
            (count,) = connection.execute("SELECT count(*) FROM kravia_cases").fetchone()
        return int(count)

    # --- operators settling what the engine parked --------------------------------------------
    def resolve_case(
        self, case: CaseState, resolved: CaseState, entry: JournalEntry
    ) -> CaseState | None:
        """An operator's decision on a parked case: written only if the case is still at the
        revision the operator was shown (else None: it moved meanwhile), journaled with their
        reason. Not fenced: operators act beside a running engine, whose next write of the
        case then finds the newer revision and leaves it."""
        if resolved.revision != case.revision:
            raise ValueError("a resolution is written over the revision it was decided on")
        with self._batch() as cursor:
            stored = _cas_write(cursor, resolved, _DRIVER_FIELDS, _DRIVER_UPDATE_SQL)
            if stored is not None:
                cursor.execute(_INSERT_JOURNAL_SQL, _journal_row(entry))
        return stored

    def resolve_payment(
        self, payment: PaymentState, resolved: PaymentState, entry: JournalEntry
    ) -> bool:
        """An operator's decision on a payment that needs review: written only while it is
        still as they were shown it, journaled with their reason."""
        values = _bound(_payment_values(resolved)) | {
            "source": payment.source,  # the row as shown (its key is not among the updates)
            "payment_id": payment.payment_id,
            "shown_phase": payment.phase.value,
            "shown_updated_at": utc_text(payment.updated_at),
        }
        with self._write() as connection:
            result = connection.execute(
                f"UPDATE payments SET {_PAYMENT_ASSIGNMENTS} "  # noqa: S608 - our own names
                "WHERE source = :source AND payment_id = :payment_id "
                "AND phase = :shown_phase AND updated_at = :shown_updated_at",
                values,
            )
            if result.rowcount != 1:
                return False
            connection.execute(_INSERT_JOURNAL_SQL, _journal_row(entry))
        return True

    # --- a source's id prefix -----------------------------------------------------------------
    def source_prefix(self, source: str) -> str | None:
        """The id_prefix the source's cases were stored under, where known."""
        return self.meta(f"{_PREFIX_KEY}{source}")

    def cases_outside_prefix(self, source: str, prefix: str) -> int:
        """How many of the source's cases have an accountingInvoiceId not under `prefix`."""
        if not prefix:
            return 0  # every id starts with ""
        with self._read() as connection:
            (count,) = connection.execute(
                "SELECT count(*) FROM cases WHERE source = ? "
                "AND substr(accounting_invoice_id, 1, ?) != ?",
                (source, len(prefix), prefix),
            ).fetchone()
        return int(count)

    def source_case_count(self, source: str) -> int:
        with self._read() as connection:
            (count,) = connection.execute(
                "SELECT count(*) FROM cases WHERE source = ?", (source,)
            ).fetchone()
        return int(count)


_PREFIX_KEY = "id_prefix:"


def utc_now() -> datetime:
    return datetime.now(UTC)
