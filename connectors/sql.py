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
  `statement_timeout_seconds`, each set the way its driver takes it (`_connect_args`,
  `_statement_limit`, SQLite's progress handler). There is no "no limit". A limit reached
  fails the read with a `ConnectorError` naming the setting to raise.

Failures: a query that lacks a column for a required field fails before any row is yielded,
naming the field and the column looked for. A connection failure, a query the database
refuses, or a query that fails half-way raises `ConnectorError`: the engine marks the source
failed and takes nothing it did not read as gone. A bad row is an ordinary invalid record (the
engine quarantines it).

Two phases on PostgreSQL 14 and later (`stamped_read`): when the server can hash every column
of the query's rows (`_PG_HASHABLE_TYPES`), a pass first reads per row only its id columns,
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
import hashlib
import operator
import os
import re
import time
import uuid
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Final, Literal
from urllib.parse import quote, quote_plus

from pydantic import Field, field_validator, model_validator
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
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError, SQLAlchemyError

from kravia_sync.connector import (
    Connector,
    ConnectorError,
    ConnectorSettings,
    PaymentRecord,
    RecordError,
    RecordStamp,
    SourceRecord,
    StampedRead,
)
from kravia_sync.documents import CallableDocument
from kravia_sync.errors import InvalidRecordError
from kravia_sync.model import RECORD_FIELDS, REQUIRED_FIELDS
from kravia_sync.payments import PAYMENT_FIELDS, REQUIRED_PAYMENT_FIELDS

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping, Sequence

    from sqlalchemy import BindParameter, TextClause
    from sqlalchemy.engine import Connection, CursorResult, Engine
    from sqlalchemy.pool import ConnectionPoolEntry

__all__ = [
    "EXAMPLE_SETTINGS",
    "SqlConnector",
    "SqlDocumentError",
    "SqlSettings",
    "parse_money_text",
]

QUERY_BINDS: Final = frozenset({"today"})
DOCUMENT_BINDS: Final = frozenset({"accounting_invoice_id", "invoice_number"})
HAS_DOCUMENT: Final = "has_document"
_MIB: Final = 1024 * 1024
_HIDDEN = "***"

# backend → (name for people, extra providing its driver, the extra's driver)
_BACKENDS: Final[dict[str, tuple[str, str | None, str]]] = {
    "postgresql": ("PostgreSQL", "postgres", "psycopg"),
    "mysql": ("MySQL", "mysql", "pymysql"),
    "mariadb": ("MariaDB", "mysql", "pymysql"),
    "mssql": ("MS SQL Server", "mssql", "pymssql"),
    "sqlite": ("SQLite", None, "pysqlite"),
}
# Session settings that make every transaction of a connection read-only.
_READ_ONLY: Final[dict[str, str]] = {
    "postgresql": "SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY",
    "mysql": "SET SESSION TRANSACTION READ ONLY",
    "mariadb": "SET SESSION TRANSACTION READ ONLY",
    "sqlite": "PRAGMA query_only = ON",
}
# The longest either time limit may be: a day. Every driver takes it (libpq up to 2^31 - 1 ms,
# PyMySQL a year); a read that needs longer is better rewritten than waited for.
_MAX_LIMIT_SECONDS: Final = 86_400
# The URL query parameters through which each driver of our extras takes the limits: the
# connector sets them (`_connect_args`), so the URL must not set them too.
_DRIVER_TIMEOUTS: Final[dict[str, frozenset[str]]] = {
    "psycopg": frozenset({"connect_timeout"}),
    "pymysql": frozenset({"connect_timeout", "read_timeout", "write_timeout"}),
    "pymssql": frozenset({"login_timeout", "timeout"}),
}
# SQLite: virtual machine instructions between two looks at the clock (well under a
# millisecond of work; the look costs less than 1% of it).
_SQLITE_PROGRESS_STEPS: Final = 10_000
_STATEMENT_CLOCK: Final = "kravia_sync_statement_clock"
# How a server says it stopped a statement at its limit: PostgreSQL's query_canceled SQLSTATE,
# MariaDB's ER_STATEMENT_TIMEOUT and MySQL's ER_QUERY_TIMEOUT; SQLite's interrupt is ours.
_PG_QUERY_CANCELED: Final = "57014"
_MYSQL_STATEMENT_TIMEOUTS: Final = frozenset({1969, 3024})
_SQLITE_INTERRUPTED: Final = "interrupted"
# How a driver says it gave up waiting (psycopg, PyMySQL and pymssql word it so).
_CLIENT_TIMEOUT_TEXTS: Final = ("timed out", "timeout expired")
_FALSE_TEXT: Final = frozenset({"", "0", "f", "false", "n", "no"})
# Values the record takes unchanged (the model reads blank text as missing).
_PLAIN: Final = frozenset({str, Decimal, int, date, datetime, type(None)})
# Values whose repr is exact and stable across processes, so a row of them digests as it is.
_REPR_EXACT: Final = _PLAIN | {bool, float, bytes, uuid.UUID}
_DIGEST_FORMAT: Final = "sql/1"
# PostgreSQL hashes whole rows itself (hash_record_extended, from version 14) when every
# column's type is one of these, whose hash follows equality exactly: bool, bytea, "char",
# name, int8, int2, int4, text, oid, float4, float8, bpchar, varchar, date, time, timestamp,
# timestamptz, interval, numeric, uuid (a domain reports its base type). Equal values hash
# alike (12480.5 and 12480.50, as the Decimals are equal). A database with a nondeterministic
# (case-insensitive ICU) collation is not hashed there at all (see `_PG_SESSION`).
_PG_HASHABLE_TYPES: Final = frozenset(
    {16, 17, 18, 19, 20, 21, 23, 25, 26, 700, 701, 1042, 1043, 1082, 1083, 1114, 1184, 1186}
    | {1700, 2950}
)
_PG_ROW_HASH_SINCE: Final = (14,)
_ROW_HASH: Final = "kravia_sync_row_hash"
# The hash, seeded with the layout's (so another column mapping hashes differently), as the
# hexadecimal text that is the record's digest (at most 16 digits: never mistaken for the
# 32 of a digest computed here).
_SUBQUERY: Final = "kravia_sync_q"
_ROW_HASH_EXPRESSION: Final = (
    f"to_hex(hash_record_extended({_SUBQUERY}, CAST(:kravia_sync_seed AS BIGINT))) AS {_ROW_HASH}"
)
_WITH_ROW_HASH: Final = f"{_SUBQUERY}.*, {_ROW_HASH_EXPRESSION}"
# What else the row hash depends on: the session's time zone (a timestamptz hashes as an
# instant, while the record carries it in this zone), and whether the database has a
# nondeterministic (case-insensitive) collation, under which text hashes ignoring case.
_PG_SESSION: Final = (
    "SELECT current_setting('TimeZone'), "
    "EXISTS (SELECT 1 FROM pg_catalog.pg_collation WHERE NOT collisdeterministic)"
)
_SYNTAX_ERROR: Final = "42601"
_SERVER_DIGEST_FORMAT: Final = "sql/postgresql-row-hash/1"
_ID_FIELDS: Final = ("accounting_invoice_id", "invoice_number")

EXAMPLE_SETTINGS: Final = '''\
[[sources]]
name = "erp"                     # a short, stable name; it keys the state of this source
connector = "sql"
id_prefix = ""                   # prepended to each accountingInvoiceId
[sources.settings]
# Any SQLAlchemy URL. Drivers are extras: pip install 'kravia-sync[postgres]' (psycopg),
# 'kravia-sync[mysql]' (PyMySQL, also for MariaDB) or 'kravia-sync[mssql]' (pymssql);
# SQLite needs none. Without a driver in the URL, the extra's driver is used:
#   postgresql://kravia_reader@db.example.com:5432/erp
#   mariadb://kravia_reader@db.example.com:3306/erp      (charset utf8mb4 by default)
#   mssql://kravia_reader@db.example.com:1433/erp        (read-only by permissions only)
#   sqlite:///erp.sqlite                                 (relative to this file)
url = "postgresql://kravia_reader@db.example.com:5432/erp"
# The password does not belong here: name an environment variable holding it, or a file
# (relative to this file; a trailing newline is ignored). It is redacted everywhere.
password_env = "KRAVIA_DB_PASSWORD"
# password_file = "/run/secrets/erp_db_password"
#
# The unpaid invoices past their due date, one row each, in a read-only transaction.
# Columns named like the record fields (see the README) are used as they are: alias yours.
# Amounts must be NUMERIC/DECIMAL (on PostgreSQL MONEY works too), never FLOAT/REAL.
# :today is today's date in policy.timezone, bound by the driver. min_days_overdue in [policy]
# decides when an invoice may go to collection (younger ones are listed as waiting), so the
# query need not count days; if it must, per database:
#   PostgreSQL  i.due_date <= :today - 14
#   MariaDB     i.due_date <= :today - INTERVAL 14 DAY
#   SQLite      i.due_date <= date(:today, '-14 days')
#   SQL Server  i.due_date <= DATEADD(day, -14, :today)
query = """
SELECT i.id           AS accounting_invoice_id,
       i.invoice_no   AS invoice_number,
       i.invoice_date,
       i.due_date,
       i.balance      AS amount,
       i.currency,
       i.description,
       c.name         AS debtor_name,
       c.customer_no  AS debtor_number,
       c.email        AS debtor_email,
       c.kind         AS debtor_type,
       c.org_no       AS organization_number,
       c.street       AS address_line1,
       c.zip          AS postal_code,
       c.city,
       c.country_code AS country,
       CASE WHEN EXISTS (SELECT 1 FROM invoice_pdfs p WHERE p.invoice_id = i.id)
            THEN 1 ELSE 0 END AS has_document
FROM invoices i
JOIN customers c ON c.id = i.customer_id
WHERE i.balance > 0
  AND i.due_date < :today
ORDER BY i.id
"""
# The invoice's PDF: one row, one column of bytes. Binds :accounting_invoice_id and/or
# :invoice_number (the record's values). The has_document column above says which invoices
# have one; without it, an invoice whose query returns no row is quarantined.
document_query = "SELECT pdf FROM invoice_pdfs WHERE invoice_id = :accounting_invoice_id"
# max_document_bytes = 20971520  # a bigger PDF is refused (the invoice waits, quarantined)
# fetch_size = 1000              # rows per round trip of the server-side cursor
# connect_timeout_seconds = 10   # for a connection to be ready, login included
# statement_timeout_seconds = 300  # for one statement (a streamed query: see the README)
#
# Money paid: without a payments query, a drop in an invoice's balance is forwarded to
# Kravia as a payment. With one, the source reports each payment and credit note itself,
# one row per payment and invoice (then drops alone are not forwarded):
# payments_query = """
# SELECT p.id AS payment_id, p.kind, p.paid_on AS date, p.amount, i.invoice_no AS invoice_number
# FROM payments p JOIN invoices i ON i.id = p.invoice_id
# WHERE p.paid_on >= :today - 90
# """
#
# Instead of aliases, map record fields to the query's columns:
# [sources.settings.columns]
# invoice_number = "invoice_no"
# amount = "balance"
'''


class SqlDocumentError(ConnectorError, OSError):
    """An invoice copy could not be fetched because the database failed.

    An `OSError` as well, so that the engine treats it like any unreadable copy: a new invoice
    waits (quarantined with this reason), an upload is retried with backoff.
    """


class SqlSettings(ConnectorSettings):
    """Settings of the SQL connector (`[sources.settings]` of an `sql` source)."""

    url: str
    """A SQLAlchemy URL. A password in it is a secret (better: `password_env`)."""
    password_env: str | None = None
    """The name of an environment variable holding the database password."""
    password_file: Path | None = None
    """A file holding the password (relative to the configuration file; one trailing newline
    is dropped)."""
    query: str
    """The overdue invoices, one row each; may bind `:today`."""
    columns: dict[str, str] = Field(default_factory=dict)
    """Canonical field → the query's column; unlisted fields are read from their own name."""
    document_query: str | None = None
    """The invoice's PDF bytes; binds `:accounting_invoice_id` and/or `:invoice_number`."""
    max_document_bytes: int = Field(default=20 * _MIB, gt=0)
    """A bigger PDF from `document_query` is refused, never uploaded (the invoice waits,
    quarantined with the reason). The driver has fetched it by then: limit it in the query
    too if such rows are common."""
    fetch_size: int = Field(default=1000, gt=0)
    """Rows fetched per round trip."""
    connect_timeout_seconds: int = Field(default=10, gt=0, le=_MAX_LIMIT_SECONDS)
    """Seconds for a connection to be ready (TCP, TLS, login, session setup)."""
    statement_timeout_seconds: int = Field(default=300, gt=0, le=_MAX_LIMIT_SECONDS)
    """Seconds one statement may run before it is stopped and the read fails."""
    payments_query: str | None = None
    """Payments and credit notes of the invoices, one row per payment and invoice, with
    columns named like the payment record fields (`payment_id`, `kind`, `date`, `amount`,
    `invoice_number` or `accounting_invoice_id`, optional `description`, `payer`,
    `reference`, `kid`, `account`); may bind `:today`. With it, the source reports payments
    as records (`payments = "records"`)."""

    @field_validator("url")
    @classmethod
    def _url_is_sqlalchemy(cls, value: str) -> str:
        try:
            url = _with_default_driver(make_url(value))
        except (ArgumentError, ValueError):
            # never echo the text: it may hold a password
            raise ValueError(
                "not a SQLAlchemy URL such as postgresql://user@host:5432/database"
            ) from None
        try:
            url.get_dialect()
        except NoSuchModuleError:
            raise ValueError(
                f"SQLAlchemy knows no database {url.drivername!r} (e.g. postgresql, mariadb, "
                "mysql, mssql, sqlite)"
            ) from None
        return value

    @field_validator("query")
    @classmethod
    def _query_binds(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("the query is empty")
        _check_binds(value, QUERY_BINDS)
        return value

    @field_validator("payments_query")
    @classmethod
    def _payments_query_binds(cls, value: str | None) -> str | None:
        if value is not None:
            if not value.strip():
                raise ValueError("the payments query is empty")
            _check_binds(value, QUERY_BINDS)
        return value

    @field_validator("document_query")
    @classmethod
    def _document_query_binds(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not _check_binds(value, DOCUMENT_BINDS):
            raise ValueError(
                "the document query must bind :accounting_invoice_id or :invoice_number, "
                "or every invoice would get the same document"
            )
        return value

    @field_validator("connect_timeout_seconds", "statement_timeout_seconds", mode="before")
    @classmethod
    def _a_limit(cls, value: object) -> object:
        # "No limit" is not offered: one database that never answers would stall the pass,
        # and in the daemon every other source with it. A user who needs long gives a day.
        if value is None or (isinstance(value, int | float) and value <= 0):
            raise ValueError(
                f"give a number of seconds from 1 to {_MAX_LIMIT_SECONDS}: there is no "
                "'no limit', as a database that never answers would stall every source"
            )
        return value

    @field_validator("columns")
    @classmethod
    def _columns_are_fields(cls, value: dict[str, str]) -> dict[str, str]:
        for field, column in value.items():
            if field not in RECORD_FIELDS:
                raise ValueError(
                    f"{field!r} is not a record field; known fields: {', '.join(RECORD_FIELDS)}"
                )
            if not column.strip():
                raise ValueError(f"{field!r}: the column name is empty")
        return value

    @model_validator(mode="after")
    def _one_password(self) -> SqlSettings:
        if self.password_env is not None and self.password_file is not None:
            raise ValueError("give password_env or password_file, not both")
        if (self.password_env or self.password_file) and make_url(self.url).password:
            raise ValueError(
                "the url already holds a password; remove it from the url, or drop "
                "password_env/password_file"
            )
        if self.password_env is not None and not self.password_env.strip():
            raise ValueError("password_env is empty: give the name of an environment variable")
        return self

    @model_validator(mode="after")
    def _limits_not_in_url(self) -> SqlSettings:
        # The connector sets the driver's timeouts from the two settings; the same parameter
        # in the URL would silently lose to them. Only the names are shown (the URL may hold
        # a password).
        url = _with_default_driver(make_url(self.url))
        clashing = sorted(_DRIVER_TIMEOUTS.get(url.get_driver_name(), frozenset()) & set(url.query))
        options = url.query.get("options", "")
        if url.get_backend_name() == "postgresql" and "statement_timeout" in str(options):
            clashing.append("options=-c statement_timeout")
        if clashing:
            raise ValueError(
                f"the url sets {', '.join(clashing)}: remove it and use connect_timeout_seconds "
                "and statement_timeout_seconds, from which the connector sets the driver's "
                "timeouts"
            )
        return self

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        """The fields for `repr`, with a password in the URL hidden."""
        for name, value in super().__repr_args__():
            yield name, (_display(self.url) if name == "url" else value)


def _check_binds(query: str, allowed: frozenset[str]) -> set[str]:
    """The bind names `query` uses; a `ValueError` naming any that is not in `allowed`."""
    used = set(text(query).compile().params)
    unknown = sorted(used - allowed)
    if unknown:
        names = ", ".join(f":{name}" for name in unknown)
        known = ", ".join(f":{name}" for name in sorted(allowed))
        plural = "s" if len(unknown) > 1 else ""
        raise ValueError(f"unknown bound parameter{plural} {names}; available: {known}")
    return used


def _with_default_driver(url: URL) -> URL:
    """`url` with the driver of our extra when it names none (`mariadb://` → `+pymysql`)."""
    if "+" in url.drivername:
        return url
    backend = _BACKENDS.get(url.drivername)
    if backend is None or url.drivername == "sqlite":
        return url
    return url.set(drivername=f"{url.drivername}+{backend[2]}")


def _display(url_text: str) -> str:
    """The URL for people: the password hidden (unparseable text is not shown at all)."""
    try:
        return make_url(url_text).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        return "(an invalid URL)"


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
        url = _with_default_driver(make_url(settings.url))
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
        transaction (see `_PostgresStampedRead`). Otherwise None: the engine reads every row
        in full."""
        if self.backend != "postgresql" or self.url.get_driver_name() != "psycopg":
            return None
        today = self.today()
        connection = self._connect()
        try:
            with self._failure("cannot start a read on"):
                connection.execution_options(isolation_level="REPEATABLE READ")
            layout = self._server_layout(connection, today)
        except BaseException:
            self._close_connection(connection)
            raise
        if layout is None:
            self._close_connection(connection)
            return None
        return _PostgresStampedRead(self, connection, layout, today)

    def _close_connection(self, connection: Connection) -> None:
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
                yield from self._read_payments(connection, self.settings.payments_query, today)
        finally:
            self._close_connection(connection)

    def _bound(
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
        sql = query if select is None else _wrapped(query, select)
        if no_rows:
            sql = f"{sql} LIMIT 0"
        params: dict[str, object] = {}
        binds: list[BindParameter[Any]] = []
        if hashes is not None:
            sql = f"SELECT * FROM ({sql}) AS s WHERE s.{_ROW_HASH} = ANY(:hashes)"  # noqa: S608 - no value in it
            binds.append(bindparam("hashes", type_=ARRAY(Text())))
            params["hashes"] = hashes
        if seed is not None:
            binds.append(bindparam("kravia_sync_seed", type_=BigInteger()))
            params["kravia_sync_seed"] = seed
        if "today" in _check_binds(query, QUERY_BINDS):
            binds.append(bindparam("today", type_=Date()))
            params["today"] = today
        return text(sql).bindparams(*binds), params

    def _read_invoices(
        self, connection: Connection, today: date
    ) -> Iterator[SourceRecord | RecordError]:
        query = self.settings.query
        layout = self._server_layout(connection, today)
        if layout is not None:
            statement, params = self._bound(
                query, today=today, select=_WITH_ROW_HASH, seed=layout.seed
            )
        else:
            statement, params = self._bound(query, today=today)
        result: CursorResult[Any] | None = None
        try:
            result = self._execute(connection, statement, params, "the query")
            if layout is None:
                keys = list(result.keys()) if result.returns_rows else []
                layout = _Layout(self, keys, self._columns(keys))
            number = 0
            for rows in self._batches(result, "the query"):
                for row in rows:
                    number += 1
                    yield self._record(tuple(row), layout, number)
        finally:
            _close(result)

    def _server_layout(self, connection: Connection, today: date) -> _Layout | None:
        """On PostgreSQL 14 and later (through psycopg), the layout of the query's rows, read
        without running it (a `LIMIT 0` of it), when the server can hash them exactly: every
        column of a type in `_PG_HASHABLE_TYPES`, no nondeterministic collation in the
        database, no column named like ours. It fails naming a missing field before any row
        is read. None otherwise: the query then runs as written, digested here."""
        if self.backend != "postgresql" or self.url.get_driver_name() != "psycopg":
            return None
        if (connection.dialect.server_version_info or (0,)) < _PG_ROW_HASH_SINCE:
            return None
        statement, params = self._bound(self.settings.query, today=today, select="*", no_rows=True)
        try:
            result = connection.execute(statement, params)
        except DBAPIError as exc:
            if getattr(exc.orig, "sqlstate", None) != _SYNTAX_ERROR:
                with self._failure("the query failed on"):
                    raise
            # The query does not read as a subquery (a semicolon and a comment after it,
            # say): it runs as written instead.
            with self._failure("the query failed on"):
                connection.rollback()
            return None
        with self._failure("the query failed on"):
            keys = list(result.keys()) if result.returns_rows else []
            types = {column[1] for column in result.cursor.description or ()}
            result.close()
            zone, loose_collations = connection.execute(text(_PG_SESSION)).one()
        columns = self._columns(keys)
        ours = {_ROW_HASH, _SUBQUERY}
        if loose_collations or not types <= _PG_HASHABLE_TYPES:
            return None
        if any(key.casefold() in ours for key in keys):
            return None
        return _Layout(self, keys, columns, server_hash=True, session=str(zone))

    def _execute(
        self, connection: Connection, statement: TextClause, params: dict[str, object], what: str
    ) -> CursorResult[Any]:
        """Run `statement` for streaming: rows come `fetch_size` at a time through a
        server-side cursor where the driver has one."""
        with self._failure(f"{what} failed on"):
            return connection.execution_options(
                stream_results=True, yield_per=self.settings.fetch_size
            ).execute(statement, params)

    def _batches(self, result: CursorResult[Any], what: str) -> Iterator[Sequence[Any]]:
        """The rows of `result` a batch at a time; a failure at any point is a
        `ConnectorError` saying how many rows came before it."""
        partitions = result.partitions(self.settings.fetch_size)
        count = 0
        while True:
            with self._failure(f"{what} failed after {count} rows on"):
                rows = next(partitions, None)
            if rows is None:
                return
            count += len(rows)
            yield rows

    def _read_payments(
        self, connection: Connection, query: str, today: date
    ) -> Iterator[PaymentRecord]:
        statement, params = self._bound(query, today=today)
        result: CursorResult[Any] | None = None
        try:
            result = self._execute(connection, statement, params, "the payments query")
            keys = list(result.keys()) if result.returns_rows else []
            positions = _payment_columns(keys, self.display_url)
            sqlite = self.backend == "sqlite"
            for rows in self._batches(result, "the payments query"):
                for row in rows:
                    fields = {
                        name: _value(row[position], sqlite=sqlite)
                        for name, position in positions.items()
                    }
                    invoice = _text(fields.get("invoice_number")) or _text(
                        fields.get("accounting_invoice_id")
                    )
                    key = f"payment {_text(fields.get('payment_id'))} (invoice {invoice})"
                    yield PaymentRecord(key=key, fields=fields)
        finally:
            _close(result)

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
            needed = _check_binds(self.settings.document_query, DOCUMENT_BINDS)
            absent = sorted(name for name in needed if name not in positions)
            if absent:
                raise ConnectorError(
                    f"the document query binds :{absent[0]}, but the query returns no "
                    f"{absent[0]!r} column; no row was read"
                )
        return positions

    def _record(self, row: tuple[Any, ...], layout: _Layout, number: int) -> SourceRecord:
        """The record of one row (this runs for every row: the common types go straight)."""
        picked = layout.pick(row)
        if _PLAIN.issuperset(map(type, picked)):
            fields: dict[str, object] = dict(zip(layout.names, picked, strict=True))
        else:
            sqlite = self.backend == "sqlite"
            fields = {
                name: _value(value, sqlite=sqlite)
                for name, value in zip(layout.names, picked, strict=True)
            }
        return SourceRecord(
            key=_record_key(fields, number),
            fields=fields,
            document=self._document(row, layout.columns),
            digest=layout.digest(row),
        )

    def _has_document(self, row: tuple[Any, ...], columns: Mapping[str, int]) -> bool:
        """Whether the record of `row` comes with a document (see `_document`)."""
        if self.settings.document_query is None:
            return False
        return HAS_DOCUMENT not in columns or _truthy(row[columns[HAS_DOCUMENT]])

    # -- documents -----------------------------------------------------------------------

    def _document(
        self, row: tuple[Any, ...], columns: Mapping[str, int]
    ) -> CallableDocument | None:
        query = self.settings.document_query
        if query is None or not self._has_document(row, columns):
            return None
        binds = {
            name: row[columns[name]]
            for name in _check_binds(query, DOCUMENT_BINDS)
            if name in columns
        }
        number = _text(_value(row[columns["invoice_number"]], sqlite=False)) or "invoice"
        loader = functools.partial(self._load_document, binds, number)
        return CallableDocument(f"{number}.pdf", loader)

    def _load_document(self, binds: Mapping[str, object], number: str) -> bytes:
        """The bytes `document_query` returns for one invoice (its own read-only connection)."""
        query = self.settings.document_query
        if query is None:  # pragma: no cover - only documents of a document query exist
            raise RuntimeError("no document query")
        action = f"the document query for invoice {number} failed on"
        try:
            with self._connect() as connection, self._failure(action):
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
        with self._failure("cannot connect to", connecting=True):
            return engine.connect()

    def _get_engine(self) -> Engine:
        """The engine (no pool: every `connect` is a new read-only, time-limited connection)."""
        if self._engine is None:
            connect_args = _connect_args(self.url.get_driver_name(), self.settings)
            with self._failure("cannot use"):
                engine = create_engine(self.url, poolclass=NullPool, connect_args=connect_args)
            event.listen(engine, "connect", self._prepare_session)
            if self.backend == "sqlite":
                event.listen(engine, "before_cursor_execute", _start_statement_clock)
            self._engine = engine
        return self._engine

    def _prepare_session(
        self,
        dbapi_connection: Any,  # noqa: ANN401 - the driver's own connection
        record: ConnectionPoolEntry,
    ) -> None:
        """Make a new connection read-only, then time-limited, before the connector uses it."""
        read_only = _READ_ONLY.get(self.backend)
        if read_only is not None:
            cursor = dbapi_connection.cursor()
            try:
                cursor.execute(read_only)  # first: nothing of ours runs in a writable session
                limit = _statement_limit(
                    _server_kind(self.backend, cursor), self.settings.statement_timeout_seconds
                )
                if limit is not None:
                    cursor.execute(limit)
            finally:
                cursor.close()
            if self.backend == "postgresql":
                dbapi_connection.commit()  # SET is transactional: a rollback would undo it
        driver = self.url.get_driver_name()
        if driver == "psycopg":
            _register_money_loader(dbapi_connection)
        elif driver == "pymysql":
            # PyMySQL waits for every answer, its greeting included, with read_timeout: it was
            # opened with the connect limit. From now on the server's statement limit decides,
            # and its error takes a moment to arrive; silence longer than both is a stall.
            limits = self.settings
            dbapi_connection._read_timeout = (  # noqa: SLF001 - PyMySQL has no setter for it
                limits.statement_timeout_seconds + limits.connect_timeout_seconds
            )
        elif self.backend == "sqlite":
            clock = _StatementClock(self.settings.statement_timeout_seconds)
            record.info[_STATEMENT_CLOCK] = clock
            dbapi_connection.set_progress_handler(clock.expired, _SQLITE_PROGRESS_STEPS)

    @contextlib.contextmanager
    def _failure(self, action: str, *, connecting: bool = False) -> Iterator[None]:
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
            raise ConnectorError(self._redact(_missing_driver(self.url, exc))) from None
        except failures as exc:
            orig = exc.orig if isinstance(exc, DBAPIError) else None
            reason: BaseException = exc if orig is None else orig
            detail = " ".join(str(reason).split()) or type(reason).__name__
            advice = self._limit_advice(reason, connecting=connecting)
            message = f"{action} {self.display_url}: {detail}{advice}"
            raise ConnectorError(self._redact(message)) from None

    def _limit_advice(self, reason: BaseException, *, connecting: bool) -> str:
        """When a time limit ended the call, what happened and the setting to raise."""
        reached = _limit_reached(self.backend, reason)
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
            message = message.replace(secret, _HIDDEN)
        return message


# -- time limits ---------------------------------------------------------------------------


def _connect_args(driver: str, settings: SqlSettings) -> dict[str, object]:
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


def _server_kind(backend: str, cursor: Any) -> str:  # noqa: ANN401 - a DB-API cursor
    """`backend`, except that a MySQL-protocol server says itself whether it is MariaDB (the
    URL need not: `mysql://` reaches either, and they name their statement limits apart)."""
    if backend not in {"mysql", "mariadb"}:
        return backend
    cursor.execute("SELECT VERSION()")
    (version,) = cursor.fetchone()
    return "mariadb" if "mariadb" in str(version).casefold() else "mysql"


def _statement_limit(server: str, seconds: int) -> str | None:
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


def _limit_reached(backend: str, reason: BaseException) -> Literal["statement", "wait"] | None:
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


class _StatementClock:
    """The statement limit on one SQLite connection, which has no setting for it: the clock
    starts as each statement is sent (`_start_statement_clock`) and SQLite's progress handler
    asks `expired` every `_SQLITE_PROGRESS_STEPS` instructions; a true answer interrupts the
    statement. A streamed query is one statement until its last row is fetched."""

    __slots__ = ("_deadline", "_seconds")

    def __init__(self, seconds: int) -> None:
        self._seconds = seconds
        self._deadline = float("inf")  # the session's own setup runs unlimited

    def start(self) -> None:
        self._deadline = time.monotonic() + self._seconds

    def expired(self) -> bool:
        return time.monotonic() > self._deadline


def _start_statement_clock(connection: Connection, *_statement: object) -> None:
    """SQLAlchemy's `before_cursor_execute`: the connection's statement clock starts."""
    clock = connection.info.get(_STATEMENT_CLOCK)
    if isinstance(clock, _StatementClock):
        clock.start()


def _payment_columns(keys: Sequence[str], where: str) -> dict[str, int]:
    """Payment field → position in the payments query's rows; the required ones present."""
    if not keys:
        raise ConnectorError(f"the payments query on {where} returns no rows: it must be a SELECT")
    folded = {key.casefold(): position for position, key in enumerate(keys)}
    positions = {field: folded[field] for field in PAYMENT_FIELDS if field in folded}
    missing = [field for field in REQUIRED_PAYMENT_FIELDS if field not in positions]
    if "invoice_number" not in positions and "accounting_invoice_id" not in positions:
        missing.append("invoice_number (or accounting_invoice_id)")
    if missing:
        raise ConnectorError(
            f"the payments query returns no column {', '.join(repr(m) for m in missing)}; its "
            f"columns: {', '.join(keys)}. Alias them in the query; no payment was read"
        )
    return positions


def _missing_driver(url: URL, exc: BaseException) -> str:
    backend = url.get_backend_name()
    driver = url.get_driver_name()
    label, extra, extra_driver = _BACKENDS.get(backend, (backend, None, driver))
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


class _Layout:
    """How one query's rows become records: which columns are which fields, and the digest
    of a whole row, which covers every column and the way they are mapped.

    The digest is computed here from each column's exact repr, or, with `server_hash`, read
    from the row's last column, where PostgreSQL put a hash of the whole row (`_WITH_ROW_HASH`).
    """

    def __init__(
        self,
        connector: SqlConnector,
        keys: Sequence[str],
        columns: dict[str, int],
        *,
        server_hash: bool = False,
        session: str = "",
    ) -> None:
        self.columns = columns
        self.keys = list(keys)
        self.server_hash = server_hash
        wanted = [(field, position) for field, position in columns.items() if field != HAS_DOCUMENT]
        self.names = tuple(field for field, _ in wanted)
        positions = [position for _, position in wanted]
        # The required fields make at least two columns, so itemgetter returns a tuple.
        self.pick: Callable[[tuple[Any, ...]], tuple[Any, ...]] = operator.itemgetter(*positions)
        layout = (
            _SERVER_DIGEST_FORMAT if server_hash else _DIGEST_FORMAT,
            self.keys,
            sorted(columns.items()),
            connector.backend,
            connector.settings.document_query is not None,
            *([session] if server_hash else []),
        )
        self._seed = hashlib.blake2b(repr(layout).encode(), digest_size=16)
        self.seed = int.from_bytes(self._seed.digest()[:8], "big", signed=True)
        self.digest: Callable[[tuple[Any, ...]], str] = (
            self._server_digest if server_hash else self._row_digest
        )

    def _row_digest(self, row: tuple[Any, ...]) -> str:
        """A hash of the layout and the whole row, every column by its exact repr (bytes, not
        a memoryview's address); a type with an unstable repr costs a revalidation, never a
        missed change."""
        if not _REPR_EXACT.issuperset(map(type, row)):
            row = tuple(
                bytes(value) if isinstance(value, memoryview | bytearray) else value
                for value in row
            )
        digest = self._seed.copy()
        digest.update(repr(row).encode(errors="surrogatepass"))
        return digest.hexdigest()

    @staticmethod
    def _server_digest(row: Sequence[Any]) -> str:
        """The server's hash of the row, seeded with the layout's (its last column)."""
        return str(row[-1])


class _PostgresStampedRead(StampedRead):
    """A two-phase read of the query inside one read-only REPEATABLE READ transaction, so
    both phases see the same snapshot of the database.

    Phase one fetches per row only its id columns, `has_document` and the server's hash of
    the whole row (`hash_record_extended`); phase two fetches the full rows whose hashes the
    engine asks for (`= ANY(:hashes)`, one statement). The query runs once per phase on the
    server; the rows of unchanged invoices never become Python objects beyond their stamp.
    """

    def __init__(
        self, connector: SqlConnector, connection: Connection, layout: _Layout, today: date
    ) -> None:
        self._connector = connector
        self._connection = connection
        self._layout = layout
        self._today = today

    def stamps(self) -> Iterator[RecordStamp | PaymentRecord | RecordError]:
        connector, layout = self._connector, self._layout
        quote = self._connection.dialect.identifier_preparer.quote
        ids: list[str] = [field for field in _ID_FIELDS if field in layout.columns]
        picked = [*ids, *([HAS_DOCUMENT] if HAS_DOCUMENT in layout.columns else [])]
        # A colon in a quoted column name is not a bind parameter: escaped for `text()`.
        names = [quote(layout.keys[layout.columns[field]]).replace(":", "\\:") for field in picked]
        select = ", ".join([f"{_SUBQUERY}.{name}" for name in names] + [_ROW_HASH_EXPRESSION])
        statement, params = connector._bound(  # noqa: SLF001
            connector.settings.query, today=self._today, select=select, seed=layout.seed
        )
        # Where the stamp rows keep what `_has_document` looks for.
        columns = {field: position for position, field in enumerate(picked)}
        with_document = connector.settings.document_query is not None
        # This loop runs for every row of the source on every pass: it is written for speed.
        # The one-id case (the invoice number) is the common one.
        new_stamp = functools.partial(tuple.__new__, RecordStamp)
        only_number = ids == ["invoice_number"]
        plain = _PLAIN
        number = 0
        for rows in self._driver_batches(statement, params):
            for row in rows:
                number += 1
                value = row[0]
                if only_number and type(value) is str:
                    # As `_record_key` names it (the record carries the value unchanged).
                    fields: dict[str, object] = {"invoice_number": value}
                    text_ = value.strip()
                    key = f"invoice {text_}" if text_ else f"row {number}"
                else:
                    # The id values as the full record carries them (see `_record`).
                    fields = dict(zip(ids, row))  # noqa: B905 - the row has more columns
                    if not all(type(value) in plain for value in fields.values()):
                        fields = {
                            name: _value(value, sqlite=False) for name, value in fields.items()
                        }
                    key = _record_key(fields, number)
                yield new_stamp(
                    (
                        key,
                        fields,
                        row[-1],
                        with_document and connector._has_document(row, columns),  # noqa: SLF001
                    )
                )
        if connector.settings.payments_query is not None:
            yield from connector._read_payments(  # noqa: SLF001
                self._connection, connector.settings.payments_query, self._today
            )

    def _driver_batches(
        self, statement: TextClause, params: dict[str, object]
    ) -> Iterator[list[tuple[Any, ...]]]:
        """The rows of `statement` straight from a psycopg server-side cursor in this read's
        transaction, `fetch_size` at a time: plain tuples, without SQLAlchemy's row objects
        (this phase reads every row of the source, so each microsecond counts). The cursor is
        on the read's own connection, so the session's statement_timeout bounds its DECLARE
        and each FETCH, as it bounds every statement of the connector."""
        connector = self._connector
        size = connector.settings.fetch_size
        compiled = statement.compile(dialect=self._connection.dialect)
        with connector._failure("the query failed on"):  # noqa: SLF001
            driver = self._connection.connection.driver_connection
            cursor = driver.cursor(name="kravia_sync_stamps")  # type: ignore[union-attr]
        try:
            with connector._failure("the query failed on"):  # noqa: SLF001
                cursor.execute(str(compiled), params)
            count = 0
            while True:
                with connector._failure(f"the query failed after {count} rows on"):  # noqa: SLF001
                    rows = cursor.fetchmany(size)
                if not rows:
                    return
                count += len(rows)
                yield rows
        finally:
            with contextlib.suppress(Exception):
                cursor.close()

    def records(self, stamps: Sequence[RecordStamp]) -> Iterator[SourceRecord]:
        connector, layout = self._connector, self._layout
        hashes = sorted({stamp.digest for stamp in stamps})
        if not hashes:
            return
        statement, params = connector._bound(  # noqa: SLF001
            connector.settings.query,
            today=self._today,
            select=_WITH_ROW_HASH,
            seed=layout.seed,
            hashes=hashes,
        )
        result: CursorResult[Any] | None = None
        try:
            result = connector._execute(self._connection, statement, params, "the query")  # noqa: SLF001
            number = 0
            for rows in connector._batches(result, "the query"):  # noqa: SLF001
                for row in rows:
                    number += 1
                    yield connector._record(tuple(row), layout, number)  # noqa: SLF001
        finally:
            _close(result)

    def close(self) -> None:
        self._connector._close_connection(self._connection)  # noqa: SLF001


def _wrapped(query: str, select: str) -> str:
    """`SELECT <select> FROM (query) AS kravia_sync_q`, on lines of their own so that a
    comment ending the query cannot swallow the parenthesis; a final semicolon is dropped."""
    inner = query.strip().removesuffix(";")
    return f"SELECT {select} FROM (\n{inner}\n) AS {_SUBQUERY}"  # noqa: S608 - the configured query itself


def _close(result: CursorResult[Any] | None) -> None:
    """Close a result (an unbuffered MySQL result must be finished before the connection runs
    more); errors while closing are not errors of the read."""
    if result is not None:
        with contextlib.suppress(SQLAlchemyError, OSError):
            result.close()


def _record_key(fields: Mapping[str, object], number: int) -> str:
    """The record's name for people: its invoice number (and its own id when that differs),
    else its row number."""
    invoice_number = _text(fields.get("invoice_number"))
    key = f"row {number}" if invoice_number is None else f"invoice {invoice_number}"
    own_id = _text(fields.get("accounting_invoice_id"))
    if invoice_number is not None and own_id is not None and own_id != invoice_number:
        key = f"{key} (id {own_id})"
    return key


def _value(value: object, *, sqlite: bool) -> object:
    """A column value as the record carries it (None: the field is left out)."""
    if isinstance(value, float):
        # SQLite's NUMERIC affinity stores 12480.50 as the REAL 12480.5: its shortest repr is
        # the decimal written. Elsewhere a float column is a schema error the model reports.
        return Decimal(repr(value)) if sqlite else value
    if isinstance(value, memoryview | bytearray | bytes):
        raw = bytes(value)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return raw  # the model says it is not text
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, str) and not value.strip():
        return None
    return value


def _text(value: object) -> str | None:
    if value is None or isinstance(value, bool):
        return None
    text_ = str(value).strip()
    return text_ or None


def _truthy(value: object) -> bool:
    if isinstance(value, str):
        return value.strip().casefold() not in _FALSE_TEXT
    return bool(value)


# -- PostgreSQL MONEY ----------------------------------------------------------------------

_MONEY_NOISE = re.compile(r"[^\d.,\-()]")


def parse_money_text(raw: str) -> Decimal | str:
    """PostgreSQL's MONEY text (`$12,480.50`, `kr 12 480,50`, `12.480,50 €`) as a `Decimal`.

    The text depends on the server's `lc_monetary`; the decimal separator is the last `.` or
    `,` when one or two digits follow it. Anything ambiguous is returned as text for the model
    to refuse with its reason.
    """
    negative = "-" in raw or "(" in raw
    digits = _MONEY_NOISE.sub("", raw).replace("-", "").replace("(", "").replace(")", "")
    position = max(digits.rfind("."), digits.rfind(","))
    if position >= 0 and len(digits) - position - 1 in {1, 2}:
        whole, fraction = digits[:position], digits[position + 1 :]
    else:
        whole, fraction = digits, ""
        if position >= 0 and len(digits) - position - 1 != 3:
            return raw
        if position >= 0 and "." in digits and "," in digits:
            return raw
    whole = whole.replace(".", "").replace(",", "")
    if not whole.isdigit() or (fraction and not fraction.isdigit()):
        return raw
    try:
        amount = Decimal(f"{whole}.{fraction}" if fraction else whole)
    except InvalidOperation:  # pragma: no cover - guarded by the checks above
        return raw
    return -amount if negative else amount


def _register_money_loader(dbapi_connection: Any) -> None:  # noqa: ANN401 - the driver's
    """Load PostgreSQL MONEY as `Decimal` on this psycopg connection."""
    from psycopg.adapt import Loader  # noqa: PLC0415 - psycopg is an optional extra

    class MoneyLoader(Loader):
        def load(self, data: Any) -> Decimal | str:  # noqa: ANN401 - psycopg's Buffer
            return parse_money_text(bytes(data).decode("utf-8"))

    dbapi_connection.adapters.register_loader("money", MoneyLoader)
