# (the project has no copyright header convention; every module trips CPY001)
"""The SQL connector: overdue invoices from any database SQLAlchemy speaks to.

`query` returns one row per overdue invoice. Its columns are matched to the canonical record
fields (`kravia_sync.model.RECORD_FIELDS`): a field listed in `columns` is read from the column
named there; any other field from a column with the field's own name, so aliasing in the query
(`c.name AS debtor_name`) is all most schemas need. Column names match exactly, else ignoring
case (PostgreSQL folds unquoted aliases to lower case). Columns that are neither mapped nor
named like a field are ignored, so the query may return helper columns; one of them has a
meaning: `has_document` (see below).

Reading is safe by construction:

* **Read only, behind three walls.** First, every configured query (`query`,
  `payments_query`, `document_query`) is read by an SQL parser in its server's dialect when
  the settings are read, and refused with the reason unless it is one SELECT in which the
  parser sees nothing that writes (`_readonly`: no second statement, no UPDATE/CALL/BEGIN …
  END, no `SELECT … INTO`, no locking read, no known writing function such as `dblink_exec`).
  Second, every connection is made read-only at session level before it is used: PostgreSQL
  `SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY`, MariaDB/MySQL `SET SESSION
  TRANSACTION READ ONLY`, SQLite `PRAGMA query_only = ON`; a write the parser cannot see (a
  function that writes) is refused there, on this connection, but not what a function does
  over a connection of its own, nor a file the server writes. MS SQL Server has no such
  session setting. Third, and the one that holds: a database user that may only SELECT;
  `check` warns when the user could write (`check_warnings`). The connector never commits,
  so a write that got through all three is still rolled back when the connection closes,
  unless it committed itself.
* **Bound parameters only.** The query may use `:today` (today's date in `policy.timezone`), the
  document query `:invoice_number` and/or `:accounting_invoice_id` (the record's values).
  Values are always bound by the driver, never formatted into SQL. Another bind name is a
  settings error (a literal colon followed by a word can be written `\\:`).
* **Streamed.** Rows come through a server-side cursor where the driver has one
  (`stream_results`, fetched `fetch_size` at a time): memory does not grow with the table.
* **Exact types.** NUMERIC/DECIMAL (and MONEY: SQL Server's arrives as `Decimal`,
  PostgreSQL's locale-formatted text is parsed into one) stay `Decimal`; a `float` is passed
  on and refused by the model (use NUMERIC), except from SQLite, whose NUMERIC affinity stores
  REAL, where it is converted through its shortest `repr`. DATE, DATETIME/TIMESTAMP and ISO
  text dates are parsed by the model; NULL leaves the field out.
* **Secrets.** The password comes from the URL, `password_env` or `password_file`; it is
  redacted from every message (connection errors included) and never shown by `repr`.
* **Time-limited.** A database that takes the connection and never answers, or a query that
  runs for ever, must not stall the pass (nor, in the daemon, every other source): a connection
  must be ready within `connect_timeout_seconds`, a statement done within
  `statement_timeout_seconds`, each set the way its driver takes it (`driver_connect_args`,
  `statement_limit`, SQLite's progress handler). There is no "no limit". A limit reached
  fails the read with a `ConnectorError` naming the setting to raise.

Failures: a query that lacks a column for a required field fails before any row is yielded,
naming the field and the column looked for. A connection failure, a query the database
refuses, or a query that fails half-way raises `ConnectorError`: the engine marks the source
failed and takes nothing it did not read as gone. A bad row is an ordinary invalid record (the
engine quarantines it).

Two phases on PostgreSQL 14 and later (`stamped_read`): when the server can hash every column
of the query's rows (`PG_HASHABLE_TYPES`), a pass first reads per row only its id columns,
`has_document` and the server's hash of the whole row (`hash_record_extended`, seeded with the
column layout), and then reads in full only the rows the engine asks for (new, changed, or to
be judged again), both in one read-only REPEATABLE READ transaction, so both phases see one
snapshot. A plain read there carries the same server hash as each record's digest. A query
with another column type (MONEY, json, ...) is read and digested here, in one phase.

Documents: with `document_query`, each record gets a lazily loaded copy
(`<invoice_number>.pdf`), fetched over its own read-only connection when the engine needs it;
the query returns one row with one column, the file's bytes. When the main query returns a
`has_document` column, rows where it is false or NULL get no document; without it, a record
whose document query returns no row is quarantined (field `document`) with that reason.
"""

from __future__ import annotations

import contextlib
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from kravia_sync import (
    Connector,
    ConnectorSettings,
    PaymentRecord,
    RecordError,
    SourceRecord,
    StampedRead,
)

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping, Sequence

    from sqlalchemy import TextClause
    from sqlalchemy.engine import URL, Connection, CursorResult
from connectors.sql._check import SourceCheck
from connectors.sql._columns import QueryColumns
from connectors.sql._database import SqlDatabase
from connectors.sql._documents import SqlDocumentError, SqlDocuments
from connectors.sql._payments import read_payments
from connectors.sql._postgres import WITH_ROW_HASH, PostgresStampedRead
from connectors.sql._rows import PLAIN, Layout, close_result, record_key, value_of
from connectors.sql._settings import EXAMPLE_SETTINGS, SqlSettings

__all__ = [
    "SqlConnector",
    "SqlDocumentError",
]


class SqlConnector(Connector):
    """Reads overdue invoices with one read-only, streamed SQL query."""

    settings_model: ClassVar[type[ConnectorSettings]] = SqlSettings
    example_config: ClassVar[str] = EXAMPLE_SETTINGS
    settings: SqlSettings

    def __init__(self, settings: ConnectorSettings, *, base_dir: Path) -> None:
        if not isinstance(settings, SqlSettings):
            raise TypeError(f"SqlConnector needs SqlSettings, not {type(settings).__name__}")
        super().__init__(settings, base_dir=base_dir)
        self.settings = settings
        self._database = SqlDatabase(settings, base_dir)
        self._columns = QueryColumns(self._database)
        self._documents = SqlDocuments(self._database, self._load_document)
        self._check = SourceCheck(self._database, self._columns)

    def _load_document(self, binds: Mapping[str, object], number: str) -> bytes:
        """One invoice's copy (see `SqlDocuments.load_document`): a method of the connector,
        so that a loader is written out by its binds, the connector kept by reference."""
        return self._documents.load_document(binds, number)

    # -- settings ------------------------------------------------------------------------

    @property
    def url(self) -> URL:
        """The database's URL (with the password: see `display_url` for messages)."""
        return self._database.url

    @property
    def backend(self) -> str:
        """The backend's name in SQLAlchemy's terms (`postgresql`, `mysql`, `sqlite`, ...)."""
        return self._database.backend

    def secret_values(self) -> list[str]:
        """The database password, as it is and as it is written inside a URL."""
        return self._database.secret_values()

    @property
    def display_url(self) -> str:
        """The database for messages (password hidden)."""
        return self._database.display_url

    # -- kravia-sync check ---------------------------------------------------------------

    def check(self) -> list[str]:
        """Connect and run every configured query for its columns alone (no row is read): a
        refused password, an unreachable server, a failing query or a missing column is a
        problem, each without the password."""
        return self._check.problems(self.today())

    def check_warnings(self) -> list[str]:
        """Why the database user could write, from the privileges the server reports (the
        SQLite file: whether it is writable)."""
        return self._check.warnings()

    # -- reading -------------------------------------------------------------------------

    def stamped_read(self) -> StampedRead | None:
        """On PostgreSQL 14 and later through psycopg, when the server can hash the query's
        rows (see `QueryColumns.server_layout`): a two-phase read in one read-only REPEATABLE
        READ transaction (see `PostgresStampedRead`). Otherwise None: the engine reads every
        row in full."""
        if self.backend != "postgresql" or self.url.get_driver_name() != "psycopg":
            return None
        today = self.today()
        connection = self._database.connect()
        try:
            with self.failures("cannot start a read on"):
                connection.execution_options(isolation_level="REPEATABLE READ")
            layout = self._columns.server_layout(connection, today)
        except BaseException:
            self.close_connection(connection)
            raise
        if layout is None:
            self.close_connection(connection)
            return None
        return PostgresStampedRead(self, connection, layout, today)

    def close_connection(self, connection: Connection) -> None:
        """Close a connection of a read (see `SqlDatabase.close_connection`)."""
        self._database.close_connection(connection)

    def payments_source(self) -> Literal["amount_drops", "records"]:
        """Records when a payments query is configured, else amount drops."""
        return "records" if self.settings.payments_query is not None else "amount_drops"

    def read(self) -> Iterator[SourceRecord | PaymentRecord | RecordError]:
        """Yield one record per row of `query`, streamed, then one payment record per row of
        `payments_query`; fail before any row when a required column is missing, and raise
        `ConnectorError` when the database fails at any point."""
        today = self.today()
        connection = self._database.connect()
        try:
            yield from self._read_invoices(connection, today)
            if self.settings.payments_query is not None:
                yield from self.read_payments(connection, self.settings.payments_query, today)
        finally:
            self.close_connection(connection)

    def bound_query(
        self,
        query: str,
        *,
        today: date,
        select: str | None = None,
        seed: int | None = None,
        hashes: list[str] | None = None,
        no_rows: bool = False,
    ) -> tuple[TextClause, dict[str, object]]:
        """`query` ready to run, with its parameters (see `SqlDatabase.bound_query`)."""
        return self._database.bound_query(
            query, today=today, select=select, seed=seed, hashes=hashes, no_rows=no_rows
        )

    def _read_invoices(
        self, connection: Connection, today: date
    ) -> Iterator[SourceRecord | RecordError]:
        query = self.settings.query
        layout = self._columns.server_layout(connection, today)
        if layout is not None:
            statement, params = self.bound_query(
                query, today=today, select=WITH_ROW_HASH, seed=layout.seed
            )
        else:
            statement, params = self.bound_query(query, today=today)
        result: CursorResult[Any] | None = None
        try:
            result = self.execute(connection, statement, params, "the query")
            if layout is None:
                keys = list(result.keys()) if result.returns_rows else []
                layout = Layout(
                    self.backend,
                    keys,
                    self._columns.columns(keys),
                    with_documents=self.settings.document_query is not None,
                )
            number = 0
            for rows in self.batches(result, "the query"):
                for row in rows:
                    number += 1
                    yield self.record(tuple(row), layout, number)
        finally:
            close_result(result)

    def execute(
        self, connection: Connection, statement: TextClause, params: dict[str, object], what: str
    ) -> CursorResult[Any]:
        """Run `statement` for streaming (see `SqlDatabase.execute`)."""
        return self._database.execute(connection, statement, params, what)

    def batches(self, result: CursorResult[Any], what: str) -> Iterator[Sequence[Any]]:
        """The rows of `result` a batch at a time (see `SqlDatabase.batches`)."""
        return self._database.batches(result, what)

    def read_payments(
        self, connection: Connection, query: str, today: date
    ) -> Iterator[PaymentRecord]:
        """One payment record per row of `query` (see `_payments.read_payments`)."""
        return read_payments(self._database, connection, query, today)

    def record(self, row: tuple[Any, ...], layout: Layout, number: int) -> SourceRecord:
        """The record of one row (this runs for every row: the common types go straight)."""
        picked = layout.pick(row)
        if PLAIN.issuperset(map(type, picked)):
            fields: dict[str, object] = dict(zip(layout.names, picked, strict=True))
        else:
            sqlite = self.backend == "sqlite"
            fields = {
                name: value_of(value, sqlite=sqlite)
                for name, value in zip(layout.names, picked, strict=True)
            }
        return SourceRecord(
            key=record_key(fields, number),
            fields=fields,
            document=self._documents.document(row, layout.columns),
            digest=layout.digest(row),
        )

    def has_document(self, row: tuple[Any, ...], columns: Mapping[str, int]) -> bool:
        """Whether the record of `row` comes with a document (see `SqlDocuments.document`)."""
        return self._documents.has_document(row, columns)

    def failures(
        self, action: str, *, connecting: bool = False
    ) -> contextlib.AbstractContextManager[None]:
        """Database and driver exceptions as a `ConnectorError` (see `SqlDatabase.failures`)."""
        return self._database.failures(action, connecting=connecting)
