"""The state store's schema, defined once: one sqlmodel model per table.

The store itself (`kravia_sync.state.store`) reads and writes with the sqlite3 driver and never
imports this module on the way through a pass: it is needed only to create a new state database
or to migrate an older one (`create_statements`), and by whoever wants to query the state with
SQLAlchemy or sqlmodel. How each kind of column is stored:

- times: timezone-aware, kept as UTC ISO 8601 text with microseconds (sortable as text);
- amounts: `Decimal`, kept as text (SQLite's NUMERIC would round it through a float);
- flags: 0 or 1.

`tests/test_schema.py` holds the store's column lists against these models.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy import Index, String, Table, TypeDecorator, text
from sqlalchemy.dialects import sqlite
from sqlalchemy.engine import Dialect
from sqlalchemy.schema import CreateIndex, CreateTable
from sqlmodel import Field, SQLModel

from kravia_sync.state.stored import utc_text

__all__ = [
    "TABLES",
    "CaseRow",
    "DecimalText",
    "HoldRow",
    "InvoiceAliasRow",
    "JournalRow",
    "KraviaCaseRow",
    "LeaseRow",
    "Meta",
    "PaymentRow",
    "QuarantineRow",
    "RunRow",
    "SettlementBookingRow",
    "UTCDateTime",
    "create_statements",
]


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime, stored as ISO 8601 text (sortable)."""

    impl = String(40)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> str | None:
        del dialect
        return None if value is None else utc_text(value)

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
    # Schema 6: the few cases with a note, by source (a pass asks which of them came back).
    # On both columns, so that SQLite prefers it to the index of every case of the source.
    __table_args__ = (
        Index("ix_cases_noted", "source", "attention", sqlite_where=text("attention IS NOT NULL")),
        {"sqlite_with_rowid": False},
    )
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
    status: str = "running"  # a `kravia_sync.engine.summary.RunStatus`
    counts: str = "{}"  # JSON object
    error: str | None = None


class QuarantineRow(SQLModel, table=True):
    __tablename__ = "quarantine"
    source: str = Field(primary_key=True)
    record_key: str = Field(primary_key=True)
    kind: str  # why it is kept out: an `engine.gate.RefusalKind` (invalid, waiting, held, …)
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
    # (see `kravia_sync.state.process`).
    holder_id: str = ""
    epoch: int = 0
    host_key: str = ""
    started: str | None = None


class KraviaCaseRow(SQLModel, table=True):
    """What Kravia's search reported of each of the creditor's cases (schema 3): the mirror
    checked before any accountingInvoiceId is registered (`kravia_sync.engine.mirror`)."""

    __tablename__ = "kravia_cases"
    kravia_id: int = Field(primary_key=True)
    accounting_invoice_id: str | None = Field(default=None, index=True)
    invoice_number: str | None = Field(default=None, index=True)
    status: str | None = None
    remaining: Decimal | None = Field(default=None, sa_type=DecimalText)
    last_updated: str | None = None  # Kravia's lastUpdatedTime, as it wrote it
    seen_at: datetime = Field(sa_type=UTCDateTime)


class InvoiceAliasRow(SQLModel, table=True):
    """Another id a source gave an invoice after its case was registered (schema 4): records
    with `alias_id` are that case's (`accounting_invoice_id`), whose id never changes once
    sent (see `kravia_sync.engine.drift`)."""

    __tablename__ = "invoice_aliases"
    source: str = Field(primary_key=True)
    alias_id: str = Field(primary_key=True)
    accounting_invoice_id: str = Field(index=True)
    invoice_number: str
    recorded_at: datetime = Field(sa_type=UTCDateTime)


class SettlementBookingRow(SQLModel, table=True):
    """Append-only (schema 5): an `intent` row before each `PATCH settlements/{id}/bookkeep`
    (who books which of Kravia's payouts, under what reference, when), one or more `outcome`
    rows after it (`kravia_sync.state.payout_tables.BookingOutcome`)."""

    __tablename__ = "settlement_bookings"
    id: int | None = Field(default=None, primary_key=True)
    attempt_id: str = Field(index=True)
    kind: str  # intent | outcome
    settlement_id: int = Field(index=True)
    reference: str  # the internalAccountingId sent: the voucher in the creditor's books
    booked_by: str  # who ran the command (the OS user, or --by)
    at: datetime = Field(sa_type=UTCDateTime)
    outcome: str | None = None
    http_status: int | None = None
    message: str | None = None


TABLES: dict[str, Table] = {
    str(model.__tablename__): model.__table__  # type: ignore[union-attr]
    for model in (
        Meta,
        CaseRow,
        JournalRow,
        RunRow,
        QuarantineRow,
        LeaseRow,
        PaymentRow,
        HoldRow,
        KraviaCaseRow,
        InvoiceAliasRow,
        SettlementBookingRow,
    )
}


def create_statements(*names: str) -> list[str]:
    """The SQLite statements that create these tables (every table, in dependency order, when
    none is named) with their indexes."""
    dialect = sqlite.dialect()
    statements: list[str] = []
    for name in names or tuple(TABLES):
        table = TABLES[name]
        statements.append(str(CreateTable(table).compile(dialect=dialect)).strip())
        indexes: set[Index] = table.indexes
        statements.extend(
            str(CreateIndex(index).compile(dialect=dialect)).strip()
            for index in sorted(indexes, key=lambda index: str(index.name))
        )
    return statements
