"""The payments query of an SQL source: one payment record per row, streamed."""

from __future__ import annotations

from datetime import date
from typing import TYPE_CHECKING, Any

from kravia_sync import PaymentRecord

if TYPE_CHECKING:
    from collections.abc import Iterator

    from sqlalchemy.engine import Connection, CursorResult
from connectors.sql._database import SqlDatabase
from connectors.sql._rows import close_result, payment_columns, text_of, value_of

__all__ = []


def read_payments(
    database: SqlDatabase, connection: Connection, query: str, today: date
) -> Iterator[PaymentRecord]:
    statement, params = database.bound_query(query, today=today)
    result: CursorResult[Any] | None = None
    try:
        result = database.execute(connection, statement, params, "the payments query")
        keys = list(result.keys()) if result.returns_rows else []
        positions = payment_columns(keys, database.display_url)
        sqlite = database.backend == "sqlite"
        for rows in database.batches(result, "the payments query"):
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
