"""The columns of the invoice query, known before any row is read: which column is which field
(a required one missing fails the read), and on PostgreSQL whether the server can hash the rows
(the layout of a two-phase read)."""

from __future__ import annotations

from datetime import date
from typing import TYPE_CHECKING

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from kravia_sync import RECORD_FIELDS, REQUIRED_FIELDS, ConnectorError

if TYPE_CHECKING:
    from collections.abc import Sequence

    from sqlalchemy.engine import Connection
from connectors.sql._database import SqlDatabase
from connectors.sql._postgres import (
    PG_HASHABLE_TYPES,
    PG_ROW_HASH_SINCE,
    PG_SESSION,
    ROW_HASH,
    SYNTAX_ERROR,
)
from connectors.sql._rows import SUBQUERY, Layout
from connectors.sql._settings import DOCUMENT_BINDS, HAS_DOCUMENT, SqlSettings, check_binds

__all__ = []


class QueryColumns:
    """The fields the invoice query's columns hold, and the layout of its rows."""

    def __init__(self, database: SqlDatabase) -> None:
        self.settings: SqlSettings = database.settings
        self._database = database

    def columns(self, keys: Sequence[str]) -> dict[str, int]:
        """Field (and `has_document`) → position in the row; every required field present."""
        if not keys:
            raise ConnectorError(
                f"the query on {self._database.display_url} returns no rows: it must be a SELECT"
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

    def server_layout(self, connection: Connection, today: date) -> Layout | None:
        """On PostgreSQL 14 and later (through psycopg), the layout of the query's rows, read
        without running it (a `LIMIT 0` of it), when the server can hash them exactly: every
        column of a type in `PG_HASHABLE_TYPES`, no nondeterministic collation in the
        database, no column named like ours. It fails naming a missing field before any row
        is read. None otherwise: the query then runs as written, digested here."""
        database = self._database
        if database.backend != "postgresql" or database.url.get_driver_name() != "psycopg":
            return None
        if (connection.dialect.server_version_info or (0,)) < PG_ROW_HASH_SINCE:
            return None
        statement, params = database.bound_query(
            self.settings.query, today=today, select="*", no_rows=True
        )
        try:
            result = connection.execute(statement, params)
        except DBAPIError as exc:
            if getattr(exc.orig, "sqlstate", None) != SYNTAX_ERROR:
                with database.failures("the query failed on"):
                    raise
            # The query does not read as a subquery (a semicolon and a comment after it,
            # say): it runs as written instead.
            with database.failures("the query failed on"):
                connection.rollback()
            return None
        with database.failures("the query failed on"):
            keys = list(result.keys()) if result.returns_rows else []
            types = {column[1] for column in result.cursor.description or ()}
            result.close()
            zone, loose_collations = connection.execute(text(PG_SESSION)).one()
        columns = self.columns(keys)
        ours = {ROW_HASH, SUBQUERY}
        if loose_collations or not types <= PG_HASHABLE_TYPES:
            return None
        if any(key.casefold() in ours for key in keys):
            return None
        return Layout(
            database.backend,
            keys,
            columns,
            with_documents=self.settings.document_query is not None,
            server_hash=True,
            session=str(zone),
        )
