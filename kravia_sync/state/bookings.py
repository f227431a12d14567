"""The journal of settlement bookings as the code works with it: each attempt to book one of
Kravia's payouts (`kravia-sync payouts book`) and what became of it. Loaded only by what books
or lists payouts, not on the way through a pass."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

__all__ = ["BookingAttempt", "BookingOutcome"]


class BookingOutcome(StrEnum):
    """What became of one attempt to book a settlement at Kravia."""

    BOOKED = "booked"  # Kravia answered 2xx, or listed the settlement booked when read back
    REFUSED = "refused"  # Kravia refused the call (4xx): not booked
    NOT_BOOKED = "not_booked"  # the call failed; Kravia lists the settlement unbooked after it
    UNKNOWN = "unknown"  # the answer was lost and the settlement could not be read back


@dataclass(frozen=True, slots=True)
class BookingAttempt:
    """One attempt to book a settlement: its intent, and the latest outcome journaled for it
    (None: the process stopped between the call and its outcome)."""

    attempt_id: str
    settlement_id: int
    reference: str
    booked_by: str
    at: datetime  # when the intent was committed (just before the call left)
    outcome: BookingOutcome | None = None
    outcome_at: datetime | None = None
    http_status: int | None = None
    message: str | None = None

    @property
    def unsettled(self) -> bool:
        """Whether the call may have reached Kravia without our knowing what it did."""
        return self.outcome in {None, BookingOutcome.UNKNOWN}
