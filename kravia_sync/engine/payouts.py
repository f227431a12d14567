"""Kravia's payouts to the creditor, for a person: which are not booked yet and which invoices
each covers (`unbooked_payouts`), and booking one at Kravia exactly once (`book_payout`,
`kravia-sync payouts book`).

Whether to send the bookkeep call is a pure decision (`decide_booking`) on what Kravia lists
and what the journal of bookings says. The driver journals the intent before the call and the
outcome after it. A lost answer is settled by reading the settlement back, never by sending
again blindly: Kravia does not document that booking twice is harmless.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import date, datetime
from decimal import Decimal
from enum import StrEnum

from kravia_sync.kravia.answers import Settlement
from kravia_sync.kravia.client import KraviaClient
from kravia_sync.kravia.errors import Failure, KraviaError
from kravia_sync.lifecycle import CaseState
from kravia_sync.state.bookings import BookingAttempt, BookingOutcome
from kravia_sync.state.store import StateStore
from kravia_sync.state.stored import utc_now

__all__ = [
    "BookingDecision",
    "BookingReport",
    "BookingRequest",
    "BookingResult",
    "BookingStep",
    "CoveredInvoice",
    "Payout",
    "book_payout",
    "covered_invoices",
    "decide_booking",
    "read_back_outcome",
    "unbooked_payouts",
]


# --- what a settlement covers -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CoveredInvoice:
    """One line of a settlement: an amount paid out on one Kravia case, and the source
    invoice it is, when the state store knows the case (else it is not ours)."""

    kravia_id: int
    amount: Decimal
    accounting_invoice_id: str | None = None
    invoice_number: str | None = None
    source: str | None = None

    @property
    def ours(self) -> bool:
        return self.accounting_invoice_id is not None


@dataclass(frozen=True, slots=True)
class Payout:
    """A settlement Kravia lists as not yet booked, with what it covers and our latest attempt
    to book it (None: none was made)."""

    id: int
    settled_on: date | None
    amount: Decimal
    invoices: list[CoveredInvoice]
    booking: BookingAttempt | None


def covered_invoices(
    settlement: Settlement, cases: Mapping[int, CaseState]
) -> list[CoveredInvoice]:
    """The settlement's lines, each matched to the stored case with its Kravia id."""
    covered = []
    for line in settlement.lines:
        case = cases.get(line.kravia_id)
        if case is None:
            covered.append(CoveredInvoice(line.kravia_id, line.amount))
        else:
            covered.append(
                CoveredInvoice(
                    line.kravia_id,
                    line.amount,
                    accounting_invoice_id=case.accounting_invoice_id,
                    invoice_number=case.invoice_number,
                    source=case.source,
                )
            )
    return covered


async def unbooked_payouts(store: StateStore, client: KraviaClient) -> list[Payout]:
    """Every settlement Kravia lists as not yet booked (`GET settlements?ExcludeClosed=true`),
    with the invoices it covers and our latest attempt to book it. KraviaError when Kravia
    cannot be read (a list we cannot read in full is never shown as a shorter one)."""
    settlements = [s for s in await client.settlements() if s.booked is not True]
    cases = store.cases_by_kravia_id(line.kravia_id for s in settlements for line in s.lines)
    bookings = store.last_bookings(s.id for s in settlements)
    return [
        Payout(
            id=settlement.id,
            settled_on=settlement.settled_on,
            amount=settlement.amount,
            invoices=covered_invoices(settlement, cases),
            booking=bookings.get(settlement.id),
        )
        for settlement in settlements
    ]


# --- whether to send the bookkeep call (pure) -------------------------------------------------


class BookingStep(StrEnum):
    """What to do about a request to book a settlement."""

    SEND = "send"  # PATCH settlements/{id}/bookkeep
    CONFIRM = "confirm"  # our earlier attempt reached Kravia: journal it booked, send nothing
    ALREADY_BOOKED = "already_booked"  # booked before, not by an attempt left open: refuse
    NO_SUCH = "no_such"  # Kravia lists no such settlement


@dataclass(frozen=True, slots=True)
class BookingDecision:
    """The step, and the outcome to journal first for our latest attempt when it was left
    open (its answer lost) and Kravia's list now says what became of it."""

    step: BookingStep
    settles: BookingOutcome | None = None
    why: str | None = None


def decide_booking(settlement: Settlement | None, last: BookingAttempt | None) -> BookingDecision:
    """Book the settlement as Kravia lists it (None: not listed), given our latest attempt to
    book it. An attempt whose answer was lost is judged by the list: booked (under its
    reference, or one Kravia does not tell) means it reached Kravia; unbooked means it did
    not. Where Kravia does not say whether it is booked, the call is sent (and Kravia refuses
    it if it was booked under another reference)."""
    if settlement is None:
        return BookingDecision(BookingStep.NO_SUCH)
    open_attempt = last if last is not None and last.unsettled else None
    if settlement.booked is True:
        if open_attempt is None:
            return BookingDecision(BookingStep.ALREADY_BOOKED)
        if settlement.reference in {None, open_attempt.reference}:
            return BookingDecision(
                BookingStep.CONFIRM,
                settles=BookingOutcome.BOOKED,
                why="Kravia lists the settlement booked: the call reached it",
            )
        return BookingDecision(
            BookingStep.ALREADY_BOOKED,
            settles=BookingOutcome.NOT_BOOKED,
            why=f"Kravia lists the settlement booked as {settlement.reference}",
        )
    if open_attempt is not None and settlement.booked is False:
        return BookingDecision(
            BookingStep.SEND,
            settles=BookingOutcome.NOT_BOOKED,
            why="Kravia lists the settlement unbooked after the call",
        )
    return BookingDecision(BookingStep.SEND)


# --- booking one (the driver) -----------------------------------------------------------------


class BookingResult(StrEnum):
    """What `book_payout` came to; only BOOKED is a success."""

    BOOKED = "booked"
    ALREADY_BOOKED = "already_booked"
    NO_SUCH_SETTLEMENT = "no_such_settlement"
    REFUSED = "refused"  # Kravia refused the call
    NOT_BOOKED = "not_booked"  # the call failed and Kravia lists it unbooked: try again later
    UNKNOWN = "unknown"  # the answer was lost and Kravia could not be read back: run again
    BUSY = "busy"  # another booking of the same settlement began meanwhile


@dataclass(frozen=True, slots=True)
class BookingRequest:
    settlement_id: int
    reference: str  # sent as internalAccountingId: the voucher in the creditor's books
    by: str  # who asks (the OS user, or --by)


@dataclass(frozen=True, slots=True)
class BookingReport:
    """What became of a request: the result, a sentence for the person, the attempt it is
    about (this run's, the earlier one it confirmed, or the earlier booking), and whether
    this run sent the bookkeep call."""

    result: BookingResult
    settlement_id: int
    message: str
    attempt: BookingAttempt | None = None
    sent: bool = False

    @property
    def ok(self) -> bool:
        return self.result is BookingResult.BOOKED


# Answers that mean Kravia did not book it (and says why): journaled as refused, not read back.
_REFUSALS = frozenset({Failure.TERMINAL, Failure.AUTH, Failure.CONFIG})


def _attempt_words(attempt: BookingAttempt) -> str:
    return f"as {attempt.reference} by {attempt.booked_by} at {attempt.at:%Y-%m-%d %H:%M:%S %Z}"


async def _listed(client: KraviaClient, settlement_id: int) -> Settlement | None:
    """The settlement as Kravia lists it, booked or not; None when it lists no such one."""
    every_one = await client.settlements(exclude_closed=False)
    return next((item for item in every_one if item.id == settlement_id), None)


async def book_payout(
    store: StateStore,
    client: KraviaClient,
    request: BookingRequest,
    *,
    clock: Callable[[], datetime] = utc_now,
) -> BookingReport:
    """Mark one settlement booked at Kravia, exactly once. Kravia's list is read first (a
    KraviaError when it cannot be: nothing is journaled or sent then)."""
    settlement = await _listed(client, request.settlement_id)
    last = store.last_booking(request.settlement_id)
    decision = decide_booking(settlement, last)
    if decision.settles is not None and last is not None:
        last = _journal_outcome(
            store, last, decision.settles, clock(), by=request.by, message=decision.why
        )
    if settlement is None:
        return BookingReport(
            BookingResult.NO_SUCH_SETTLEMENT,
            request.settlement_id,
            f"Kravia lists no settlement {request.settlement_id}",
        )
    if decision.step is BookingStep.SEND:
        return await _send(store, client, request, last, clock)
    if decision.step is BookingStep.CONFIRM and last is not None:
        return _confirmed(request, last)
    return _already_booked(request, settlement, last)


def _confirmed(request: BookingRequest, attempt: BookingAttempt) -> BookingReport:
    """Our earlier attempt, whose answer was lost, turned out to have booked it."""
    earlier = f"the earlier attempt {_attempt_words(attempt)} reached Kravia; nothing sent again"
    if attempt.reference == request.reference:
        return BookingReport(
            BookingResult.BOOKED,
            request.settlement_id,
            f"settlement {request.settlement_id} is booked: {earlier}",
            attempt,
        )
    return BookingReport(
        BookingResult.ALREADY_BOOKED,
        request.settlement_id,
        f"settlement {request.settlement_id} is already booked: {earlier} "
        f"(not booked again as {request.reference})",
        attempt,
    )


def _already_booked(
    request: BookingRequest, settlement: Settlement, last: BookingAttempt | None
) -> BookingReport:
    ours = last if last is not None and last.outcome is BookingOutcome.BOOKED else None
    if ours is not None and settlement.reference in {None, ours.reference}:
        how = f" {_attempt_words(ours)}"
    elif settlement.reference is not None:
        how = f" as {settlement.reference} (not from this state store)"
    else:
        how = " at Kravia (not from this state store)"
    return BookingReport(
        BookingResult.ALREADY_BOOKED,
        request.settlement_id,
        f"settlement {request.settlement_id} is already booked{how}; nothing sent",
        ours,
    )


async def _send(
    store: StateStore,
    client: KraviaClient,
    request: BookingRequest,
    last: BookingAttempt | None,
    clock: Callable[[], datetime],
) -> BookingReport:
    """Journal the intent, send the call, journal what came of it."""
    attempt = BookingAttempt(
        attempt_id=uuid.uuid4().hex,
        settlement_id=request.settlement_id,
        reference=request.reference,
        booked_by=request.by,
        at=clock(),
    )
    if not store.record_booking_intent(attempt, after=None if last is None else last.attempt_id):
        return BookingReport(
            BookingResult.BUSY,
            request.settlement_id,
            f"another booking of settlement {request.settlement_id} began meanwhile: see "
            "`kravia-sync payouts`, then try again if it is still needed",
        )
    try:
        await client.bookkeep_settlement(
            request.settlement_id, internal_accounting_id=request.reference
        )
    except KraviaError as exc:
        if exc.failure in _REFUSALS:
            done = _journal_outcome(
                store,
                attempt,
                BookingOutcome.REFUSED,
                clock(),
                by=request.by,
                http_status=exc.status,
                message=str(exc),
            )
            return _report(BookingResult.REFUSED, done, f"Kravia refused to book it: {exc}")
        return await _read_back(store, client, attempt, exc, clock)
    done = _journal_outcome(store, attempt, BookingOutcome.BOOKED, clock(), by=request.by)
    return _report(BookingResult.BOOKED, done, f"settlement {request.settlement_id} booked")


def read_back_outcome(settlement: Settlement | None, attempt: BookingAttempt) -> BookingOutcome:
    """What became of a bookkeep call that failed without a refusal, as Kravia's list read
    after it shows: booked under its reference (or one Kravia does not tell) is BOOKED;
    unbooked, or booked under another reference, is NOT_BOOKED; anything else is UNKNOWN."""
    if settlement is None or settlement.booked is None:
        return BookingOutcome.UNKNOWN
    if settlement.booked and settlement.reference in {None, attempt.reference}:
        return BookingOutcome.BOOKED
    return BookingOutcome.NOT_BOOKED


async def _read_back(
    store: StateStore,
    client: KraviaClient,
    attempt: BookingAttempt,
    lost: KraviaError,
    clock: Callable[[], datetime],
) -> BookingReport:
    """The call failed without a refusal (its answer lost, Kravia busy or away): Kravia's
    list says whether it booked the settlement."""
    try:
        settlement = await _listed(client, attempt.settlement_id)
    except KraviaError as again:
        settlement = None
        note = f"{lost}; reading the settlement back failed too: {again}"
    else:
        note = f"{lost}; read back"
    outcome = read_back_outcome(settlement, attempt)
    done = _journal_outcome(
        store,
        attempt,
        outcome,
        clock(),
        by=attempt.booked_by,
        http_status=lost.status,
        message=note,
    )
    if outcome is BookingOutcome.BOOKED:
        message = (
            f"settlement {attempt.settlement_id} booked (the answer was lost; Kravia lists it "
            "booked)"
        )
        return _report(BookingResult.BOOKED, done, message)
    if outcome is BookingOutcome.NOT_BOOKED:
        elsewhere = (
            f"; Kravia lists it booked as {settlement.reference}"
            if settlement is not None and settlement.booked
            else ""
        )
        return _report(
            BookingResult.NOT_BOOKED, done, f"Kravia did not book it ({lost}){elsewhere}"
        )
    return _report(
        BookingResult.UNKNOWN,
        done,
        f"whether Kravia booked it is unknown ({note}): run the same command again (it reads "
        "the settlement before it sends anything)",
    )


def _journal_outcome(
    store: StateStore,
    attempt: BookingAttempt,
    outcome: BookingOutcome,
    at: datetime,
    *,
    by: str,
    http_status: int | None = None,
    message: str | None = None,
) -> BookingAttempt:
    """Journal what became of `attempt` (`by`: who learnt it); the attempt with it."""
    done = replace(
        attempt, outcome=outcome, outcome_at=at, http_status=http_status, message=message
    )
    store.record_booking_outcome(replace(done, booked_by=by))
    return done


def _report(result: BookingResult, attempt: BookingAttempt, message: str) -> BookingReport:
    return BookingReport(result, attempt.settlement_id, message, attempt, sent=True)
