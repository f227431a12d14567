"""Payments and credit notes for Kravia: their states and their journal, written with
compare-and-set."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Mapping
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from kravia_sync.lifecycle import CaseState
from kravia_sync.payments import (
    FINAL_PAYMENT_PHASES,
    PaymentKind,
    PaymentLine,
    PaymentPhase,
    PaymentState,
)
from kravia_sync.state.database import Database
from kravia_sync.state.errors import NotNewError, StateConflictError
from kravia_sync.state.records import JournalEntry
from kravia_sync.state.rows import (
    CASE_FIELDS,
    INSERT_JOURNAL_SQL,
    NOTE_FIELDS,
    PAYMENT_ASSIGNMENTS,
    PAYMENT_COLUMNS,
    bound_values,
    cas_sql,
    cas_write,
    decimal_or_none,
    decoded_row,
    id_chunks,
    insert_sql,
    journal_row,
    payment_values,
    write_note_row,
)

__all__ = ["PaymentTable"]


_DIFF_FIELDS = tuple(f for f in CASE_FIELDS[1:] if f not in NOTE_FIELDS)


_DIFF_UPDATE_SQL = cas_sql(_DIFF_FIELDS)


_UPSERT_PAYMENT_SQL = insert_sql("payments", PAYMENT_COLUMNS, upsert_on=("source", "payment_id"))


def _write_notes(
    connection: sqlite3.Connection, updates: Iterable[tuple[str, Mapping[str, Any]]]
) -> None:
    for aid, values in updates:
        write_note_row(connection, aid, values)


def _payment_from_row(stored: sqlite3.Row) -> PaymentState:
    row = decoded_row(stored)
    lines = tuple(
        PaymentLine(
            line["accounting_invoice_id"],
            Decimal(line["amount"]),
            decimal_or_none(line.get("sent")),
            decimal_or_none(line.get("left")),
        )
        for line in json.loads(row["lines"])
    )
    return PaymentState(
        source=row["source"],
        payment_id=row["payment_id"],
        kind=PaymentKind(row["kind"]),
        paid_on=date.fromisoformat(row["paid_on"]),
        lines=lines,
        phase=PaymentPhase(row["phase"]),
        fingerprint=row["fingerprint"],
        first_seen_at=row["first_seen_at"],
        updated_at=row["updated_at"],
        description=row["description"],
        derived=bool(row["derived"]),
        pending_attempt=row["pending_attempt"],
        pending_since=row["pending_since"],
        attempts=row["attempts"],
        next_attempt_at=row["next_attempt_at"],
        note=row["note"],
        settle_after=row["settle_after"],
    )


class PaymentTable(Database):
    """The payments and credit notes, and their journal."""

    # --- payments ---------------------------------------------------------------------------------
    def load_payments(
        self, source: str, payment_ids: Iterable[str] = (), *, unfinished: bool = False
    ) -> dict[str, PaymentState]:
        """The source's payments with these ids, and with `unfinished` all not yet final."""
        found: dict[str, PaymentState] = {}
        with self._read() as connection:
            for chunk in id_chunks(payment_ids):
                rows = connection.execute(
                    "SELECT * FROM payments WHERE source = ? "  # noqa: S608 - placeholders only
                    f"AND payment_id IN ({','.join('?' * len(chunk))})",
                    (source, *chunk),
                )
                found.update((row["payment_id"], _payment_from_row(row)) for row in rows)
            if unfinished:
                final = [phase.value for phase in FINAL_PAYMENT_PHASES]
                rows = connection.execute(
                    "SELECT * FROM payments WHERE source = ? "  # noqa: S608 - placeholders only
                    f"AND phase NOT IN ({','.join('?' * len(final))})",
                    (source, *final),
                )
                found.update((row["payment_id"], _payment_from_row(row)) for row in rows)
        return found

    def all_payments(self, limit: int = 200) -> list[PaymentState]:
        """Payments of every source, the most recently changed first."""
        with self._read() as connection:
            rows = connection.execute(
                "SELECT * FROM payments ORDER BY updated_at DESC LIMIT ?", (limit,)
            )
            return [_payment_from_row(row) for row in rows]

    def payment_counts(self) -> dict[str, int]:
        with self._read() as connection:
            rows = connection.execute("SELECT phase, count(*) FROM payments GROUP BY phase")
            return {str(phase): int(count) for phase, count in rows}

    def write_payments(
        self,
        payments: Iterable[PaymentState],
        journal: Iterable[JournalEntry] = (),
        cases: Iterable[CaseState] = (),
        case_notes: Iterable[tuple[str, Mapping[str, Any]]] = (),
    ) -> list[CaseState]:
        """One fenced transaction: upsert the payments, write the cases (compare-and-set on
        the revision each was read at), append the journal (a case whose amount drop a
        derived payment stands for is never stored without it). The cases as stored;
        `StateConflictError` (nothing written) when one changed since it was read."""
        stored_cases: list[CaseState] = []
        with self._fenced_write() as connection:
            for payment in payments:
                connection.execute(_UPSERT_PAYMENT_SQL, bound_values(payment_values(payment)))
            for case in cases:
                stored = cas_write(connection, case, _DIFF_FIELDS, _DIFF_UPDATE_SQL)
                if stored is None:
                    raise StateConflictError(
                        f"case {case.accounting_invoice_id} changed in the state store while "
                        "its source was read (an operator command?); the next pass reads it "
                        "again"
                    )
                stored_cases.append(stored)
            _write_notes(connection, case_notes)
            connection.executemany(INSERT_JOURNAL_SQL, [journal_row(entry) for entry in journal])
        return stored_cases

    def begin_payment(
        self,
        pending: PaymentState,
        intent: JournalEntry,
        case_notes: Iterable[tuple[str, Mapping[str, Any]]] = (),
    ) -> bool:
        """Commit a payment's move to `sending` with its intent, only if it is still `new`
        and not in flight (so two writers can never both send it); False if it is not."""
        values = bound_values(payment_values(pending)) | {"new": PaymentPhase.NEW.value}
        try:
            with self._fenced_write() as connection:
                result = connection.execute(
                    f"UPDATE payments SET {PAYMENT_ASSIGNMENTS} "  # noqa: S608 - our own names
                    "WHERE source = :source AND payment_id = :payment_id AND phase = :new "
                    "AND pending_attempt IS NULL",
                    values,
                )
                if result.rowcount != 1:
                    raise NotNewError  # noqa: TRY301 - leaving the block rolls back
                _write_notes(connection, case_notes)
                connection.execute(INSERT_JOURNAL_SQL, journal_row(intent))
        except NotNewError:
            return False
        return True

    def payment_journal(self, payment_id: str) -> list[dict[str, Any]]:
        with self._read() as connection:
            rows = connection.execute(
                "SELECT * FROM journal WHERE payment_id = ? ORDER BY id", (payment_id,)
            )
            return [decoded_row(row) for row in rows]

    def payments_on(
        self, accounting_invoice_ids: Iterable[str], phases: Iterable[PaymentPhase]
    ) -> dict[str, list[PaymentState]]:
        """The payments and credit notes in these `phases` with a line on these invoices, by
        invoice (one spread over several invoices is listed under each)."""
        wanted = [phase.value for phase in phases]
        found: dict[str, list[PaymentState]] = {}
        with self._read() as connection:
            for chunk in id_chunks(accounting_invoice_ids):
                sql = (
                    "SELECT DISTINCT p.* FROM payments AS p, json_each(p.lines) AS line "  # noqa: S608 - placeholders only
                    f"WHERE p.phase IN ({','.join('?' * len(wanted))}) "
                    "AND json_extract(line.value, '$.accounting_invoice_id') "
                    f"IN ({','.join('?' * len(chunk))})"
                )
                asked = set(chunk)
                for row in connection.execute(sql, (*wanted, *chunk)):
                    payment = _payment_from_row(row)
                    for aid in asked.intersection(payment.invoices):
                        found.setdefault(aid, []).append(payment)
        return found

    def clear_case_notes(
        self, clearings: Iterable[tuple[str, str, JournalEntry]], *, now: datetime
    ) -> list[str]:
        """Clear each case's note where it is still the one given ((accountingInvoiceId,
        note, journal entry)), with the entry journaled, in one fenced transaction; the
        accountingInvoiceIds cleared. A note already cleared or changed since is left as it
        is, unjournaled: clearing again changes nothing."""
        cleared: list[str] = []
        with self._fenced_write() as connection:
            for aid, note, entry in clearings:
                result = connection.execute(
                    "UPDATE cases SET attention = NULL, updated_at = :updated_at "
                    "WHERE accounting_invoice_id = :aid AND attention = :note",
                    bound_values({"updated_at": now}) | {"aid": aid, "note": note},
                )
                if result.rowcount:
                    connection.execute(INSERT_JOURNAL_SQL, journal_row(entry))
                    cleared.append(aid)
        return cleared

    def set_case_notes(self, updates: Iterable[tuple[str, Mapping[str, Any]]]) -> None:
        """Set only these columns of these cases (accountingInvoiceId → values), leaving the
        rest of each row (its phase, its attempts, its revision) as the pass's other writes
        left it. Fenced."""
        with self._fenced_write() as connection:
            _write_notes(connection, updates)
