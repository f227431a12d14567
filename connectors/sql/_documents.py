"""The invoice copies of an SQL source: `document_query` run for one invoice, over its own
read-only connection, only when the engine needs the copy."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

from sqlalchemy import text

from kravia_sync import CallableDocument, ConnectorError, InvalidRecordError

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

from connectors.sql._database import SqlDatabase
from connectors.sql._rows import text_of, truthy, value_of
from connectors.sql._settings import DOCUMENT_BINDS, HAS_DOCUMENT, SqlSettings, check_binds

__all__ = ["SqlDocumentError"]


class SqlDocumentError(ConnectorError, OSError):
    """An invoice copy could not be fetched because the database failed.

    An `OSError` as well, so that the engine treats it like any unreadable copy: a new invoice
    waits (quarantined with this reason), an upload is retried with backoff.
    """


class SqlDocuments:
    """The documents of the records of one SQL source (`<invoice_number>.pdf`), each loaded
    from `document_query` when it is read."""

    def __init__(
        self, database: SqlDatabase, load: Callable[[Mapping[str, object], str], bytes]
    ) -> None:
        """`load`: `load_document` as the connector offers it. A copy's loader is that and the
        invoice's binds: the engine can write it out (the connector by reference) instead of
        keeping every new invoice's loader in memory on a first sync."""
        self.settings: SqlSettings = database.settings
        self._database = database
        self._load = load

    def has_document(self, row: tuple[Any, ...], columns: Mapping[str, int]) -> bool:
        """Whether the record of `row` comes with a document (see `document`)."""
        if self.settings.document_query is None:
            return False
        return HAS_DOCUMENT not in columns or truthy(row[columns[HAS_DOCUMENT]])

    def document(self, row: tuple[Any, ...], columns: Mapping[str, int]) -> CallableDocument | None:
        query = self.settings.document_query
        if query is None or not self.has_document(row, columns):
            return None
        binds = {
            name: row[columns[name]]
            for name in check_binds(query, DOCUMENT_BINDS)
            if name in columns
        }
        number = text_of(value_of(row[columns["invoice_number"]], sqlite=False)) or "invoice"
        loader = functools.partial(self._load, binds, number)
        return CallableDocument(f"{number}.pdf", loader)

    def load_document(self, binds: Mapping[str, object], number: str) -> bytes:
        """The bytes `document_query` returns for one invoice (its own read-only connection)."""
        query = self.settings.document_query
        if query is None:  # pragma: no cover - only documents of a document query exist
            raise RuntimeError("no document query")
        action = f"the document query for invoice {number} failed on"
        try:
            with self._database.connect() as connection, self._database.failures(action):
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
