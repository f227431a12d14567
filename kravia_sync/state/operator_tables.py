"""What a person decides: holds and approvals, the settling of what the engine parked, and a
source's id prefix."""

from __future__ import annotations

from datetime import datetime

from kravia_sync.lifecycle import CaseState, Phase
from kravia_sync.payments import (
    PaymentState,
)
from kravia_sync.state.database import Database
from kravia_sync.state.records import JournalEntry
from kravia_sync.state.rows import (
    DRIVER_FIELDS,
    DRIVER_UPDATE_SQL,
    INSERT_JOURNAL_SQL,
    PAYMENT_ASSIGNMENTS,
    bound_values,
    cas_write,
    insert_sql,
    journal_row,
    payment_values,
)
from kravia_sync.state.stored import utc_text

__all__ = ["OperatorTables"]


_PREFIX_KEY = "id_prefix:"


class OperatorTables(Database):
    """Holds, approvals, what a person settled, and each source's id prefix."""

    # --- holds ------------------------------------------------------------------------------------
    def hold(self, invoice: str, *, reason: str, by: str, now: datetime) -> None:
        with self._write() as connection:
            connection.execute(
                insert_sql(
                    "holds", ("invoice", "reason", "held_at", "held_by"), upsert_on=("invoice",)
                ),
                bound_values({"invoice": invoice, "reason": reason, "held_at": now, "held_by": by}),
            )

    def release(self, invoice: str) -> bool:
        """Remove a hold; the cases it flagged lose the flag (a pause sent is undone in
        Kravia by a person)."""
        held = (
            "(accounting_invoice_id = :invoice OR invoice_number = :invoice OR "
            "accounting_invoice_id IN (SELECT a.accounting_invoice_id FROM invoice_aliases "
            "AS a WHERE a.alias_id = :invoice))"
        )
        with self._write() as connection:
            result = connection.execute(
                "DELETE FROM holds WHERE invoice = :invoice", {"invoice": invoice}
            )
            connection.execute(
                f"UPDATE cases SET hold_action_at = NULL WHERE {held}",  # noqa: S608 - our SQL
                {"invoice": invoice},
            )
            connection.execute(
                f"UPDATE cases SET attention = NULL WHERE {held} "  # noqa: S608 - our SQL
                "AND (attention LIKE 'on hold (%' OR attention LIKE 'the hold action %')",
                {"invoice": invoice},
            )
            return bool(result.rowcount)

    def approve(self, invoices: list[str] | None, *, now: datetime) -> tuple[list[str], list[str]]:
        """Mark cases awaiting approval (registered, not started) as approved to start: these
        invoices (number or accountingInvoiceId), or with None every one. The ids approved,
        and a line for each invoice that could not be."""
        waiting = (Phase.REGISTERED.value, Phase.DOCUMENTED.value)
        approved: list[str] = []
        refused: list[str] = []
        with self._write() as connection:
            if invoices is None:
                targets = [
                    aid
                    for (aid,) in connection.execute(
                        "SELECT accounting_invoice_id FROM cases WHERE phase IN (?, ?) "
                        "AND approved_at IS NULL",
                        waiting,
                    )
                ]
            else:
                targets = []
                for invoice in invoices:
                    found = connection.execute(
                        "SELECT accounting_invoice_id, phase FROM cases "
                        "WHERE accounting_invoice_id = ? OR invoice_number = ? OR "
                        "accounting_invoice_id IN (SELECT a.accounting_invoice_id FROM "
                        "invoice_aliases AS a WHERE a.alias_id = ?)",
                        (invoice, invoice, invoice),
                    ).fetchall()
                    exact = [(aid, phase) for aid, phase in found if aid == invoice]
                    found = exact or found
                    if not found:
                        refused.append(f"{invoice}: no such case")
                    if len(found) > 1:
                        ids = ", ".join(aid for aid, _ in found)
                        refused.append(
                            f"{invoice}: matches several cases ({ids}): name the "
                            "accountingInvoiceId"
                        )
                        continue
                    for aid, phase in found:
                        if phase in waiting:
                            targets.append(aid)
                        else:
                            refused.append(f"{invoice}: {aid} is {phase}, not awaiting approval")
            for aid in targets:
                connection.execute(
                    "UPDATE cases SET approved_at = ? WHERE accounting_invoice_id = ?",
                    (utc_text(now), aid),
                )
                approved.append(aid)
        return approved, refused

    # --- operators settling what the engine parked ------------------------------------------------
    def resolve_case(
        self, case: CaseState, resolved: CaseState, entry: JournalEntry
    ) -> CaseState | None:
        """An operator's decision on a parked case: written only if the case is still at the
        revision the operator was shown (else None: it moved meanwhile), journaled with their
        reason. Not fenced: operators act beside a running engine, whose next write of the
        case then finds the newer revision and leaves it."""
        if resolved.revision != case.revision:
            raise ValueError("a resolution is written over the revision it was decided on")
        with self._batch() as cursor:
            stored = cas_write(cursor, resolved, DRIVER_FIELDS, DRIVER_UPDATE_SQL)
            if stored is not None:
                cursor.execute(INSERT_JOURNAL_SQL, journal_row(entry))
        return stored

    def resolve_payment(
        self, payment: PaymentState, resolved: PaymentState, entry: JournalEntry
    ) -> bool:
        """An operator's decision on a payment that needs review: written only while it is
        still as they were shown it, journaled with their reason."""
        values = bound_values(payment_values(resolved)) | {
            "source": payment.source,  # the row as shown (its key is not among the updates)
            "payment_id": payment.payment_id,
            "shown_phase": payment.phase.value,
            "shown_updated_at": utc_text(payment.updated_at),
        }
        with self._write() as connection:
            result = connection.execute(
                f"UPDATE payments SET {PAYMENT_ASSIGNMENTS} "  # noqa: S608 - our own names
                "WHERE source = :source AND payment_id = :payment_id "
                "AND phase = :shown_phase AND updated_at = :shown_updated_at",
                values,
            )
            if result.rowcount != 1:
                return False
            connection.execute(INSERT_JOURNAL_SQL, journal_row(entry))
        return True

    # --- a source's id prefix ---------------------------------------------------------------------
    def source_prefix(self, source: str) -> str | None:
        """The id_prefix the source's cases were stored under, where known."""
        return self.meta(f"{_PREFIX_KEY}{source}")

    def cases_outside_prefix(self, source: str, prefix: str) -> int:
        """How many of the source's cases have an accountingInvoiceId not under `prefix`."""
        if not prefix:
            return 0  # every id starts with ""
        with self._read() as connection:
            (count,) = connection.execute(
                "SELECT count(*) FROM cases WHERE source = ? "
                "AND substr(accounting_invoice_id, 1, ?) != ?",
                (source, len(prefix), prefix),
            ).fetchone()
        return int(count)

    def source_case_count(self, source: str) -> int:
        with self._read() as connection:
            (count,) = connection.execute(
                "SELECT count(*) FROM cases WHERE source = ?", (source,)
            ).fetchone()
        return int(count)
