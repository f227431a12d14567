"""The SQL source's settings: the database URL (a password never shown), the queries and their
bind parameters, the columns, the time limits; and the example `kravia-sync init` writes."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from pydantic import Field, ValidationInfo, field_validator, model_validator
from sqlalchemy import (
    text,
)
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError

from connectors.sql._readonly import refusal
from kravia_sync import RECORD_FIELDS, ConnectorSettings

if TYPE_CHECKING:
    from collections.abc import Iterator


__all__ = ["DOCUMENT_BINDS", "EXAMPLE_SETTINGS", "HAS_DOCUMENT", "QUERY_BINDS", "SqlSettings"]


# The longest either time limit may be: a day. Every driver takes it (libpq up to 2^31 - 1 ms,
# PyMySQL a year); a read that needs longer is better rewritten than waited for.
_MAX_LIMIT_SECONDS: Final = 86_400
# The URL query parameters through which each driver of our extras takes the limits: the
# connector sets them (`driver_connect_args`), so the URL must not set them too.
_DRIVER_TIMEOUTS: Final[dict[str, frozenset[str]]] = {
    "psycopg": frozenset({"connect_timeout"}),
    "pymysql": frozenset({"connect_timeout", "read_timeout", "write_timeout"}),
    "pymssql": frozenset({"login_timeout", "timeout"}),
}
QUERY_BINDS: Final = frozenset({"today"})


DOCUMENT_BINDS: Final = frozenset({"accounting_invoice_id", "invoice_number"})


HAS_DOCUMENT: Final = "has_document"


_MIB: Final = 1024 * 1024


HIDDEN = "***"


# backend → (name for people, extra providing its driver, the extra's driver)
BACKEND_DRIVERS: Final[dict[str, tuple[str, str | None, str]]] = {
    "postgresql": ("PostgreSQL", "postgres", "psycopg"),
    "mysql": ("MySQL", "mysql", "pymysql"),
    "mariadb": ("MariaDB", "mysql", "pymysql"),
    "mssql": ("MS SQL Server", "mssql", "pymssql"),
    "sqlite": ("SQLite", None, "pysqlite"),
}


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
# The unpaid invoices past their due date, one row each, in a read-only transaction. It must
# be one SELECT (or WITH … SELECT): anything else is refused, with the reason, before it runs.
# Best of all, the user in the url may only SELECT (kravia-sync check warns when it may write).
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
            url = with_default_driver(make_url(value))
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
    def _query_binds(cls, value: str, info: ValidationInfo) -> str:
        if not value.strip():
            raise ValueError("the query is empty")
        check_binds(value, QUERY_BINDS)
        only_a_select(value, info, "the query")
        return value

    @field_validator("payments_query")
    @classmethod
    def _payments_query_binds(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None:
            if not value.strip():
                raise ValueError("the payments query is empty")
            check_binds(value, QUERY_BINDS)
            only_a_select(value, info, "the payments query")
        return value

    @field_validator("document_query")
    @classmethod
    def _document_query_binds(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        if not check_binds(value, DOCUMENT_BINDS):
            raise ValueError(
                "the document query must bind :accounting_invoice_id or :invoice_number, "
                "or every invoice would get the same document"
            )
        only_a_select(value, info, "the document query")
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
        url = with_default_driver(make_url(self.url))
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


def check_binds(query: str, allowed: frozenset[str]) -> set[str]:
    """The bind names `query` uses; a `ValueError` naming any that is not in `allowed`."""
    used = set(text(query).compile().params)
    unknown = sorted(used - allowed)
    if unknown:
        names = ", ".join(f":{name}" for name in unknown)
        known = ", ".join(f":{name}" for name in sorted(allowed))
        plural = "s" if len(unknown) > 1 else ""
        raise ValueError(f"unknown bound parameter{plural} {names}; available: {known}")
    return used


def only_a_select(query: str, info: ValidationInfo, what: str) -> None:
    """A `ValueError` with the reason when `query` is not one SELECT that writes nothing the
    parser can see (`_readonly.refusal`), read in the dialect of the URL's database (an invalid
    URL is reported on its own)."""
    url = info.data.get("url")
    if not isinstance(url, str):
        return
    reason = refusal(query, with_default_driver(make_url(url)).get_backend_name(), what)
    if reason is not None:
        raise ValueError(reason)


def with_default_driver(url: URL) -> URL:
    """`url` with the driver of our extra when it names none (`mariadb://` → `+pymysql`)."""
    if "+" in url.drivername:
        return url
    backend = BACKEND_DRIVERS.get(url.drivername)
    if backend is None or url.drivername == "sqlite":
        return url
    return url.set(drivername=f"{url.drivername}+{backend[2]}")


def _display(url_text: str) -> str:
    """The URL for people: the password hidden (unparseable text is not shown at all)."""
    try:
        return make_url(url_text).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        return "(an invalid URL)"
