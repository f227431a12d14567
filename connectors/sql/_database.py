"""The database of an SQL source: its URL (the password from the settings), the engine and its
read-only, time-limited connections, statements bound and streamed, and database failures as
`ConnectorError`s that name the database and never carry the password."""

from __future__ import annotations

import contextlib
import os
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any
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

from kravia_sync import ConnectorError

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

    from sqlalchemy import BindParameter, TextClause
    from sqlalchemy.engine import Connection, CursorResult, Engine
    from sqlalchemy.pool import ConnectionPoolEntry
from connectors.sql._postgres import ROW_HASH
from connectors.sql._rows import no_rows_of, register_money_loader, wrapped
from connectors.sql._server import (
    PARSER_AGREEMENT,
    READ_ONLY,
    SQLITE_PROGRESS_STEPS,
    STATEMENT_CLOCK,
    StatementClock,
    driver_connect_args,
    driver_password,
    limit_reached,
    missing_driver,
    server_kind,
    start_statement_clock,
    statement_limit,
)
from connectors.sql._settings import (
    HIDDEN,
    QUERY_BINDS,
    SqlSettings,
    check_binds,
    with_default_driver,
)

__all__ = []


class SqlDatabase:
    """One SQL source's database: every connection to it is new, read-only and time-limited,
    and every failure of it a `ConnectorError` (see `failures`)."""

    def __init__(self, settings: SqlSettings, base_dir: Path) -> None:
        self.settings = settings
        self.base_dir = base_dir
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

    # -- statements ----------------------------------------------------------------------

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
        one of them; with `no_rows` (and `select`), none: `LIMIT 0`, on SQL Server `TOP 0`,
        for the columns alone."""
        sql = query if select is None else wrapped(query, select)
        if no_rows:
            sql = no_rows_of(query, select or "*", self.backend)
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

    # -- the engine ----------------------------------------------------------------------

    def connect(self) -> Connection:
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

    def close_connection(self, connection: Connection) -> None:
        # Errors while closing are not errors of the read (the rows are read, or it failed).
        with contextlib.suppress(SQLAlchemyError, OSError):
            connection.close()
        if self._engine is not None:
            self._engine.dispose()

    def _get_engine(self) -> Engine:
        """The engine (no pool: every `connect` is a new read-only, time-limited connection)."""
        if self._engine is None:
            driver = self.url.get_driver_name()
            connect_args = {
                **driver_connect_args(driver, self.settings),
                **driver_password(driver, self._password),
            }
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
                agreement = PARSER_AGREEMENT.get(self.backend)
                if agreement is not None:
                    cursor.execute(agreement)
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
