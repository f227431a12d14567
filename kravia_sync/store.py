"""The local state store: cases, the journal of remote calls, runs, quarantine and the lease.

SQLite by default (WAL, `synchronous=FULL`, `BEGIN IMMEDIATE` for writes). Tables are sqlmodel
models; the hot paths use SQLAlchemy Core on them, so a 100,000-case load is a plain tuple scan.
"""

from __future__ import annotations

import itertools
import json
import sqlite3
import threading
import uuid
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields, replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from pathlib import Path
from typing import Any, Self

from sqlalchemy import (
    Connection,
    Engine,
    String,
    TypeDecorator,
    create_engine,
    delete,
    event,
    func,
    select,
    update,
)
from sqlalchemy import insert as sa_insert
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Dialect
from sqlmodel import Field, SQLModel

from kravia_sync._process import holder_alive, this_process
from kravia_sync.identity import KnownCase
from kravia_sync.lifecycle import CaseState, CaseSummary, Phase
from kravia_sync.payments import (
    FINAL_PAYMENT_PHASES,
    PaymentKind,
    PaymentLine,
    PaymentPhase,
    PaymentState,
)

__all__ = [
    "SCHEMA_VERSION",
    "CaseWrite",
    "JournalEntry",
    "LeaseHeldError",
    "LeaseLostError",
    "MirrorItem",
    "QuarantineEntry",
    "SchemaError",
    "StateConflictError",
    "StateStore",
    "WriteResult",
    "WriteStatus",
]

SCHEMA_VERSION = 3


def _utc_text(value: datetime) -> str:
    if value.tzinfo is None:
        raise ValueError("naive datetimes are not stored: time is timezone-aware")
    return value.astimezone(UTC).isoformat(timespec="microseconds")


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime, stored as ISO 8601 text (sortable)."""

    impl = String(40)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> str | None:
        del dialect
        return None if value is None else _utc_text(value)

    def process_result_value(self, value: str | None, dialect: Dialect) -> datetime | None:
        del dialect
        return None if value is None else datetime.fromisoformat(value)


class DecimalText(TypeDecorator[Decimal]):
    """An exact amount, stored as text (SQLite's NUMERIC would round it through a float)."""

    impl = String(40)
    cache_ok = True

    def process_bind_param(self, value: Decimal | None, dialect: Dialect) -> str | None:
        del dialect
        return None if value is None else str(value)

    def process_result_value(self, value: str | None, dialect: Dialect) -> Decimal | None:
        del dialect
        return None if value is None else Decimal(value)


class Meta(SQLModel, table=True):
    __tablename__ = "meta"
    key: str = Field(primary_key=True)
    value: str


class CaseRow(SQLModel, table=True):
    __tablename__ = "cases"
    # Clustered on the primary key: a look-up by accountingInvoiceId is one B-tree descent.
    __table_args__ = {"sqlite_with_rowid": False}
    accounting_invoice_id: str = Field(primary_key=True)
    source: str = Field(index=True)
    record_key: str
    invoice_number: str = Field(index=True)
    phase: str = Field(index=True)
    fingerprint: str
    record_hash: str
    has_document: bool
    first_seen_at: datetime = Field(sa_type=UTCDateTime)
    updated_at: datetime = Field(sa_type=UTCDateTime)
    kravia_id: int | None = Field(default=None, index=True)
    registered_fingerprint: str | None = None
    pending_attempt: str | None = None
    pending_since: datetime | None = Field(default=None, sa_type=UTCDateTime)
    attempts: int = 0
    lookups: int = 0
    next_attempt_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    last_error: str | None = None
    changed_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    # Schema 2: keeping cases in step after registration.
    amount: Decimal | None = Field(default=None, sa_type=DecimalText)
    payouts_accounted: Decimal | None = Field(default=None, sa_type=DecimalText)
    attention: str | None = None
    approved_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    kravia_status: str | None = None
    kravia_remaining: Decimal | None = Field(default=None, sa_type=DecimalText)
    status_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    hold_action_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    registered_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    # Schema 3: grows with every write of the row; each write names the one it read.
    revision: int = 1
    settle_after: datetime | None = Field(default=None, sa_type=UTCDateTime)
    not_kravia_ids: str | None = None
    amount_floor: Decimal | None = Field(default=None, sa_type=DecimalText)


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


class PaymentRow(SQLModel, table=True):
    """A payment or credit note of a source, and how far it got (schema 2)."""

    __tablename__ = "payments"
    source: str = Field(primary_key=True)
    payment_id: str = Field(primary_key=True)
    kind: str
    paid_on: str  # ISO date
    lines: str  # JSON: [{"accounting_invoice_id", "amount", "sent"}]
    phase: str = Field(index=True)
    fingerprint: str
    first_seen_at: datetime = Field(sa_type=UTCDateTime)
    updated_at: datetime = Field(sa_type=UTCDateTime)
    description: str | None = None
    derived: bool = False
    pending_attempt: str | None = None
    pending_since: datetime | None = Field(default=None, sa_type=UTCDateTime)
    attempts: int = 0
    next_attempt_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    note: str | None = None
    settle_after: datetime | None = Field(default=None, sa_type=UTCDateTime)  # schema 3


class HoldRow(SQLModel, table=True):
    """An operator's hold on an invoice, by accountingInvoiceId or invoice number (schema 2)."""

    __tablename__ = "holds"
    invoice: str = Field(primary_key=True)
    reason: str
    held_at: datetime = Field(sa_type=UTCDateTime)
    held_by: str


class JournalRow(SQLModel, table=True):
    """Append-only: an `intent` row before each remote call, an `outcome` row after it."""

    __tablename__ = "journal"
    id: int | None = Field(default=None, primary_key=True)
    attempt_id: str = Field(index=True)
    kind: str  # intent | outcome
    operation: str
    accounting_invoice_id: str = Field(index=True)
    at: datetime = Field(sa_type=UTCDateTime)
    run_id: int | None = None
    kravia_id: int | None = None
    outcome: str | None = None  # ok | transient | terminal | ambiguous | auth
    http_status: int | None = None
    duration_ms: int | None = None
    message: str | None = None
    payment_id: str | None = Field(default=None, index=True)  # schema 2: payment calls


class RunRow(SQLModel, table=True):
    __tablename__ = "runs"
    id: int | None = Field(default=None, primary_key=True)
    started_at: datetime = Field(sa_type=UTCDateTime)
    finished_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    holder: str
    command: str
    status: str = "running"  # running | done | attention | failed
    counts: str = "{}"  # JSON object
    error: str | None = None


class QuarantineRow(SQLModel, table=True):
    __tablename__ = "quarantine"
    source: str = Field(primary_key=True)
    record_key: str = Field(primary_key=True)
    kind: str  # invalid | waiting
    field: str
    reason: str
    accounting_invoice_id: str | None = Field(default=None, index=True)
    invoice_number: str | None = None
    first_seen_at: datetime = Field(sa_type=UTCDateTime)
    last_seen_at: datetime = Field(sa_type=UTCDateTime)


class LeaseRow(SQLModel, table=True):
    """The writer lease. The row stays when the lease is released (`holder_id` empty), so its
    epoch only ever grows: every take-over by another holder adds one."""

    __tablename__ = "lease"
    name: str = Field(primary_key=True)
    holder: str  # for people: "pid 1234 on host"
    host: str
    pid: int
    acquired_at: datetime = Field(sa_type=UTCDateTime)
    expires_at: datetime = Field(sa_type=UTCDateTime)
    # Schema 3: fencing. A random id per holder, and whether the holder still runs can be told
    # (see `kravia_sync._process`).
    holder_id: str = ""
    epoch: int = 0
    host_key: str = ""
    started: str | None = None


class KraviaCaseRow(SQLModel, table=True):
    """What Kravia's search reported of each of the creditor's cases (schema 3): the mirror
    checked before any accountingInvoiceId is registered (`kravia_sync.mirror`)."""

    __tablename__ = "kravia_cases"
    kravia_id: int = Field(primary_key=True)
    accounting_invoice_id: str | None = Field(default=None, index=True)
    invoice_number: str | None = Field(default=None, index=True)
    status: str | None = None
    remaining: Decimal | None = Field(default=None, sa_type=DecimalText)
    last_updated: str | None = None  # Kravia's lastUpdatedTime, as it wrote it
    seen_at: datetime = Field(sa_type=UTCDateTime)


class _NotNewError(Exception):
    """The payment is no longer new: another writer began it."""


class SchemaError(RuntimeError):
    """The state database is not one this version of kravia-sync can use."""


class LeaseHeldError(RuntimeError):
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


class LeaseLostError(RuntimeError):
    """The writer lease is no longer this store's (another process took it over): nothing
    more may be written or sent."""


class StateConflictError(RuntimeError):
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


@dataclass(frozen=True, slots=True)
class JournalEntry:
    attempt_id: str
    kind: str
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
_TABLES = [
    Meta.__table__,  # type: ignore[attr-defined]
    CaseRow.__table__,  # type: ignore[attr-defined]
    JournalRow.__table__,  # type: ignore[attr-defined]
    RunRow.__table__,  # type: ignore[attr-defined]
    QuarantineRow.__table__,  # type: ignore[attr-defined]
    LeaseRow.__table__,  # type: ignore[attr-defined]
    PaymentRow.__table__,  # type: ignore[attr-defined]
    HoldRow.__table__,  # type: ignore[attr-defined]
    KraviaCaseRow.__table__,  # type: ignore[attr-defined]
]
CASES = CaseRow.__table__  # type: ignore[attr-defined]
JOURNAL = JournalRow.__table__  # type: ignore[attr-defined]
RUNS = RunRow.__table__  # type: ignore[attr-defined]
QUARANTINE = QuarantineRow.__table__  # type: ignore[attr-defined]
LEASE = LeaseRow.__table__  # type: ignore[attr-defined]
META = Meta.__table__  # type: ignore[attr-defined]
PAYMENTS = PaymentRow.__table__  # type: ignore[attr-defined]
HOLDS = HoldRow.__table__  # type: ignore[attr-defined]
KRAVIA_CASES = KraviaCaseRow.__table__  # type: ignore[attr-defined]
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
        self._db = sqlite3.connect(path, timeout=30, isolation_level=None)
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
        if seen is not None:
            return [
                aid
                for (aid,) in self._db.execute(query, (self._source, *listed))
                if aid not in seen
            ]
        query += " AND accounting_invoice_id NOT IN (SELECT aid FROM temp.seen_ids)"
        return [aid for (aid,) in self._db.execute(query, (self._source, *listed))]


_SETTLING = (Phase.REGISTERING.value, Phase.UPLOADING.value, Phase.STARTING.value)


def _chunks(ids: Iterable[str], size: int = 500) -> Iterator[list[str]]:
    """`ids` in lists of `size`, to stay below SQLite's limit on bound variables."""
    wanted = list(ids)
    for start in range(0, len(wanted), size):
        yield wanted[start : start + size]


def _db_value(value: object) -> object:
    """A value as the driver stores it: the same encoding `UTCDateTime` and the enums use."""
    if isinstance(value, datetime):
        return _utc_text(value)
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
            _utc_text(datetime.now(UTC)),
        ),
    )


def _decimal_or_none(value: object) -> Decimal | None:
    return None if value is None else Decimal(str(value))


def _case_row(case: CaseState, names: Iterable[str]) -> tuple[object, ...]:
    return tuple(_db_value(getattr(case, name)) for name in names)


def _journal_row(entry: JournalEntry) -> tuple[object, ...]:
    return tuple(_db_value(getattr(entry, name)) for name in _JOURNAL_FIELDS)


def _cas_write(
    execute: Any,  # noqa: ANN401 - a DB-API cursor's or SQLAlchemy's exec_driver_sql
    case: CaseState,
    names: tuple[str, ...],
    update_sql: str,
) -> CaseState | None:
    """Write `case` as the revision after the one it carries (0: insert a new row), only if
    the stored row is still at that revision; the case as stored, or None (a conflict)."""
    stored = replace(case, revision=case.revision + 1)
    if case.revision == 0:
        result = execute(_INSERT_CASE_SQL, _case_row(stored, _CASE_FIELDS))
    else:
        values = (*_case_row(stored, names), case.accounting_invoice_id, case.revision)
        result = execute(update_sql, values)
    return stored if result.rowcount == 1 else None


def _case_from_row(row: Mapping[Any, Any]) -> CaseState:
    values = {name: row[name] for name in _CASE_FIELDS}
    values["phase"] = Phase(values["phase"])
    return CaseState(**values)


def _payment_from_row(row: Mapping[Any, Any]) -> PaymentState:
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


def _case_values(case: CaseState) -> dict[str, Any]:
    values = asdict(case)
    values["phase"] = case.phase.value
    return values


def _sqlite_engine(path: Path) -> Engine:
    engine = create_engine(
        f"sqlite:///{path}", connect_args={"check_same_thread": False, "timeout": 30}
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:  # noqa: ANN401
        dbapi_connection.isolation_level = None  # we issue BEGIN ourselves
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        mode = connection.get_execution_options().get("sqlite_begin", "DEFERRED")
        connection.exec_driver_sql(f"BEGIN {mode}")

    return engine


class StateStore:
    """The state database. Reads may come from any thread; writes are short transactions.

    Each store is its own lease holder (a random `holder_id`). Once it has taken the writer
    lease, every write the engine makes checks, in its transaction, that the lease is still
    this store's at the epoch it took it at (a fence): a writer whose lease another process
    took over cannot write or send anything more."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self.engine = _sqlite_engine(path)
        # The hot write path keeps one driver connection (used by one thread at a time).
        self._batch_lock = threading.Lock()
        self._batch_connection: Any = None
        self._lookup_lock = threading.Lock()
        self._lookup_connection: Any = None
        self.holder_id = uuid.uuid4().hex
        self._epoch: int | None = None  # the lease's epoch when this store took it
        try:
            self._check_schema()
        except BaseException:
            self.engine.dispose()
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
        self.engine.dispose()

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        with self.engine.connect() as connection:
            connection.execution_options(sqlite_begin="IMMEDIATE")
            with connection.begin():
                yield connection

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        with self.engine.connect() as connection, connection.begin():
            yield connection

    @contextmanager
    def _fenced_write(self) -> Iterator[Connection]:
        """A write transaction of the engine: refused (`LeaseLostError`, nothing written) when
        this store took the writer lease and it is no longer ours."""
        with self._write() as connection:
            if not self._fence_holds(connection.exec_driver_sql):
                raise LeaseLostError(_LEASE_LOST)
            yield connection

    def _fence_holds(self, execute: Any) -> bool:  # noqa: ANN401 - a DB-API or SQLAlchemy execute
        """Whether the writer lease is still this store's, read inside the caller's
        transaction. A store that never took the lease (an operator command, a test) is not
        fenced."""
        if self._epoch is None:
            return True
        row = execute(_FENCE_SQL, (WRITER_LEASE,)).fetchone()
        return row is not None and (row[0], row[1]) == (self.holder_id, self._epoch)

    # --- schema -------------------------------------------------------------------------------
    def _check_schema(self) -> None:
        with self._write() as connection:
            tables = set(sa_inspect(connection).get_table_names())
            if not tables:
                for table in _TABLES:
                    table.create(connection)
                connection.execute(
                    sa_insert(META).values(key="schema_version", value=str(SCHEMA_VERSION))
                )
                return
            if "meta" not in tables:
                raise SchemaError(
                    f"{self.path} is not a kravia-sync state database (it has no schema version)"
                )
            found = connection.execute(
                select(META.c.value).where(META.c.key == "schema_version")
            ).scalar_one_or_none()
            if found is None or not found.isdigit():
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
    def _migrate_1_to_2(connection: Connection) -> None:
        """Schema 2 keeps cases in step after registration: new case columns, payments and
        holds. Existing rows keep their values; the new columns start empty."""
        for column in _CASES_V2_COLUMNS:
            connection.exec_driver_sql(f"ALTER TABLE cases ADD COLUMN {column}")
        # Every record is validated once more, so each case learns its amount (a later drop
        # in it is money paid) instead of waiting for its first change.
        connection.exec_driver_sql("UPDATE cases SET record_hash = ''")
        connection.exec_driver_sql("ALTER TABLE journal ADD COLUMN payment_id VARCHAR")
        connection.exec_driver_sql("CREATE INDEX ix_journal_payment_id ON journal (payment_id)")
        PAYMENTS.create(connection)
        HOLDS.create(connection)
        connection.execute(update(META).where(META.c.key == "schema_version").values(value="2"))

    @staticmethod
    def _migrate_2_to_3(connection: Connection) -> None:
        """Schema 3 fences writers and mirrors Kravia: a revision per case row (compare-and-
        set), a holder id and epoch on the lease, and the table of Kravia's cases (filled from
        scratch by the next pass that registers or pulls back statuses, which replaces the
        old status cursor). Refused while an older kravia-sync holds an unexpired lease: it
        would go on writing unfenced."""
        live = connection.exec_driver_sql("SELECT holder, expires_at FROM lease").fetchall()
        now = _utc_text(datetime.now(UTC))
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
            connection.exec_driver_sql(f"ALTER TABLE cases ADD COLUMN {column}")
        for column in (
            "holder_id VARCHAR NOT NULL DEFAULT ''",
            "epoch INTEGER NOT NULL DEFAULT 0",
            "host_key VARCHAR NOT NULL DEFAULT ''",
            "started VARCHAR",
        ):
            connection.exec_driver_sql(f"ALTER TABLE lease ADD COLUMN {column}")
        payment_columns = {c["name"] for c in sa_inspect(connection).get_columns("payments")}
        if "settle_after" not in payment_columns:  # a table made by the 1→2 step has it
            connection.exec_driver_sql("ALTER TABLE payments ADD COLUMN settle_after VARCHAR(40)")
        # A lease of an older version holds no epoch: it is taken as released.
        connection.exec_driver_sql("DELETE FROM lease")
        KRAVIA_CASES.create(connection)
        connection.execute(delete(META).where(META.c.key == "status_cursor"))
        connection.execute(update(META).where(META.c.key == "schema_version").values(value="3"))

    def schema_version(self) -> int:
        with self._read() as connection:
            value = connection.execute(
                select(META.c.value).where(META.c.key == "schema_version")
            ).scalar_one()
        return int(value)

    # --- cases --------------------------------------------------------------------------------
    def load_cases(self, source: str) -> dict[str, CaseState]:
        with self._read() as connection:
            rows = connection.execute(select(CASES).where(CASES.c.source == source)).mappings()
            return {row["accounting_invoice_id"]: _case_from_row(row) for row in rows}

    def source_read(self, source: str) -> SourceRead:
        """The state side of reading `source` in chunks (see `SourceRead`)."""
        return SourceRead(self.path, source)

    def load_cases_by_id(self, ids: Iterable[str]) -> dict[str, CaseState]:
        """The full stored state of the cases `ids` (in chunks, for SQLite's variable limit)."""
        found: dict[str, CaseState] = {}
        with self._read() as connection:
            for chunk in _chunks(ids):
                rows = connection.execute(
                    select(CASES).where(CASES.c.accounting_invoice_id.in_(chunk))
                ).mappings()
                found.update((row["accounting_invoice_id"], _case_from_row(row)) for row in rows)
        return found

    def find_cases(self, term: str) -> list[CaseState]:
        """Cases whose invoice number, accountingInvoiceId or Kravia id is `term`."""
        condition = (CASES.c.invoice_number == term) | (CASES.c.accounting_invoice_id == term)
        if term.isdigit():
            condition = condition | (CASES.c.kravia_id == int(term))
        with self._read() as connection:
            rows = connection.execute(select(CASES).where(condition)).mappings()
            return [_case_from_row(row) for row in rows]

    def cases_in(self, phases: Iterable[Phase], limit: int = 50) -> list[CaseState]:
        with self._read() as connection:
            rows = connection.execute(
                select(CASES)
                .where(CASES.c.phase.in_([phase.value for phase in phases]))
                .order_by(CASES.c.updated_at.desc())
                .limit(limit)
            ).mappings()
            return [_case_from_row(row) for row in rows]

    def cases_with_attention(self, limit: int = 50) -> list[CaseState]:
        """Cases with a change a person must make in Kravia, the most recent first."""
        with self._read() as connection:
            rows = connection.execute(
                select(CASES)
                .where(CASES.c.attention.is_not(None))
                .order_by(CASES.c.updated_at.desc())
                .limit(limit)
            ).mappings()
            return [_case_from_row(row) for row in rows]

    def kravia_status_counts(self) -> dict[str, int]:
        """Cases by the status Kravia last reported (pulled back; unknown ones left out)."""
        with self._read() as connection:
            rows = connection.execute(
                select(CASES.c.kravia_status, func.count())
                .where(CASES.c.kravia_status.is_not(None))
                .group_by(CASES.c.kravia_status)
            )
            return {str(status): int(count) for status, count in rows}

    def phase_counts(self) -> dict[str, int]:
        from sqlalchemy import func  # noqa: PLC0415

        with self._read() as connection:
            rows = connection.execute(select(CASES.c.phase, func.count()).group_by(CASES.c.phase))
            return {str(phase): int(count) for phase, count in rows}

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
    def _batch(self) -> Iterator[Any]:
        """A write transaction on the hot path's own driver connection: rows go to the driver
        as plain tuples (every remote call writes twice, so this is kept lean)."""
        with self._batch_lock:
            if self._batch_connection is None:
                self._batch_connection = self.engine.raw_connection()
            cursor = self._batch_connection.cursor()
            try:
                cursor.execute("BEGIN IMMEDIATE")
                try:
                    yield cursor
                    cursor.execute("COMMIT")
                except BaseException:
                    if self._batch_connection.in_transaction:
                        cursor.execute("ROLLBACK")
                    raise
            finally:
                cursor.close()

    def commit_case_writes(self, writes: Sequence[CaseWrite]) -> list[WriteResult]:
        """The engine's case writes, in order, in one transaction (see `CaseWrite`); the
        result of each. The lease is read once, inside the transaction."""
        with self._batch() as cursor:
            fence_holds = self._fence_holds(cursor.execute)
            return [self._commit_one(cursor, write, fence_holds=fence_holds) for write in writes]

    def _commit_one(self, cursor: Any, write: CaseWrite, *, fence_holds: bool) -> WriteResult:  # noqa: ANN401
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
            stored = _cas_write(cursor.execute, write.case, _DRIVER_FIELDS, _DRIVER_UPDATE_SQL)
            if stored is None:
                status = WriteStatus.CONFLICT
        if write.notes is not None and status is WriteStatus.OK:
            self._write_note_row(cursor, *write.notes)
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
                    select(PAYMENTS).where(
                        PAYMENTS.c.source == source, PAYMENTS.c.payment_id.in_(chunk)
                    )
                ).mappings()
                found.update((row["payment_id"], _payment_from_row(row)) for row in rows)
            if unfinished:
                final = [phase.value for phase in FINAL_PAYMENT_PHASES]
                rows = connection.execute(
                    select(PAYMENTS).where(
                        PAYMENTS.c.source == source, PAYMENTS.c.phase.not_in(final)
                    )
                ).mappings()
                found.update((row["payment_id"], _payment_from_row(row)) for row in rows)
        return found

    def all_payments(self, limit: int = 200) -> list[PaymentState]:
        """Payments of every source, the most recently changed first."""
        with self._read() as connection:
            rows = connection.execute(
                select(PAYMENTS).order_by(PAYMENTS.c.updated_at.desc()).limit(limit)
            ).mappings()
            return [_payment_from_row(row) for row in rows]

    def payment_counts(self) -> dict[str, int]:
        with self._read() as connection:
            rows = connection.execute(
                select(PAYMENTS.c.phase, func.count()).group_by(PAYMENTS.c.phase)
            )
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
                values = _payment_values(payment)
                statement = sqlite_insert(PAYMENTS).values(**values)
                connection.execute(
                    statement.on_conflict_do_update(
                        index_elements=["source", "payment_id"],
                        set_={k: v for k, v in values.items() if k not in {"source", "payment_id"}},
                    )
                )
            for case in cases:
                stored = _cas_write(
                    connection.exec_driver_sql, case, _DIFF_FIELDS, _DIFF_UPDATE_SQL
                )
                if stored is None:
                    raise StateConflictError(
                        f"case {case.accounting_invoice_id} changed in the state store while "
                        "its source was read (an operator command?); the next pass reads it "
                        "again"
                    )
                stored_cases.append(stored)
            self._write_notes(connection, case_notes)
            entries = [asdict(entry) for entry in journal]
            if entries:
                connection.execute(sa_insert(JOURNAL), entries)
        return stored_cases

    def begin_payment(
        self,
        pending: PaymentState,
        intent: JournalEntry,
        case_notes: Iterable[tuple[str, Mapping[str, Any]]] = (),
    ) -> bool:
        """Commit a payment's move to `sending` with its intent, only if it is still `new`
        and not in flight (so two writers can never both send it); False if it is not."""
        values = _payment_values(pending)
        try:
            with self._fenced_write() as connection:
                result = connection.execute(
                    update(PAYMENTS)
                    .where(
                        PAYMENTS.c.source == pending.source,
                        PAYMENTS.c.payment_id == pending.payment_id,
                        PAYMENTS.c.phase == PaymentPhase.NEW.value,
                        PAYMENTS.c.pending_attempt.is_(None),
                    )
                    .values({k: v for k, v in values.items() if k not in {"source", "payment_id"}})
                )
                if result.rowcount != 1:
                    raise _NotNewError  # noqa: TRY301 - leaving the block rolls back
                self._write_notes(connection, case_notes)
                connection.execute(sa_insert(JOURNAL), [asdict(intent)])
        except _NotNewError:
            return False
        return True

    def payment_journal(self, payment_id: str) -> list[dict[str, Any]]:
        with self._read() as connection:
            rows = connection.execute(
                select(JOURNAL).where(JOURNAL.c.payment_id == payment_id).order_by(JOURNAL.c.id)
            ).mappings()
            return [dict(row) for row in rows]

    _NOTE_COLUMNS = frozenset({"attention", "hold_action_at", "payouts_accounted", "updated_at"})

    def _write_note_row(self, cursor: Any, aid: str, values: Mapping[str, Any]) -> None:  # noqa: ANN401
        if set(values) - self._NOTE_COLUMNS:
            raise ValueError(f"not a note column: {sorted(values)}")
        assignments = ", ".join(f"{name} = ?" for name in values)
        cursor.execute(
            f"UPDATE cases SET {assignments} WHERE accounting_invoice_id = ?",  # noqa: S608 - checked column names
            (*(_db_value(value) for value in values.values()), aid),
        )

    def set_case_notes(self, updates: Iterable[tuple[str, Mapping[str, Any]]]) -> None:
        """Set only these columns of these cases (accountingInvoiceId → values), leaving the
        rest of each row (its phase, its attempts, its revision) as the pass's other writes
        left it. Fenced."""
        with self._fenced_write() as connection:
            self._write_notes(connection, updates)

    def _write_notes(
        self, connection: Connection, updates: Iterable[tuple[str, Mapping[str, Any]]]
    ) -> None:
        for aid, values in updates:
            unknown = set(values) - self._NOTE_COLUMNS
            if unknown:
                raise ValueError(f"not a note column: {sorted(unknown)}")
            connection.execute(
                update(CASES).where(CASES.c.accounting_invoice_id == aid).values(**values)
            )

    # --- holds --------------------------------------------------------------------------------
    def hold(self, invoice: str, *, reason: str, by: str, now: datetime) -> None:
        with self._write() as connection:
            statement = sqlite_insert(HOLDS).values(
                invoice=invoice, reason=reason, held_at=now, held_by=by
            )
            connection.execute(
                statement.on_conflict_do_update(
                    index_elements=["invoice"],
                    set_={"reason": reason, "held_at": now, "held_by": by},
                )
            )

    def release(self, invoice: str) -> bool:
        """Remove a hold; the cases it flagged lose the flag (a pause sent is undone in
        Kravia by a person)."""
        with self._write() as connection:
            result = connection.execute(delete(HOLDS).where(HOLDS.c.invoice == invoice))
            held = (CASES.c.accounting_invoice_id == invoice) | (CASES.c.invoice_number == invoice)
            connection.execute(update(CASES).where(held).values(hold_action_at=None))
            connection.execute(
                update(CASES)
                .where(
                    held,
                    CASES.c.attention.like("on hold (%")
                    | CASES.c.attention.like("the hold action %"),
                )
                .values(attention=None)
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
                rows = connection.execute(
                    select(CASES.c.accounting_invoice_id).where(
                        CASES.c.phase.in_(waiting), CASES.c.approved_at.is_(None)
                    )
                ).scalars()
                targets = list(rows)
            else:
                targets = []
                for invoice in invoices:
                    found = connection.execute(
                        select(CASES.c.accounting_invoice_id, CASES.c.phase).where(
                            (CASES.c.accounting_invoice_id == invoice)
                            | (CASES.c.invoice_number == invoice)
                        )
                    ).all()
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
                    update(CASES)
                    .where(CASES.c.accounting_invoice_id == aid)
                    .values(approved_at=now)
                )
                approved.append(aid)
        return approved, refused

    # --- status pulled back from Kravia --------------------------------------------------------
    def meta(self, key: str) -> str | None:
        with self._read() as connection:
            value: str | None = connection.execute(
                select(META.c.value).where(META.c.key == key)
            ).scalar_one_or_none()
            return value

    def set_meta(self, key: str, value: str) -> None:
        """Set a value the engine keeps (fenced)."""
        with self._fenced_write() as connection:
            statement = sqlite_insert(META).values(key=key, value=value)
            connection.execute(
                statement.on_conflict_do_update(index_elements=["key"], set_={"value": value})
            )

    def earliest_first_seen(self) -> datetime | None:
        with self._read() as connection:
            value = connection.execute(
                select(func.min(CASES.c.first_seen_at)).where(CASES.c.kravia_id.is_not(None))
            ).scalar_one_or_none()
        return None if value is None else datetime.fromisoformat(str(value))

    def record_statuses(
        self, statuses: Iterable[tuple[int, str | None, Decimal | None]], *, now: datetime
    ) -> int:
        """Store what Kravia reports of its cases (Kravia id, status, capital left); cases we
        do not know are ignored. How many of ours changed."""
        changed = 0
        with self._fenced_write() as connection:
            for kravia_id, status, remaining in statuses:
                result = connection.execute(
                    update(CASES)
                    .where(
                        CASES.c.kravia_id == kravia_id,
                        (CASES.c.kravia_status.is_distinct_from(status))
                        | (CASES.c.kravia_remaining.is_distinct_from(remaining)),
                    )
                    .values(kravia_status=status, kravia_remaining=remaining, status_at=now)
                )
                changed += result.rowcount
        return changed

    def holds(self) -> dict[str, dict[str, Any]]:
        """Every hold, by the accountingInvoiceId or invoice number it was placed on."""
        with self._read() as connection:
            rows = connection.execute(select(HOLDS).order_by(HOLDS.c.held_at)).mappings()
            return {row["invoice"]: dict(row) for row in rows}

    def journal_for(self, accounting_invoice_id: str) -> list[dict[str, Any]]:
        with self._read() as connection:
            rows = connection.execute(
                select(JOURNAL)
                .where(JOURNAL.c.accounting_invoice_id == accounting_invoice_id)
                .order_by(JOURNAL.c.id)
            ).mappings()
            return [dict(row) for row in rows]

    # --- quarantine ---------------------------------------------------------------------------
    def load_quarantine(self, source: str) -> dict[str, QuarantineEntry]:
        with self._read() as connection:
            rows = connection.execute(
                select(QUARANTINE).where(QUARANTINE.c.source == source)
            ).mappings()
            return {
                row["record_key"]: QuarantineEntry(
                    record_key=row["record_key"],
                    kind=row["kind"],
                    field=row["field"],
                    reason=row["reason"],
                    accounting_invoice_id=row["accounting_invoice_id"],
                    invoice_number=row["invoice_number"],
                )
                for row in rows
            }

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
                values = asdict(entry) | {"source": source, "last_seen_at": now}
                if entry.record_key in known:
                    connection.execute(
                        update(QUARANTINE)
                        .where(
                            (QUARANTINE.c.source == source)
                            & (QUARANTINE.c.record_key == entry.record_key)
                        )
                        .values(**values)
                    )
                else:
                    connection.execute(sa_insert(QUARANTINE).values(**values, first_seen_at=now))
            if resolved:
                connection.execute(
                    delete(QUARANTINE).where(
                        (QUARANTINE.c.source == source) & QUARANTINE.c.record_key.in_(resolved)
                    )
                )

    def quarantined(self, kind: str | None = None) -> list[dict[str, Any]]:
        query = select(QUARANTINE).order_by(QUARANTINE.c.source, QUARANTINE.c.record_key)
        if kind is not None:
            query = query.where(QUARANTINE.c.kind == kind)
        with self._read() as connection:
            return [dict(row) for row in connection.execute(query).mappings()]

    # --- runs ---------------------------------------------------------------------------------
    def start_run(self, *, holder: str, command: str, now: datetime) -> int:
        with self._write() as connection:
            result = connection.execute(
                sa_insert(RUNS).values(started_at=now, holder=holder, command=command)
            )
            run_id = result.inserted_primary_key
            assert run_id is not None  # noqa: S101 - autoincrement always gives one
            return int(run_id[0])

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
                update(RUNS)
                .where(RUNS.c.id == run_id)
                .values(
                    finished_at=now,
                    status=status,
                    counts=json.dumps(counts, sort_keys=True, default=str),
                    error=error,
                )
            )

    def last_runs(self, limit: int = 5) -> list[dict[str, Any]]:
        with self._read() as connection:
            rows = connection.execute(
                select(RUNS).order_by(RUNS.c.id.desc()).limit(limit)
            ).mappings()
            return [dict(row) | {"counts": json.loads(row["counts"])} for row in rows]

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
            row = self._lease_row(connection)
            ours = row is not None and row["holder_id"] == self.holder_id
            if row is not None and row["holder_id"] and not ours:
                alive = holder_alive(row["host_key"], row["pid"], row["started"])
                if row["expires_at"] > now and alive is not False:
                    raise LeaseHeldError(row["holder"], row["acquired_at"], row["expires_at"])
            epoch = (0 if row is None else row["epoch"]) + (0 if ours else 1)
            values = {
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
            connection.execute(delete(LEASE).where(LEASE.c.name == WRITER_LEASE))
            connection.execute(sa_insert(LEASE).values(name=WRITER_LEASE, **values))
        self._epoch = epoch
        return holder

    @staticmethod
    def _lease_row(connection: Connection) -> dict[str, Any] | None:
        row = (
            connection.execute(select(LEASE).where(LEASE.c.name == WRITER_LEASE)).mappings().first()
        )
        return None if row is None else dict(row)

    def renew_lease(self, *, ttl: timedelta, now: datetime) -> bool:
        """Extend our lease; False when it is no longer ours (it was taken over)."""
        if self._epoch is None:
            return False
        with self._write() as connection:
            result = connection.execute(
                update(LEASE)
                .where(
                    LEASE.c.name == WRITER_LEASE,
                    LEASE.c.holder_id == self.holder_id,
                    LEASE.c.epoch == self._epoch,
                )
                .values(expires_at=now + ttl)
            )
            return bool(result.rowcount == 1)

    def release_lease(self) -> None:
        """Give the lease up (if it is still ours). Its row stays, with its epoch; this store
        is fenced from then on, as if the lease had been taken over."""
        with self._write() as connection:
            connection.execute(
                update(LEASE)
                .where(LEASE.c.name == WRITER_LEASE, LEASE.c.holder_id == self.holder_id)
                .values(holder_id="")
            )

    @property
    def holds_lease(self) -> bool:
        """Whether this store took the writer lease and has not been fenced off since."""
        if self._epoch is None:
            return False
        with self._read() as connection:
            return self._fence_holds(connection.exec_driver_sql)

    def current_lease(self) -> dict[str, Any] | None:
        """The writer lease as held now, or None when nobody holds it."""
        with self._read() as connection:
            row = self._lease_row(connection)
            return None if row is None or not row["holder_id"] else dict(row)

    def force_unlock(self) -> dict[str, Any] | None:
        """Remove the writer lease, whoever holds it; what was removed, or None. Refused
        (`LeaseHeldError`) while its holder runs on this machine: that process would go on
        writing (it is fenced from its next write on, but its calls in flight finish)."""
        with self._write() as connection:
            row = self._lease_row(connection)
            if row is None or not row["holder_id"]:
                return None
            if holder_alive(row["host_key"], row["pid"], row["started"]):
                raise LeaseHeldError(row["holder"], row["acquired_at"], row["expires_at"])
            connection.execute(
                update(LEASE).where(LEASE.c.name == WRITER_LEASE).values(holder_id="")
            )
            return dict(row)

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
                values = {
                    "accounting_invoice_id": item.accounting_invoice_id,
                    "invoice_number": item.invoice_number,
                    "status": item.status,
                    "remaining": item.remaining,
                    "last_updated": item.last_updated,
                    "seen_at": now,
                }
                # A search that leaves the id out does not forget one details gave.
                kept = {
                    **values,
                    "accounting_invoice_id": func.coalesce(
                        item.accounting_invoice_id, KRAVIA_CASES.c.accounting_invoice_id
                    ),
                }
                connection.execute(
                    sqlite_insert(KRAVIA_CASES)
                    .values(kravia_id=item.kravia_id, **values)
                    .on_conflict_do_update(index_elements=["kravia_id"], set_=kept)
                )
                result = connection.execute(
                    update(CASES)
                    .where(
                        CASES.c.kravia_id == item.kravia_id,
                        (CASES.c.kravia_status.is_distinct_from(item.status))
                        | (CASES.c.kravia_remaining.is_distinct_from(item.remaining)),
                    )
                    .values(
                        kravia_status=item.status, kravia_remaining=item.remaining, status_at=now
                    )
                )
                if result.rowcount:
                    changed.append(item.kravia_id)
            for key, value in meta.items():
                statement = sqlite_insert(META).values(key=key, value=value)
                connection.execute(
                    statement.on_conflict_do_update(index_elements=["key"], set_={"value": value})
                )
        return changed

    def known_in_kravia(self, accounting_invoice_id: str, invoice_number: str) -> list[KnownCase]:
        """Kravia's cases, as last mirrored, with this accountingInvoiceId or invoice number.
        Asked for every invoice kept out of collection in every read, so it runs as one plain
        statement on a connection of its own (no transaction to open and close)."""
        with self._lookup_lock:
            if self._lookup_connection is None:
                self._lookup_connection = self.engine.raw_connection()
            cursor = self._lookup_connection.cursor()
            try:
                rows = cursor.execute(
                    _KNOWN_IN_KRAVIA_SQL, (accounting_invoice_id, invoice_number)
                ).fetchall()
            finally:
                cursor.close()
        return [KnownCase(kravia_id, aid, number) for kravia_id, aid, number in rows]

    def latest_kravia_id(self) -> int | None:
        """The Kravia id of the case of this store updated last, None when none has one."""
        with self._read() as connection:
            value: int | None = connection.execute(
                select(CASES.c.kravia_id)
                .where(CASES.c.kravia_id.is_not(None))
                .order_by(CASES.c.updated_at.desc())
                .limit(1)
            ).scalar_one_or_none()
            return value

    def has_kravia_cases(self) -> bool:
        """Whether any case of this store has a Kravia id."""
        with self._read() as connection:
            return (
                connection.execute(
                    select(CASES.c.kravia_id).where(CASES.c.kravia_id.is_not(None)).limit(1)
                ).first()
                is not None
            )

    def kravia_duplicates(self) -> dict[str, list[int]]:
        """Our accountingInvoiceIds that Kravia (as mirrored) holds more than one case of."""
        with self._read() as connection:
            rows = connection.exec_driver_sql(
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
                select(
                    KRAVIA_CASES.c.kravia_id,
                    KRAVIA_CASES.c.accounting_invoice_id,
                    KRAVIA_CASES.c.invoice_number,
                ).where(KRAVIA_CASES.c.kravia_id == kravia_id)
            ).first()
        return None if row is None else KnownCase(row[0], row[1], row[2])

    def mirrored_count(self) -> int:
        with self._read() as connection:
            return int(
                connection.execute(select(func.count()).select_from(KRAVIA_CASES)).scalar_one()
            )

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
            stored = _cas_write(cursor.execute, resolved, _DRIVER_FIELDS, _DRIVER_UPDATE_SQL)
            if stored is not None:
                cursor.execute(_INSERT_JOURNAL_SQL, _journal_row(entry))
        return stored

    def resolve_payment(
        self, payment: PaymentState, resolved: PaymentState, entry: JournalEntry
    ) -> bool:
        """An operator's decision on a payment that needs review: written only while it is
        still as they were shown it, journaled with their reason."""
        values = _payment_values(resolved)
        with self._write() as connection:
            result = connection.execute(
                update(PAYMENTS)
                .where(
                    PAYMENTS.c.source == payment.source,
                    PAYMENTS.c.payment_id == payment.payment_id,
                    PAYMENTS.c.phase == payment.phase.value,
                    PAYMENTS.c.updated_at == payment.updated_at,
                )
                .values({k: v for k, v in values.items() if k not in {"source", "payment_id"}})
            )
            if result.rowcount != 1:
                return False
            connection.execute(sa_insert(JOURNAL), [asdict(entry)])
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
            query = (
                select(func.count())
                .select_from(CASES)
                .where(
                    CASES.c.source == source,
                    func.substr(CASES.c.accounting_invoice_id, 1, len(prefix)) != prefix,
                )
            )
            return int(connection.execute(query).scalar_one())

    def source_case_count(self, source: str) -> int:
        with self._read() as connection:
            return int(
                connection.execute(
                    select(func.count()).select_from(CASES).where(CASES.c.source == source)
                ).scalar_one()
            )


_PREFIX_KEY = "id_prefix:"


def utc_now() -> datetime:
    return datetime.now(UTC)
