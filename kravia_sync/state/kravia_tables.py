"""What Kravia told us: the status and capital left pulled back for each case, and the mirror
of Kravia's cases as its search reported them."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict
from datetime import datetime
from typing import Any

from kravia_sync.identity import KnownCase
from kravia_sync.state.database import Database
from kravia_sync.state.errors import state_errors
from kravia_sync.state.records import MirrorItem
from kravia_sync.state.rows import (
    UPSERT_META_SQL,
    bound_values,
    connect,
    decoded_row,
    insert_sql,
)

__all__ = ["KraviaTables"]


# With whether the state store holds the case: under its id, and as the same invoice (its
# Kravia id, or its invoice number).
_KNOWN_CASE_COLUMNS = (
    "kravia_id, accounting_invoice_id, invoice_number, EXISTS (SELECT 1 FROM cases AS c "
    "WHERE c.accounting_invoice_id = kravia_cases.accounting_invoice_id AND "
    "(c.kravia_id = kravia_cases.kravia_id OR c.invoice_number = kravia_cases.invoice_number))"
)
_KNOWN_IN_KRAVIA_SQL = (
    f"SELECT {_KNOWN_CASE_COLUMNS} FROM kravia_cases WHERE accounting_invoice_id = ? UNION "  # noqa: S608 - our own SQL
    f"SELECT {_KNOWN_CASE_COLUMNS} FROM kravia_cases WHERE invoice_number = ?"
)


# Kravia's word on one of our cases (by its Kravia id), written only where it changed.
_STATUS_SQL = (
    "UPDATE cases SET kravia_status = :status, kravia_remaining = :remaining, status_at = :now "
    "WHERE kravia_id = :kravia_id "
    "AND (kravia_status IS NOT :status OR kravia_remaining IS NOT :remaining)"
)


# A case Kravia's search reported, by Kravia id; a search that leaves the accountingInvoiceId
# out does not forget one its details gave.
_UPSERT_MIRROR_SQL = (
    insert_sql(
        "kravia_cases",
        (
            "kravia_id",
            "accounting_invoice_id",
            "invoice_number",
            "status",
            "remaining",
            "last_updated",
            "seen_at",
        ),
    )
    + " ON CONFLICT (kravia_id) DO UPDATE SET "
    "accounting_invoice_id = coalesce(excluded.accounting_invoice_id, "
    "kravia_cases.accounting_invoice_id), invoice_number = excluded.invoice_number, "
    "status = excluded.status, remaining = excluded.remaining, "
    "last_updated = excluded.last_updated, seen_at = excluded.seen_at"
)


class KraviaTables(Database):
    """Holds, the journal as operators read it, and the mirror of Kravia's cases."""

    # --- holds and the journal, as operator commands read them ---------------------------------
    def holds(self) -> dict[str, dict[str, Any]]:
        """Every hold, by the accountingInvoiceId or invoice number it was placed on."""
        with self._read() as connection:
            rows = connection.execute("SELECT * FROM holds ORDER BY held_at")
            return {row["invoice"]: decoded_row(row) for row in rows}

    def journal_for(self, accounting_invoice_id: str) -> list[dict[str, Any]]:
        with self._read() as connection:
            rows = connection.execute(
                "SELECT * FROM journal WHERE accounting_invoice_id = ? ORDER BY id",
                (accounting_invoice_id,),
            )
            return [decoded_row(row) for row in rows]

    # --- the mirror of Kravia's cases -------------------------------------------------------------
    def record_mirror(
        self, items: Iterable[MirrorItem], *, meta: Mapping[str, str], now: datetime
    ) -> list[int]:
        """Store what Kravia's search reported of its cases (by Kravia id: a case seen again
        is updated) and the mirror's bookkeeping `meta`, in one fenced transaction; the
        Kravia ids of our cases whose status or capital changed, after the same values were
        written to them."""
        changed: list[int] = []
        with self._fenced_write() as connection:
            for item in items:
                values = bound_values(asdict(item) | {"seen_at": now})
                connection.execute(_UPSERT_MIRROR_SQL, values)
                result = connection.execute(
                    _STATUS_SQL,
                    values | {"now": values["seen_at"]},
                )
                if result.rowcount:
                    changed.append(item.kravia_id)
            for key, value in meta.items():
                connection.execute(UPSERT_META_SQL, {"key": key, "value": value})
        return changed

    def known_in_kravia(self, accounting_invoice_id: str, invoice_number: str) -> list[KnownCase]:
        """Kravia's cases, as last mirrored, with this accountingInvoiceId or invoice number.
        Asked for every invoice kept out of collection in every read, so it runs as one plain
        statement on a connection of its own (no transaction to open and close)."""
        with self._lookup_lock, state_errors(self.path):
            if self._lookup_connection is None:
                self._lookup_connection = connect(self.path, rows=False)
            rows = self._lookup_connection.execute(
                _KNOWN_IN_KRAVIA_SQL, (accounting_invoice_id, invoice_number)
            ).fetchall()
        return [
            KnownCase(kravia_id, aid, number, bool(stored))
            for kravia_id, aid, number, stored in rows
        ]

    def latest_kravia_id(self) -> int | None:
        """The Kravia id of the case of this store updated last, None when none has one."""
        with self._read() as connection:
            row = connection.execute(
                "SELECT kravia_id FROM cases WHERE kravia_id IS NOT NULL "
                "ORDER BY updated_at DESC LIMIT 1"
            ).fetchone()
        return None if row is None else int(row[0])

    def has_kravia_cases(self) -> bool:
        """Whether any case of this store has a Kravia id."""
        with self._read() as connection:
            row = connection.execute(
                "SELECT 1 FROM cases WHERE kravia_id IS NOT NULL LIMIT 1"
            ).fetchone()
        return row is not None

    def kravia_duplicates(self) -> dict[str, list[int]]:
        """Our accountingInvoiceIds that Kravia (as mirrored) holds more than one case of."""
        with self._read() as connection:
            rows = connection.execute(
                "SELECT k.accounting_invoice_id, k.kravia_id FROM kravia_cases AS k "
                "WHERE k.accounting_invoice_id IN ("
                "  SELECT accounting_invoice_id FROM kravia_cases"
                "  WHERE accounting_invoice_id IS NOT NULL"
                "  GROUP BY accounting_invoice_id HAVING count(*) > 1) "
                "AND EXISTS (SELECT 1 FROM cases AS c "
                "  WHERE c.accounting_invoice_id = k.accounting_invoice_id) "
                "ORDER BY k.accounting_invoice_id, k.kravia_id"
            ).fetchall()
        found: dict[str, list[int]] = {}
        for aid, kravia_id in rows:
            found.setdefault(str(aid), []).append(int(kravia_id))
        return found

    def mirrored_case(self, kravia_id: int) -> KnownCase | None:
        """Kravia's case `kravia_id` as last mirrored, or None when its search never
        reported it."""
        with self._read() as connection:
            row = connection.execute(
                "SELECT kravia_id, accounting_invoice_id, invoice_number FROM kravia_cases "
                "WHERE kravia_id = ?",
                (kravia_id,),
            ).fetchone()
        return None if row is None else KnownCase(row[0], row[1], row[2])

    def mirrored_count(self) -> int:
        with self._read() as connection:
            (count,) = connection.execute("SELECT count(*) FROM kravia_cases").fetchone()
        return int(count)
