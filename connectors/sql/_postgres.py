"""The two-phase read on PostgreSQL 14 and later: stamps first (ids, `has_document` and the
server's hash of each whole row), then only the rows the engine asks for, in one read-only
REPEATABLE READ transaction. It reads through the connector's seam (`StampedSource`)."""

from __future__ import annotations

import contextlib
import functools
from datetime import date
from typing import TYPE_CHECKING, Any, Final, Protocol

from kravia_sync import PaymentRecord, RecordError, RecordStamp, SourceRecord, StampedRead

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping, Sequence

    from sqlalchemy import TextClause
    from sqlalchemy.engine import Connection, CursorResult
from connectors.sql._rows import (
    ID_FIELDS,
    PLAIN,
    SUBQUERY,
    Layout,
    close_result,
    record_key,
    value_of,
)
from connectors.sql._settings import HAS_DOCUMENT, SqlSettings

__all__ = []


# PostgreSQL hashes whole rows itself (hash_record_extended, from version 14) when every
# column's type is one of these, whose hash follows equality exactly: bool, bytea, "char",
# name, int8, int2, int4, text, oid, float4, float8, bpchar, varchar, date, time, timestamp,
# timestamptz, interval, numeric, uuid (a domain reports its base type). Equal values hash
# alike (12480.5 and 12480.50, as the Decimals are equal). A database with a nondeterministic
# (case-insensitive ICU) collation is not hashed there at all (see `PG_SESSION`).
PG_HASHABLE_TYPES: Final = frozenset(
    {16, 17, 18, 19, 20, 21, 23, 25, 26, 700, 701, 1042, 1043, 1082, 1083, 1114, 1184, 1186}
    | {1700, 2950}
)


PG_ROW_HASH_SINCE: Final = (14,)


ROW_HASH: Final = "kravia_sync_row_hash"


_ROW_HASH_EXPRESSION: Final = (
    f"to_hex(hash_record_extended({SUBQUERY}, CAST(:kravia_sync_seed AS BIGINT))) AS {ROW_HASH}"
)


WITH_ROW_HASH: Final = f"{SUBQUERY}.*, {_ROW_HASH_EXPRESSION}"


# What else the row hash depends on: the session's time zone (a timestamptz hashes as an
# instant, while the record carries it in this zone), and whether the database has a
# nondeterministic (case-insensitive) collation, under which text hashes ignoring case.
PG_SESSION: Final = (
    "SELECT current_setting('TimeZone'), "
    "EXISTS (SELECT 1 FROM pg_catalog.pg_collation WHERE NOT collisdeterministic)"
)


SYNTAX_ERROR: Final = "42601"


class StampedSource(Protocol):
    """The seam between the SQL connector and its two-phase read: what the read needs of the
    connector, and all it uses (`SqlConnector` provides it)."""

    settings: SqlSettings

    def bound_query(
        self,
        query: str,
        *,
        today: date,
        select: str | None = None,
        seed: int | None = None,
        hashes: list[str] | None = None,
        no_rows: bool = False,
    ) -> tuple[TextClause, dict[str, object]]: ...

    def execute(
        self, connection: Connection, statement: TextClause, params: dict[str, object], what: str
    ) -> CursorResult[Any]: ...

    def batches(self, result: CursorResult[Any], what: str) -> Iterator[Sequence[Any]]: ...

    def failures(
        self, action: str, *, connecting: bool = False
    ) -> contextlib.AbstractContextManager[None]: ...

    def has_document(self, row: tuple[Any, ...], columns: Mapping[str, int]) -> bool: ...

    def record(self, row: tuple[Any, ...], layout: Layout, number: int) -> SourceRecord: ...

    def read_payments(
        self, connection: Connection, query: str, today: date
    ) -> Iterator[PaymentRecord]: ...

    def close_connection(self, connection: Connection) -> None: ...


class PostgresStampedRead(StampedRead):
    """A two-phase read of the query inside one read-only REPEATABLE READ transaction, so
    both phases see the same snapshot of the database.

    Phase one fetches per row only its id columns, `has_document` and the server's hash of
    the whole row (`hash_record_extended`); phase two fetches the full rows whose hashes the
    engine asks for (`= ANY(:hashes)`, one statement). The query runs once per phase on the
    server; the rows of unchanged invoices never become Python objects beyond their stamp.
    """

    def __init__(
        self, connector: StampedSource, connection: Connection, layout: Layout, today: date
    ) -> None:
        self._connector = connector
        self._connection = connection
        self._layout = layout
        self._today = today

    def stamps(self) -> Iterator[RecordStamp | PaymentRecord | RecordError]:
        connector, layout = self._connector, self._layout
        quote = self._connection.dialect.identifier_preparer.quote
        ids: list[str] = [field for field in ID_FIELDS if field in layout.columns]
        picked = [*ids, *([HAS_DOCUMENT] if HAS_DOCUMENT in layout.columns else [])]
        # A colon in a quoted column name is not a bind parameter: escaped for `text()`.
        names = [quote(layout.keys[layout.columns[field]]).replace(":", "\\:") for field in picked]
        select = ", ".join([f"{SUBQUERY}.{name}" for name in names] + [_ROW_HASH_EXPRESSION])
        statement, params = connector.bound_query(
            connector.settings.query, today=self._today, select=select, seed=layout.seed
        )
        # Where the stamp rows keep what `_has_document` looks for.
        columns = {field: position for position, field in enumerate(picked)}
        with_document = connector.settings.document_query is not None
        # This loop runs for every row of the source on every pass: it is written for speed.
        # The one-id case (the invoice number) is the common one.
        new_stamp = functools.partial(tuple.__new__, RecordStamp)
        only_number = ids == ["invoice_number"]
        plain = PLAIN
        number = 0
        for rows in self._driver_batches(statement, params):
            for row in rows:
                number += 1
                value = row[0]
                if only_number and type(value) is str:
                    # As `record_key` names it (the record carries the value unchanged).
                    fields: dict[str, object] = {"invoice_number": value}
                    text_ = value.strip()
                    key = f"invoice {text_}" if text_ else f"row {number}"
                else:
                    # The id values as the full record carries them (see `_record`).
                    fields = dict(zip(ids, row))  # noqa: B905 - the row has more columns
                    if not all(type(value) in plain for value in fields.values()):
                        fields = {
                            name: value_of(value, sqlite=False) for name, value in fields.items()
                        }
                    key = record_key(fields, number)
                yield new_stamp(
                    (
                        key,
                        fields,
                        row[-1],
                        with_document and connector.has_document(row, columns),
                    )
                )
        if connector.settings.payments_query is not None:
            yield from connector.read_payments(
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
        with connector.failures("the query failed on"):
            driver = self._connection.connection.driver_connection
            cursor = driver.cursor(name="kravia_sync_stamps")  # type: ignore[union-attr]
        try:
            with connector.failures("the query failed on"):
                cursor.execute(str(compiled), params)
            count = 0
            while True:
                with connector.failures(f"the query failed after {count} rows on"):
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
        statement, params = connector.bound_query(
            connector.settings.query,
            today=self._today,
            select=WITH_ROW_HASH,
            seed=layout.seed,
            hashes=hashes,
        )
        result: CursorResult[Any] | None = None
        try:
            result = connector.execute(self._connection, statement, params, "the query")
            number = 0
            for rows in connector.batches(result, "the query"):
                for row in rows:
                    number += 1
                    yield connector.record(tuple(row), layout, number)
        finally:
            close_result(result)

    def close(self) -> None:
        self._connector.close_connection(self._connection)
