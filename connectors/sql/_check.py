"""`kravia-sync check` for an SQL source: it connects (a refused password, an unreachable server
are problems), runs each configured query for its columns alone, without a row (a missing
column is a problem naming the field), and warns when the database user could write."""

from __future__ import annotations

import contextlib
from datetime import date
from typing import TYPE_CHECKING, Any

from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from kravia_sync import ConnectorError

if TYPE_CHECKING:
    from sqlalchemy import TextClause
    from sqlalchemy.engine import Connection, CursorResult

    # A statement with its parameters.
    Bound = tuple[TextClause, dict[str, object]]
from connectors.sql._columns import QueryColumns
from connectors.sql._database import SqlDatabase
from connectors.sql._privileges import write_warnings
from connectors.sql._rows import close_result, no_rows_of, payment_columns
from connectors.sql._settings import DOCUMENT_BINDS, check_binds

__all__ = []


class SourceCheck:
    """The checks of one SQL source's database; each opens its own read-only connection."""

    def __init__(self, database: SqlDatabase, columns: QueryColumns) -> None:
        self._database = database
        self._columns = columns

    def problems(self, today: date) -> list[str]:
        """What stops a read, each a sentence without the password: no connection, or a
        query that fails or lacks a column (every query is tried, none returns a row)."""
        try:
            connection = self._database.connect()
        except ConnectorError as exc:
            return [str(exc)]
        try:
            found = [
                self._invoices(connection, today),
                self._payments(connection, today),
                self._document(connection),
            ]
        finally:
            self._database.close_connection(connection)
        return [problem for problem in found if problem is not None]

    def warnings(self) -> list[str]:
        """Why the database user could write (see `_privileges`), or why that is unknown."""
        database = self._database
        try:
            connection = database.connect()
            try:
                with database.failures("cannot read the user's privileges on"):
                    return write_warnings(connection, database.backend)
            finally:
                database.close_connection(connection)
        except ConnectorError as exc:
            return [f"cannot tell whether the database user may write: {exc}"]

    def _invoices(self, connection: Connection, today: date) -> str | None:
        query = self._database.settings.query
        try:
            keys = self._keys(connection, *self._today_statements(query, today), "the query")
            self._columns.columns(keys)
        except ConnectorError as exc:
            return str(exc)
        return None

    def _payments(self, connection: Connection, today: date) -> str | None:
        query = self._database.settings.payments_query
        if query is None:
            return None
        what = "the payments query"
        try:
            keys = self._keys(connection, *self._today_statements(query, today), what)
            payment_columns(keys, self._database.display_url)
        except ConnectorError as exc:
            return str(exc)
        return None

    def _document(self, connection: Connection) -> str | None:
        query = self._database.settings.document_query
        if query is None:
            return None
        # No invoice's values: the binds are NULL, and no row is read anyway.
        params: dict[str, object] = dict.fromkeys(check_binds(query, DOCUMENT_BINDS))
        no_rows = text(no_rows_of(query, "*", self._database.backend))
        try:
            keys = self._keys(
                connection, (no_rows, params), (text(query), params), "the document query"
            )
        except ConnectorError as exc:
            return str(exc)
        if len(keys) != 1:
            return (
                f"the document query returns {len(keys)} columns; it must return one: the "
                "PDF's bytes"
            )
        return None

    def _today_statements(self, query: str, today: date) -> tuple[Bound, Bound]:
        """`query` (binding `:today` as a read does) without rows, and as written."""
        database = self._database
        no_rows = database.bound_query(query, today=today, select="*", no_rows=True)
        return no_rows, database.bound_query(query, today=today)

    def _keys(
        self, connection: Connection, no_rows: Bound, as_written: Bound, what: str
    ) -> list[str]:
        """The names of a query's columns, read without a row: its `no_rows` form (the
        subquery of a `LIMIT 0`, `TOP 0`), or, when it cannot be a subquery, run `as_written`
        and closed unread (a MariaDB result is drained as it closes: only such a query costs
        a whole read)."""
        database = self._database
        result: CursorResult[Any] | None = None
        try:
            try:
                with database.failures(f"{what} failed on"):
                    result = connection.execute(*no_rows)
            except ConnectorError:
                with contextlib.suppress(SQLAlchemyError, OSError):
                    connection.rollback()
                result = database.execute(connection, *as_written, what)
            return list(result.keys()) if result.returns_rows else []
        finally:
            close_result(result)
