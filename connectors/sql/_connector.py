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

* **Read only.** Every connection is made read-only at session level before it is used:
  PostgreSQL `SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY`, MariaDB/MySQL
  `SET SESSION TRANSACTION READ ONLY`, SQLite `PRAGMA query_only = ON`. A query that tries to
  write is refused by the database. MS SQL Server has no such session setting: there the
  connector relies on the database user's permissions (give it a login with `db_datareader`
  only). The connector never commits, so even there a write is rolled back when the
  connection closes.
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
import functools
import os
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal
from urllib.parse import quote, quote_plus

from sqlalchemy import (
    ARRAY,
    BigInteger,
    Date,
    NullPool,
    Text,
    bindparam,
    create_engine,
    event,
    text,
)
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import DBAPIError, NoSuchModuleError, SQLAlchemyError

from kravia_sync import (
    RECORD_FIELDS,
    REQUIRED_FIELDS,
    CallableDocument,
    Connector,
    ConnectorError,
    ConnectorSettings,
    InvalidRecordError,
    PaymentRecord,
    RecordError,
    SourceRecord,
    StampedRead,
)

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping, Sequence

    from sqlalchemy import BindParameter, TextClause
    from sqlalchemy.engine import Connection, CursorResult, Engine
    from sqlalchemy.pool import ConnectionPoolEntry
from connectors.sql._postgres import (
    PG_HASHABLE_TYPES,
    PG_ROW_HASH_SINCE,
    PG_SESSION,
    ROW_HASH,
    SYNTAX_ERROR,
    WITH_ROW_HASH,
    PostgresStampedRead,
)
from connectors.sql._rows import (
    PLAIN,
    SUBQUERY,
    Layout,
    close_result,
    payment_columns,
    record_key,
    register_money_loader,
    text_of,
    truthy,
    value_of,
    wrapped,
)
from connectors.sql._server import (
    READ_ONLY,
    SQLITE_PROGRESS_STEPS,
    STATEMENT_CLOCK,
    StatementClock,
    driver_connect_args,
    limit_reached,
    missing_driver,
    server_kind,
    start_statement_clock,
    statement_limit,
)
from connectors.sql._settings import (
    DOCUMENT_BINDS,
    EXAMPLE_SETTINGS,
    HAS_DOCUMENT,
    HIDDEN,
    QUERY_BINDS,
    SqlSettings,
    check_binds,
    with_default_driver,
)

__all__ = [
    "SqlConnector",
    "SqlDocumentError",
]


class SqlDocumentError(ConnectorError, OSError):
    """An invoice copy could not be fetched because the database failed.

    An `OSError` as well, so that the engine treats it like any unreadable copy: a new invoice
    waits (quarantined with this reason), an upload is retried with backoff.
    """


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
        url = with_default_driver(make_url(settings.url))
        self._password = url.password if url.password is not None else self._read_password()
        if self._password is not None:
            url = url.set(password=self._password)
        self.url = self._complete(url)
        self.backend = url.get_backend_name()
        self._engine: Engine | None = None

    # -- settings ------------------------------------------------------------------------

    def _read_password(self) -> str | None:
        settings = self.settings
        if settings.password_env is not None:
            value = os.environ.get(settings.password_env)
            if value is None:
                raise ConnectorError(
                    f"the environment variable {settings.password_env} (password_env) is not set"
                )
            return value
        if settings.password_file is not None:
            path = self.base_dir / settings.password_file.expanduser()
            try:
                content = path.read_text(encoding="utf-8")
            except (OSError, UnicodeError) as exc:
                reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
                raise ConnectorError(
                    f"cannot read the password file {path} (password_file): {reason}"
                ) from None
            return content.removesuffix("\n").removesuffix("\r")
        return None

    def _complete(self, url: URL) -> URL:
        """Defaults that keep text intact, and SQLite paths relative to the config file."""
        backend = url.get_backend_name()
        if backend in {"mysql", "mariadb"} and "charset" not in url.query:
            url = url.update_query_dict({"charset": "utf8mb4"})
        if url.get_driver_name() == "psycopg" and "client_encoding" not in url.query:
            url = url.update_query_dict({"client_encoding": "utf8"})
        database = url.database
        if (
            backend == "sqlite"
            and database
            and database != ":memory:"
            and not database.startswith("file:")
            and not Path(database).expanduser().is_absolute()
        ):
            url = url.set(database=str(self.base_dir / Path(database).expanduser()))
        return url

    def secret_values(self) -> list[str]:
        """The database password, as it is and as it is written inside a URL."""
        if not self._password:
            return []
        return sorted({self._password, quote(self._password, safe=""), quote_plus(self._password)})

    @property
    def display_url(self) -> str:
        """The database for messages (password hidden)."""
        return self.url.render_as_string(hide_password=True)

    # -- reading -------------------------------------------------------------------------

    def stamped_read(self) -> StampedRead | None:
        """On PostgreSQL 14 and later through psycopg, when the server can hash the query's
        rows (see `_server_layout`): a two-phase read in one read-only REPEATABLE READ
        transaction (see `PostgresStampedRead`). Otherwise None: the engine reads every row
        in full."""
        if self.backend != "postgresql" or self.url.get_driver_name() != "psycopg":
            return None
        today = self.today()
        connection = self._connect()
        try:
            with self.failures("cannot start a read on"):
                connection.execution_options(isolation_level="REPEATABLE READ")
            layout = self._server_layout(connection, today)
        except BaseException:
            self.close_connection(connection)
            raise
        if layout is None:
            self.close_connection(connection)
            return None
        return PostgresStampedRead(self, connection, layout, today)

    def close_connection(self, connection: Connection) -> None:
        # Errors while closing are not errors of the read (the rows are read, or it failed).
        with contextlib.suppress(SQLAlchemyError, OSError):
            connection.close()
        if self._engine is not None:
            self._engine.dispose()

    def payments_source(self) -> Literal["amount_drops", "records"]:
        """Records when a payments query is configured, else amount drops."""
        return "records" if self.settings.payments_query is not None else "amount_drops"

    def read(self) -> Iterator[SourceRecord | PaymentRecord | RecordError]:
        """Yield one record per row of `query`, streamed, then one payment record per row of
        `payments_query`; fail before any row when a required column is missing, and raise
        `ConnectorError` when the database fails at any point."""
        today = self.today()
        connection = self._connect()
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
        """`query` ready to run, with its parameters (`today` for `:today`, the same for every
        statement of one read). With `select`, wrapped as the subquery `kravia_sync_q` of
        `SELECT <select> FROM (query) AS kravia_sync_q`, where `seed` seeds the server's row
        hash (when `select` computes it): with `hashes` too, only the rows whose row hash is
        one of them; with `no_rows`, none (`LIMIT 0`, for the columns alone)."""
        sql = query if select is None else wrapped(query, select)
        if no_rows:
            sql = f"{sql} LIMIT 0"
        params: dict[str, object] = {}
        binds: list[BindParameter[Any]] = []
        if hashes is not None:
            sql = f"SELECT * FROM ({sql}) AS s WHERE s.{ROW_HASH} = ANY(:hashes)"  # noqa: S608 - no value in it
            binds.append(bindparam("hashes", type_=ARRAY(Text())))
            params["hashes"] = hashes
        if seed is not None:
            binds.append(bindparam("kravia_sync_seed", type_=BigInteger()))
            params["kravia_sync_seed"] = seed
        if "today" in check_binds(query, QUERY_BINDS):
            binds.append(bindparam("today", type_=Date()))
            params["today"] = today
        return text(sql).bindparams(*binds), params

    def _read_invoices(
        self, connection: Connection, today: date
    ) -> Iterator[SourceRecord | RecordError]:
        query = self.settings.query
        layout = self._server_layout(connection, today)
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
                    self._columns(keys),
                    with_documents=self.settings.document_query is not None,
                )
            number = 0
            for rows in self.batches(result, "the query"):
                for row in rows:
                    number += 1
                    yield self.record(tuple(row), layout, number)
        finally:
            close_result(result)

    def _server_layout(self, connection: Connection, today: date) -> Layout | None:
        """On PostgreSQL 14 and later (through psycopg), the layout of the query's rows, read
        without running it (a `LIMIT 0` of it), when the server can hash them exactly: every
        column of a type in `PG_HASHABLE_TYPES`, no nondeterministic collation in the
        database, no column named like ours. It fails naming a missing field before any row
        is read. None otherwise: the query then runs as written, digested here."""
        if self.backend != "postgresql" or self.url.get_driver_name() != "psycopg":
            return None
        if (connection.dialect.server_version_info or (0,)) < PG_ROW_HASH_SINCE:
            return None
        statement, params = self.bound_query(
            self.settings.query, today=today, select="*", no_rows=True
        )
        try:
            result = connection.execute(statement, params)
        except DBAPIError as exc:
            if getattr(exc.orig, "sqlstate", None) != SYNTAX_ERROR:
                with self.failures("the query failed on"):
                    raise
            # The query does not read as a subquery (a semicolon and a comment after it,
            # say): it runs as written instead.
            with self.failures("the query failed on"):
                connection.rollback()
            return None
        with self.failures("the query failed on"):
            keys = list(result.keys()) if result.returns_rows else []
            types = {column[1] for column in result.cursor.description or ()}
            result.close()
            zone, loose_collations = connection.execute(text(PG_SESSION)).one()
        columns = self._columns(keys)
        ours = {ROW_HASH, SUBQUERY}
        if loose_collations or not types <= PG_HASHABLE_TYPES:
            return None
        if any(key.casefold() in ours for key in keys):
            return None
        return Layout(
            self.backend,
            keys,
            columns,
            with_documents=self.settings.document_query is not None,
            server_hash=True,
            session=str(zone),
        )

    def execute(
        self, connection: Connection, statement: TextClause, params: dict[str, object], what: str
    ) -> CursorResult[Any]:
        """Run `statement` for streaming: rows come `fetch_size` at a time through a
        server-side cursor where the driver has one."""
        with self.failures(f"{what} failed on"):
            return connection.execution_options(
                stream_results=True, yield_per=self.settings.fetch_size
            ).execute(statement, params)

    def batches(self, result: CursorResult[Any], what: str) -> Iterator[Sequence[Any]]:
        """The rows of `result` a batch at a time; a failure at any point is a
        `ConnectorError` saying how many rows came before it."""
        partitions = result.partitions(self.settings.fetch_size)
        count = 0
        while True:
            with self.failures(f"{what} failed after {count} rows on"):
                rows = next(partitions, None)
            if rows is None:
                return
            count += len(rows)
            yield rows

    def read_payments(
        self, connection: Connection, query: str, today: date
    ) -> Iterator[PaymentRecord]:
        statement, params = self.bound_query(query, today=today)
        result: CursorResult[Any] | None = None
        try:
            result = self.execute(connection, statement, params, "the payments query")
            keys = list(result.keys()) if result.returns_rows else []
            positions = payment_columns(keys, self.display_url)
            sqlite = self.backend == "sqlite"
            for rows in self.batches(result, "the payments query"):
                for row in rows:
                    fields = {
                        name: value_of(row[position], sqlite=sqlite)
                        for name, position in positions.items()
                    }
                    invoice = text_of(fields.get("invoice_number")) or text_of(
                        fields.get("accounting_invoice_id")
                    )
                    key = f"payment {text_of(fields.get('payment_id'))} (invoice {invoice})"
                    yield PaymentRecord(key=key, fields=fields)
        finally:
            close_result(result)

    def _columns(self, keys: Sequence[str]) -> dict[str, int]:
        """Field (and `has_document`) → position in the row; every required field present."""
        if not keys:
            raise ConnectorError(
                f"the query on {self.display_url} returns no rows: it must be a SELECT"
            )
        exact: dict[str, list[int]] = {}
        folded: dict[str, list[int]] = {}
        for position, key in enumerate(keys):
            exact.setdefault(key, []).append(position)
            folded.setdefault(key.casefold(), []).append(position)
        positions: dict[str, int] = {}
        missing: list[str] = []
        wanted = [*RECORD_FIELDS, HAS_DOCUMENT]
        for field in wanted:
            column = self.settings.columns.get(field, field)
            found = exact.get(column) or folded.get(column.casefold())
            if found is None:
                if field in REQUIRED_FIELDS or field in self.settings.columns:
                    missing.append(field)
                continue
            if len(found) > 1:
                raise ConnectorError(
                    f"the query returns {len(found)} columns named {column!r} (for the field "
                    f"{field!r}); give them distinct aliases"
                )
            positions[field] = found[0]
        if missing:
            wanted_columns = ", ".join(
                f"{field!r} (column {self.settings.columns.get(field, field)!r})"
                for field in missing
            )
            plural = "s" if len(missing) > 1 else ""
            raise ConnectorError(
                f"the query returns no column for the field{plural} {wanted_columns}; "
                f"its columns: {', '.join(keys)}. Alias them in the query or map them in "
                "[sources.settings.columns]; no row was read"
            )
        if self.settings.document_query is not None:
            needed = check_binds(self.settings.document_query, DOCUMENT_BINDS)
            absent = sorted(name for name in needed if name not in positions)
            if absent:
                raise ConnectorError(
                    f"the document query binds :{absent[0]}, but the query returns no "
                    f"{absent[0]!r} column; no row was read"
                )
        return positions

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
            document=self._document(row, layout.columns),
            digest=layout.digest(row),
        )

    def has_document(self, row: tuple[Any, ...], columns: Mapping[str, int]) -> bool:
        """Whether the record of `row` comes with a document (see `_document`)."""
        if self.settings.document_query is None:
            return False
        return HAS_DOCUMENT not in columns or truthy(row[columns[HAS_DOCUMENT]])

    # -- documents -----------------------------------------------------------------------

    def _document(
        self, row: tuple[Any, ...], columns: Mapping[str, int]
    ) -> CallableDocument | None:
        query = self.settings.document_query
        if query is None or not self.has_document(row, columns):
            return None
        binds = {
            name: row[columns[name]]
            for name in check_binds(query, DOCUMENT_BINDS)
            if name in columns
        }
        number = text_of(value_of(row[columns["invoice_number"]], sqlite=False)) or "invoice"
        loader = functools.partial(self._load_document, binds, number)
        return CallableDocument(f"{number}.pdf", loader)

    def _load_document(self, binds: Mapping[str, object], number: str) -> bytes:
        """The bytes `document_query` returns for one invoice (its own read-only connection)."""
        query = self.settings.document_query
        if query is None:  # pragma: no cover - only documents of a document query exist
            raise RuntimeError("no document query")
        action = f"the document query for invoice {number} failed on"
        try:
            with self._connect() as connection, self.failures(action):
                result = connection.execute(text(query), dict(binds))
                width = len(result.keys()) if result.returns_rows else 0
                rows = result.fetchmany(2) if width else []
        except ConnectorError as exc:
            raise SqlDocumentError(str(exc)) from None
        if width != 1:
            raise InvalidRecordError(
                "document",
                f"document_query returns {width} columns; it must return one: the PDF's bytes",
            )
        if not rows or rows[0][0] is None:
            raise InvalidRecordError(
                "document", f"document_query returned no document for invoice {number}"
            )
        if len(rows) > 1:
            raise InvalidRecordError(
                "document", f"document_query returned several rows for invoice {number}"
            )
        content = rows[0][0]
        if isinstance(content, memoryview | bytearray):
            content = bytes(content)
        if not isinstance(content, bytes):
            raise InvalidRecordError(
                "document",
                f"document_query returned {type(content).__name__} for invoice {number}, "
                "not bytes (select a BLOB/BYTEA/VARBINARY column)",
            )
        limit = self.settings.max_document_bytes
        if len(content) > limit:
            raise InvalidRecordError(
                "document",
                f"document_query returned {len(content)} bytes for invoice {number}, more than "
                f"max_document_bytes ({limit}); it is not uploaded",
            )
        return content

    # -- the engine ----------------------------------------------------------------------

    def _connect(self) -> Connection:
        """A new read-only connection (an SQLite file must exist: it is never created)."""
        database = self.url.database
        if (
            self.backend == "sqlite"
            and database
            and database != ":memory:"
            and not database.startswith("file:")
            and not Path(database).is_file()
        ):
            raise ConnectorError(f"the SQLite database {database} does not exist")
        engine = self._get_engine()
        with self.failures("cannot connect to", connecting=True):
            return engine.connect()

    def _get_engine(self) -> Engine:
        """The engine (no pool: every `connect` is a new read-only, time-limited connection)."""
        if self._engine is None:
            connect_args = driver_connect_args(self.url.get_driver_name(), self.settings)
            with self.failures("cannot use"):
                engine = create_engine(self.url, poolclass=NullPool, connect_args=connect_args)
            event.listen(engine, "connect", self._prepare_session)
            if self.backend == "sqlite":
                event.listen(engine, "before_cursor_execute", start_statement_clock)
            self._engine = engine
        return self._engine

    def _prepare_session(
        self,
        dbapi_connection: Any,  # noqa: ANN401 - the driver's own connection
        record: ConnectionPoolEntry,
    ) -> None:
        """Make a new connection read-only, then time-limited, before the connector uses it."""
        read_only = READ_ONLY.get(self.backend)
        if read_only is not None:
            cursor = dbapi_connection.cursor()
            try:
                cursor.execute(read_only)  # first: nothing of ours runs in a writable session
                limit = statement_limit(
                    server_kind(self.backend, cursor), self.settings.statement_timeout_seconds
                )
                if limit is not None:
                    cursor.execute(limit)
            finally:
                cursor.close()
            if self.backend == "postgresql":
                dbapi_connection.commit()  # SET is transactional: a rollback would undo it
        driver = self.url.get_driver_name()
        if driver == "psycopg":
            register_money_loader(dbapi_connection)
        elif driver == "pymysql":
            # PyMySQL waits for every answer, its greeting included, with read_timeout: it was
            # opened with the connect limit. From now on the server's statement limit decides,
            # and its error takes a moment to arrive; silence longer than both is a stall.
            limits = self.settings
            dbapi_connection._read_timeout = (  # noqa: SLF001 - PyMySQL has no setter for it
                limits.statement_timeout_seconds + limits.connect_timeout_seconds
            )
        elif self.backend == "sqlite":
            clock = StatementClock(self.settings.statement_timeout_seconds)
            record.info[STATEMENT_CLOCK] = clock
            dbapi_connection.set_progress_handler(clock.expired, SQLITE_PROGRESS_STEPS)

    @contextlib.contextmanager
    def failures(self, action: str, *, connecting: bool = False) -> Iterator[None]:
        """Turn database and driver exceptions into a `ConnectorError` that names the database
        (password hidden), says which time limit ended the call if one did (`connecting`: the
        connection was being made), and never carries the password."""
        failures: tuple[type[Exception], ...] = (
            SQLAlchemyError,
            OSError,
            UnicodeError,
            *self._driver_errors(),
        )
        try:
            yield
        except ConnectorError:
            raise
        except (ImportError, NoSuchModuleError) as exc:
            raise ConnectorError(self._redact(missing_driver(self.url, exc))) from None
        except failures as exc:
            orig = exc.orig if isinstance(exc, DBAPIError) else None
            reason: BaseException = exc if orig is None else orig
            detail = " ".join(str(reason).split()) or type(reason).__name__
            advice = self._limit_advice(reason, connecting=connecting)
            message = f"{action} {self.display_url}: {detail}{advice}"
            raise ConnectorError(self._redact(message)) from None

    def _limit_advice(self, reason: BaseException, *, connecting: bool) -> str:
        """When a time limit ended the call, what happened and the setting to raise."""
        reached = limit_reached(self.backend, reason)
        if reached is None:
            return ""
        connect = self.settings.connect_timeout_seconds
        statement = self.settings.statement_timeout_seconds
        if connecting and reached == "wait":
            return (
                f"; not connected within connect_timeout_seconds = {connect}: check that the "
                "database is up and reachable, or raise connect_timeout_seconds in the "
                "source's settings"
            )
        # pymssql's own timeout is the statement limit (SQL Server has none for a session).
        if reached == "statement" or self.backend == "mssql":
            return (
                f"; the statement ran longer than statement_timeout_seconds = {statement}: make "
                "the query faster or raise statement_timeout_seconds in the source's settings"
            )
        return (
            f"; the server sent nothing for {statement + connect} s (statement_timeout_seconds "
            "+ connect_timeout_seconds): raise statement_timeout_seconds in the source's "
            "settings if the query needs longer"
        )

    def _driver_errors(self) -> tuple[type[Exception], ...]:
        """The driver's own exception base (raised where SQLAlchemy is bypassed)."""
        if self._engine is None:
            return ()
        error = getattr(self._engine.dialect.loaded_dbapi, "Error", None)
        return (error,) if isinstance(error, type) and issubclass(error, Exception) else ()

    def _redact(self, message: str) -> str:
        for secret in sorted(self.secret_values(), key=len, reverse=True):
            message = message.replace(secret, HIDDEN)
        return message


# -- time limits ---------------------------------------------------------------------------


# -- PostgreSQL MONEY ----------------------------------------------------------------------
