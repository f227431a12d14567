"""Kravia's payouts to the creditor as `kravia-sync payouts` reads and books them: the journal of
bookings (an intent before each `PATCH settlements/{id}/bookkeep`, the outcome after it), and
the cases a settlement covers, found by their Kravia ids. The bookings' records
(`kravia_sync.state.bookings`) are loaded on first use, so a pass does not load them."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from typing import TYPE_CHECKING

from kravia_sync.lifecycle import CaseState
from kravia_sync.state.case_table import _case_from_row
from kravia_sync.state.database import Database
from kravia_sync.state.records import JournalKind
from kravia_sync.state.rows import CASE_COLUMNS, bound_values, id_chunks, insert_sql, time_or_none

if TYPE_CHECKING:
    from kravia_sync.state.bookings import BookingAttempt

__all__ = ["PayoutTables"]


_COLUMNS = (
    "attempt_id",
    "kind",
    "settlement_id",
    "reference",
    "booked_by",
    "at",
    "outcome",
    "http_status",
    "message",
)
_INSERT_SQL = insert_sql("settlement_bookings", _COLUMNS)


# The latest intent of each settlement, with the latest outcome journaled for it.
_LATEST_SQL = """
SELECT i.attempt_id, i.settlement_id, i.reference, i.booked_by, i.at,
       o.outcome, o.at AS outcome_at, o.http_status, o.message
FROM settlement_bookings AS i
LEFT JOIN settlement_bookings AS o ON o.id = (
    SELECT max(id) FROM settlement_bookings
    WHERE attempt_id = i.attempt_id AND kind = 'outcome'
)
WHERE i.kind = 'intent' AND i.id = (
    SELECT max(id) FROM settlement_bookings
    WHERE settlement_id = i.settlement_id AND kind = 'intent'
)
"""


def _attempt(row: sqlite3.Row) -> BookingAttempt:
    from kravia_sync.state.bookings import BookingAttempt, BookingOutcome  # noqa: PLC0415 - see above

    outcome = row["outcome"]
    at = time_or_none(row["at"])
    if at is None:  # the column is NOT NULL
        raise ValueError(f"a booking intent without a time: {row['attempt_id']}")
    return BookingAttempt(
        attempt_id=row["attempt_id"],
        settlement_id=int(row["settlement_id"]),
        reference=row["reference"],
        booked_by=row["booked_by"],
        at=at,
        outcome=None if outcome is None else BookingOutcome(outcome),
        outcome_at=time_or_none(row["outcome_at"]),
        http_status=row["http_status"],
        message=row["message"],
    )


class PayoutTables(Database):
    """The journal of settlement bookings, and the cases a settlement covers."""

    def cases_by_kravia_id(self, kravia_ids: Iterable[int]) -> dict[int, CaseState]:
        """The stored cases with these Kravia ids (those the state store does not know are
        left out: not ours)."""
        found: dict[int, CaseState] = {}
        with self._read() as connection:
            for chunk in id_chunks(str(kravia_id) for kravia_id in set(kravia_ids)):
                rows = connection.execute(
                    f"SELECT {CASE_COLUMNS} FROM cases "  # noqa: S608 - placeholders only
                    f"WHERE kravia_id IN ({','.join('?' * len(chunk))})",
                    [int(kravia_id) for kravia_id in chunk],
                )
                for row in rows:
                    case = _case_from_row(row)
                    if case.kravia_id is not None:
                        found[case.kravia_id] = case
        return found

    def last_booking(self, settlement_id: int) -> BookingAttempt | None:
        """The latest attempt to book this settlement, or None when none was made."""
        return self.last_bookings([settlement_id]).get(settlement_id)

    def last_bookings(self, settlement_ids: Iterable[int]) -> dict[int, BookingAttempt]:
        """The latest attempt to book each of these settlements, where one was made."""
        found: dict[int, BookingAttempt] = {}
        with self._read() as connection:
            for chunk in id_chunks(str(settlement_id) for settlement_id in set(settlement_ids)):
                rows = connection.execute(
                    f"{_LATEST_SQL} AND i.settlement_id IN ({','.join('?' * len(chunk))})",
                    [int(settlement_id) for settlement_id in chunk],
                )
                found.update((attempt.settlement_id, attempt) for attempt in map(_attempt, rows))
        return found

    def record_booking_intent(self, attempt: BookingAttempt, *, after: str | None) -> bool:
        """Journal that `attempt` is about to be sent, only while the settlement's latest
        attempt is still `after` (the one the decision to send was taken on; None: none).
        False, nothing written, when another booking of it began meanwhile."""
        if attempt.outcome is not None:
            raise ValueError("an intent is journaled before its outcome is known")
        with self._write() as connection:
            latest = connection.execute(
                "SELECT attempt_id FROM settlement_bookings "
                "WHERE settlement_id = ? AND kind = 'intent' ORDER BY id DESC LIMIT 1",
                (attempt.settlement_id,),
            ).fetchone()
            if (None if latest is None else latest[0]) != after:
                return False
            connection.execute(_INSERT_SQL, self._values(attempt, JournalKind.INTENT))
        return True

    def record_booking_outcome(self, attempt: BookingAttempt) -> None:
        """Journal what became of `attempt` (its `outcome`, `outcome_at`, `http_status` and
        `message`; `booked_by`: who learnt it)."""
        if attempt.outcome is None or attempt.outcome_at is None:
            raise ValueError("an outcome is journaled with what it was and when")
        with self._write() as connection:
            connection.execute(_INSERT_SQL, self._values(attempt, JournalKind.OUTCOME))

    @staticmethod
    def _values(attempt: BookingAttempt, kind: JournalKind) -> dict[str, object]:
        intent = kind is JournalKind.INTENT
        return bound_values(
            {
                "attempt_id": attempt.attempt_id,
                "kind": kind.value,
                "settlement_id": attempt.settlement_id,
                "reference": attempt.reference,
                "booked_by": attempt.booked_by,
                "at": attempt.at if intent else attempt.outcome_at,
                "outcome": None if intent or attempt.outcome is None else attempt.outcome.value,
                "http_status": attempt.http_status,
                "message": attempt.message,
            }
        )
