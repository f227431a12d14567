"""What differs between database servers: read-only sessions, statement time limits and how each
driver reports one reached, the driver's own connection arguments, and a missing driver named
with the extra that brings it."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Final, Literal

from sqlalchemy.engine import URL

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection
from connectors.sql._settings import BACKEND_DRIVERS, SqlSettings

__all__ = []


# Session settings that make every transaction of a connection read-only.
READ_ONLY: Final[dict[str, str]] = {
    "postgresql": "SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY",
    "mysql": "SET SESSION TRANSACTION READ ONLY",
    "mariadb": "SET SESSION TRANSACTION READ ONLY",
    "sqlite": "PRAGMA query_only = ON",
}


# Session settings under which the server reads a query's text as the parser that checked it
# did (`_readonly`): PostgreSQL with standard_conforming_strings off would take a backslash in
# a plain string as an escape, where the parser (and every server since 9.1, by default) does
# not.
PARSER_AGREEMENT: Final[dict[str, str]] = {
    "postgresql": "SET standard_conforming_strings = on",
}


# SQLite: virtual machine instructions between two looks at the clock (well under a
# millisecond of work; the look costs less than 1% of it).
SQLITE_PROGRESS_STEPS: Final = 10_000


STATEMENT_CLOCK: Final = "kravia_sync_statement_clock"


# How a server says it stopped a statement at its limit: PostgreSQL's query_canceled SQLSTATE,
# MariaDB's ER_STATEMENT_TIMEOUT and MySQL's ER_QUERY_TIMEOUT; SQLite's interrupt is ours.
_PG_QUERY_CANCELED: Final = "57014"


_MYSQL_STATEMENT_TIMEOUTS: Final = frozenset({1969, 3024})


_SQLITE_INTERRUPTED: Final = "interrupted"


# How a driver says it gave up waiting (psycopg, PyMySQL and pymssql word it so).
_CLIENT_TIMEOUT_TEXTS: Final = ("timed out", "timeout expired")


def driver_connect_args(driver: str, settings: SqlSettings) -> dict[str, object]:
    """The limits a driver of our extras takes as connect arguments (others take none from us:
    their own timeouts may go in the URL; the servers' statement limits still apply)."""
    connect = settings.connect_timeout_seconds
    if driver == "psycopg":
        # libpq's own (it waits at least 2 s); the statement limit is a session setting.
        return {"connect_timeout": connect}
    if driver == "pymysql":
        # PyMySQL's connect_timeout covers the TCP connect only; the greeting and login are
        # read with read_timeout, widened once connected (`_prepare_session`). A server that
        # takes no bytes of a query for this long is stalled: it reads them at once.
        return {"connect_timeout": connect, "read_timeout": connect, "write_timeout": connect}
    if driver == "pymssql":
        # SQL Server has no session setting for a statement limit: pymssql's timeout is the
        # client's own, on each statement.
        return {"login_timeout": connect, "timeout": settings.statement_timeout_seconds}
    return {}


def driver_password(driver: str, password: str | None) -> dict[str, object]:
    """The password as a connect argument where the driver would otherwise send it in an
    encoding the server does not expect: PyMySQL encodes a text password as latin-1, while
    MariaDB and MySQL (and their own clients) take the UTF-8 bytes, so it gets UTF-8 bytes
    (an ASCII password is the same either way)."""
    if driver == "pymysql" and password:
        return {"password": password.encode("utf-8")}
    return {}


def server_kind(backend: str, cursor: Any) -> str:  # noqa: ANN401 - a DB-API cursor
    """`backend`, except that a MySQL-protocol server says itself whether it is MariaDB (the
    URL need not: `mysql://` reaches either, and they name their statement limits apart)."""
    if backend not in {"mysql", "mariadb"}:
        return backend
    cursor.execute("SELECT VERSION()")
    (version,) = cursor.fetchone()
    return "mariadb" if "mariadb" in str(version).casefold() else "mysql"


def statement_limit(server: str, seconds: int) -> str | None:
    """The session setting that has the server stop a statement after `seconds` (None where
    the connector limits statements otherwise: SQLite, SQL Server)."""
    if server == "postgresql":
        return f"SET statement_timeout = {seconds * 1000}"
    if server == "mariadb":
        return f"SET SESSION max_statement_time = {seconds}"
    if server == "mysql":
        # SELECTs only, which is all a read-only session runs.
        return f"SET SESSION max_execution_time = {seconds * 1000}"
    return None


def limit_reached(backend: str, reason: BaseException) -> Literal["statement", "wait"] | None:
    """Whether a time limit ended the call: a statement limit, the server's or SQLite's clock
    ("statement"), or the driver giving up waiting for the server ("wait"); None for any
    other failure."""
    if getattr(reason, "sqlstate", None) == _PG_QUERY_CANCELED:
        return "statement"
    # The MySQL drivers' errors carry the server's error number first.
    code = reason.args[0] if reason.args else None
    if backend in {"mysql", "mariadb"} and type(code) is int and code in _MYSQL_STATEMENT_TIMEOUTS:
        return "statement"
    if backend == "sqlite" and str(reason) == _SQLITE_INTERRUPTED:
        return "statement"
    text_ = str(reason).casefold()
    if isinstance(reason, TimeoutError) or any(words in text_ for words in _CLIENT_TIMEOUT_TEXTS):
        return "wait"
    return None


class StatementClock:
    """The statement limit on one SQLite connection, which has no setting for it: the clock
    starts as each statement is sent (`start_statement_clock`) and SQLite's progress handler
    asks `expired` every `SQLITE_PROGRESS_STEPS` instructions; a true answer interrupts the
    statement. A streamed query is one statement until its last row is fetched."""

    __slots__ = ("_deadline", "_seconds")

    def __init__(self, seconds: int) -> None:
        self._seconds = seconds
        self._deadline = float("inf")  # the session's own setup runs unlimited

    def start(self) -> None:
        self._deadline = time.monotonic() + self._seconds

    def expired(self) -> bool:
        return time.monotonic() > self._deadline


def start_statement_clock(connection: Connection, *_statement: object) -> None:
    """SQLAlchemy's `before_cursor_execute`: the connection's statement clock starts."""
    clock = connection.info.get(STATEMENT_CLOCK)
    if isinstance(clock, StatementClock):
        clock.start()


def missing_driver(url: URL, exc: BaseException) -> str:
    backend = url.get_backend_name()
    driver = url.get_driver_name()
    label, extra, extra_driver = BACKEND_DRIVERS.get(backend, (backend, None, driver))
    if extra is None:
        module = getattr(exc, "name", None) or driver
        return f"the {label} driver {driver!r} is not installed: pip install {module} ({exc})"
    message = f"the {label} driver is not installed: pip install 'kravia-sync[{extra}]'"
    if driver != extra_driver:
        message = (
            f"the {label} driver {driver!r} is not installed ({exc}): "
            f"pip install 'kravia-sync[{extra}]' and write the URL as {backend}+{extra_driver}://…"
            f", or install {driver} yourself"
        )
    return message
