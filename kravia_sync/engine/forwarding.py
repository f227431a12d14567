"""Forward payments and credit notes to Kravia, each at most once, journaled before and after.

The rules are in `kravia_sync.payments` (pure); this module is the thin I/O around them: read
the cases' details (capital left, Kravia's own payouts), commit the intent, send, commit the
outcome. A lost answer is settled by reading the case's details for the payment's id, never
by sending again on a guess.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from decimal import Decimal

import structlog

from kravia_sync.engine.payment_journal import kravia_id_of, payment_journal
from kravia_sync.engine.payment_sizing import DropSizing, net_late_registers, payouts_of
from kravia_sync.engine.payment_verify import PaymentVerifier
from kravia_sync.engine.summary import MoneyOutcome, MoneyTally, StageOutcome
from kravia_sync.errors import KraviaSyncError
from kravia_sync.kravia.answers import (
    MoneyLine,
    case_standing,
)
from kravia_sync.kravia.client import KraviaClient
from kravia_sync.kravia.errors import Failure, KraviaError
from kravia_sync.lifecycle import IN_KRAVIA_PHASES, CaseState, Phase
from kravia_sync.logging import redact
from kravia_sync.payments import (
    HOLDS_BACK_DROPS,
    PaymentKind,
    PaymentLine,
    PaymentPhase,
    PaymentState,
    PaymentStep,
    clamp_lines,
    drop_waits,
    next_payment_step,
)
from kravia_sync.state.lease import LeaseKeeper
from kravia_sync.state.records import JournalEntry, JournalKind
from kravia_sync.state.store import StateStore

__all__ = ["HAS_KRAVIA_CASE", "PaymentForwarder", "tally_money", "to_retry"]

log = structlog.get_logger("kravia_sync.engine.forwarding")
# Phases in which a case with a Kravia id exists in Kravia (needs_review: a person looks at
# it, but it may be collecting all the same, so money paid must still reach it).
HAS_KRAVIA_CASE = IN_KRAVIA_PHASES | {Phase.NEEDS_REVIEW}


class AuthRefusedError(KraviaSyncError, RuntimeError):
    """Kravia refused the token: the pass stops."""


class PaymentForwarder:
    """Drive each payment of a pass as far as it goes, one at a time (payments are few)."""

    def __init__(
        self,
        store: StateStore,
        client: KraviaClient,
        *,
        clock: Callable[[], datetime],
        settle: timedelta,
        retry_in: Callable[[int], timedelta],
        run_id: int | None,
        lease: LeaseKeeper | None = None,
        max_inline_wait: float = 0.0,
        max_waits: int = 0,
        should_stop: Callable[[], bool] = lambda: False,
    ) -> None:
        self.store = store
        self.client = client
        self.lease = lease  # None: a store that holds no lease (tests of the forwarder alone)
        self.clock = clock
        self.settle = settle
        self.retry_in = retry_in
        self.run_id = run_id
        self.max_inline_wait = max_inline_wait
        self.max_waits = max_waits
        self.should_stop = should_stop  # checked before each payment and each step
        self.sizing = DropSizing(store, client, clock=clock)
        self.verifier = PaymentVerifier(store, client, clock=clock, run_id=run_id)

    async def forward(self, payments: list[PaymentState]) -> StageOutcome:
        """Drive each payment; reported ones (credit notes) before amount drops, and a drop
        whose invoice has a reported one not yet settled waits for the next pass
        (`drop_waits`)."""
        outcome = StageOutcome()
        unsettled: set[str] = set()  # invoices with a reported payment not yet settled
        for payment in sorted(payments, key=lambda p: p.derived):  # stable: read order kept
            if self.should_stop():
                break
            if drop_waits(payment, unsettled):
                outcome.counts["payments_waiting_for_credit_note"] += 1
                outcome.money.add(MoneyOutcome.DEFERRED, asked=payment.amount)
                continue
            try:
                final = await self._drive(payment, outcome)
            except KraviaError as error:  # a details read failed: try again next pass
                if error.failure.stops_pass:
                    raise AuthRefusedError(error.stop_reason("details")) from None
                outcome.counts["payments_deferred"] += 1
                outcome.money.add(MoneyOutcome.DEFERRED, asked=payment.amount)
                log.warning(
                    "payment deferred", payment_id=payment.payment_id, error=redact(str(error))
                )
                if not payment.derived:
                    unsettled.update(payment.invoices)
                continue
            if not final.derived and final.phase in HOLDS_BACK_DROPS:
                unsettled.update(final.invoices)
            outcome.counts[f"payments_{final.phase.value}"] += 1
            if to_retry(final):
                outcome.counts["payments_to_retry"] += 1
            tally_money(final, outcome.money)
            if final.phase is PaymentPhase.NEEDS_REVIEW:
                outcome.problems.append(
                    {
                        "source": final.source,
                        "record": f"payment {final.payment_id}",
                        "field": "payment",
                        "reason": final.note or final.phase.value,
                    }
                )
        return outcome

    def _cases(self, payment: PaymentState) -> dict[str, CaseState]:
        return self.store.load_cases_by_id(payment.invoices)

    async def _drive(self, payment: PaymentState, outcome: StageOutcome) -> PaymentState:
        """One step, after a short wait where the next one is due soon (a lost answer
        settling, a short back-off), as the cases do."""
        for _ in range(self.max_waits + 1):
            if self.should_stop():
                return payment
            cases = self._cases(payment)
            in_kravia = {
                aid: case.kravia_id if case.phase in HAS_KRAVIA_CASE else None
                for aid, case in cases.items()
            }
            now = self.clock()
            decision = next_payment_step(payment, in_kravia=in_kravia, now=now, settle=self.settle)
            if decision.step is PaymentStep.VERIFY:
                return await self._verify(payment, cases, outcome)
            if decision.step is PaymentStep.SEND:
                return await self._send(payment, cases, outcome)
            if decision.step is not PaymentStep.WAIT or decision.not_before is None:
                return payment
            delay = (decision.not_before - now).total_seconds()
            if delay > self.max_inline_wait:
                return payment
            await asyncio.sleep(max(delay, 0.0))
        return payment

    async def _verify(
        self, payment: PaymentState, cases: Mapping[str, CaseState], outcome: StageOutcome
    ) -> PaymentState:
        verified = await self.verifier.verify(payment, cases)
        if verified.phase is PaymentPhase.NEW:  # it did not arrive: sent again
            return await self._drive(verified, outcome)
        return verified

    async def _send(
        self, payment: PaymentState, cases: Mapping[str, CaseState], outcome: StageOutcome
    ) -> PaymentState:
        if not payment.derived:
            # A drop is limited by Kravia's capital instead (below): no clock is compared.
            payment = net_late_registers(payment, cases, now=self.clock())
        if payment.phase is PaymentPhase.NETTED:
            self.store.write_payments([payment], [])
            return payment
        standings = {}
        for aid in payment.invoices:
            kravia_id = cases[aid].kravia_id
            assert kravia_id is not None  # noqa: S101 - next_payment_step checked
            standings[aid] = case_standing(await self.client.details(kravia_id))
        now = self.clock()
        already = self.verifier.already_listed(payment, standings)
        if already is not None:
            return already
        lines = payment.lines
        case_updates: list[CaseState] = []
        notes: list[str] = []
        if payment.derived:
            derived = await self.sizing.drop_lines(payment, cases, standings, outcome.counts)
            if isinstance(derived, PaymentState):
                return derived
            lines, case_updates, notes = derived
        remaining = {aid: standing.remaining_capital for aid, standing in standings.items()}
        clamped, clamp_notes = clamp_lines(lines, remaining)
        notes += clamp_notes
        _count_clamps(payment, lines, clamped, clamp_notes, outcome)
        if not any(line.sent for line in clamped):
            phase = (
                PaymentPhase.PAYOUT
                if payment.derived and not any(line.amount for line in lines)
                else PaymentPhase.NOTHING_LEFT
            )
            final = replace(
                payment, lines=clamped, phase=phase, updated_at=now, note="; ".join(notes) or None
            )
            self.store.write_payments([final], [], case_notes=payouts_of(case_updates))
            return final
        attempt_id = uuid.uuid4().hex
        pending = replace(
            payment,
            lines=clamped,
            phase=PaymentPhase.SENDING,
            pending_attempt=attempt_id,
            pending_since=now,
            updated_at=now,
            note="; ".join(notes) or payment.note,
            settle_after=self._kravia_now() + self.settle,
        )
        return await self._transmit(payment, pending, cases, payouts_of(case_updates))

    def _kravia_now(self) -> datetime:
        """Kravia's clock now (at the latest it can be) where its answers told it, else
        ours: when a call went out, for settling it later."""
        return self.client.kravia_latest() or self.clock()

    async def _transmit(
        self,
        payment: PaymentState,
        pending: PaymentState,
        cases: Mapping[str, CaseState],
        payouts: list[tuple[str, dict[str, Decimal | None]]],
    ) -> PaymentState:
        """Send the payment as `pending` says, through the one door: a slot and a rate token,
        then the intent (only while it is still new and the lease ours), then the call."""
        attempt_id = pending.pending_attempt or ""
        operation = payment.kind.value
        amounts = ", ".join(
            f"{line.sent} on {line.accounting_invoice_id}" for line in pending.lines
        )
        intent = self._journal(pending, operation, attempt_id, JournalKind.INTENT, message=amounts)
        money = [
            MoneyLine(kravia_id=kravia_id_of(cases, line), amount=line.sent)
            for line in pending.lines
            if line.sent
        ]
        description = payment.description or f"{operation} {payment.payment_id}"
        started = time.monotonic()
        try:
            # The slot and the rate token first: the intent then means "leaving now".
            async with self.client.reserve() as reservation:
                if self.lease is not None:
                    self.lease.check()
                # A lost answer is settled no sooner than the settle time after the call
                # leaves, which is now: the wait for a place may have been long.
                pending = replace(pending, settle_after=self._kravia_now() + self.settle)
                if not self.store.begin_payment(pending, intent, payouts):
                    log.warning("payment taken by another writer", payment_id=payment.payment_id)
                    return payment
                if self.lease is not None:
                    self.lease.check()  # the commit may have waited: still ours to send?
                started = time.monotonic()
                if payment.kind is PaymentKind.CREDIT_NOTE:
                    await self.client.register_credit_note(
                        accounting_payment_id=payment.payment_id,
                        credited_on=payment.paid_on,
                        description=description,
                        lines=money,
                        reservation=reservation,
                    )
                else:
                    await self.client.register_payment(
                        accounting_payment_id=payment.payment_id,
                        paid_on=payment.paid_on,
                        description=description,
                        lines=money,
                        reservation=reservation,
                    )
        except KraviaError as error:
            after = after_failure(
                pending,
                error,
                now=self.clock(),
                settle_after=self._kravia_now() + self.settle,
                retry_in=self.retry_in,
            )
            self.store.write_payments(
                [after],
                [
                    self._journal(
                        after,
                        operation,
                        attempt_id,
                        JournalKind.OUTCOME,
                        outcome=error.failure.value,
                        status=error.status,
                        message=str(error),
                        started=started,
                    )
                ],
            )
            if error.failure.stops_pass:
                raise AuthRefusedError(error.stop_reason(operation)) from None
            return after
        sent = replace(
            pending,
            phase=PaymentPhase.SENT,
            pending_attempt=None,
            pending_since=None,
            attempts=0,
            next_attempt_at=None,
            updated_at=self.clock(),
        )
        self.store.write_payments(
            [sent],
            [
                self._journal(
                    sent,
                    operation,
                    attempt_id,
                    JournalKind.OUTCOME,
                    outcome="ok",
                    status=200,
                    started=started,
                )
            ],
        )
        return sent

    def _journal(
        self,
        payment: PaymentState,
        operation: str,
        attempt_id: str,
        kind: JournalKind,
        *,
        outcome: str | None = None,
        status: int | None = None,
        message: str | None = None,
        started: float | None = None,
    ) -> JournalEntry:
        return payment_journal(
            payment,
            operation,
            attempt_id,
            kind,
            outcome=outcome,
            status=status,
            message=message,
            started=started,
            at=self.clock(),
            run_id=self.run_id,
        )


def _count_clamps(
    payment: PaymentState,
    lines: Sequence[PaymentLine],
    clamped: Sequence[PaymentLine],
    notes: list[str],
    outcome: StageOutcome,
) -> None:
    """Count and log each line cut to the capital Kravia has left, with what was asked and
    what is sent."""
    for note in notes:
        log.warning("payment clamped", payment_id=payment.payment_id, detail=note)
        outcome.counts["payments_clamped"] += 1
    for asked, cut in zip(lines, clamped, strict=True):
        if cut.sent is not None and cut.sent != asked.amount:
            outcome.money.add(MoneyOutcome.CLAMPED, asked=asked.amount, sent=cut.sent)


def to_retry(payment: PaymentState) -> bool:
    """Whether a payment the pass leaves unsent failed to reach Kravia, and a later pass
    sends it again (one still new and never tried waits for its invoice to reach Kravia,
    as the invoice itself may wait)."""
    return payment.phase is PaymentPhase.NEW and payment.attempts > 0


def tally_money(payment: PaymentState, money: MoneyTally) -> None:
    """Count a payment's money by where the pass left it: sent (by kind), not sent as
    Kravia had nothing left, or left for a later pass to send again (`to_retry`)."""
    asked = payment.amount
    if payment.phase is PaymentPhase.SENT:
        sent = sum((line.sent or Decimal(0) for line in payment.lines), Decimal(0))
        kind = (
            MoneyOutcome.CREDIT_NOTES_SENT
            if payment.kind is PaymentKind.CREDIT_NOTE
            else MoneyOutcome.PAYMENTS_SENT
        )
        money.add(kind, asked=asked, sent=sent)
    elif payment.phase is PaymentPhase.NOTHING_LEFT:
        money.add(MoneyOutcome.NOTHING_LEFT, asked=asked)
    elif to_retry(payment):
        money.add(MoneyOutcome.DEFERRED, asked=asked)


def after_failure(
    pending: PaymentState,
    error: KraviaError,
    *,
    now: datetime,
    settle_after: datetime,
    retry_in: Callable[[int], timedelta],
) -> PaymentState:
    """A payment whose call failed: still sending (its answer lost: settled after
    `settle_after`, Kravia's clock), parked for a person (refused), or new again after a wait."""
    message = redact(str(error))
    if error.failure is Failure.AMBIGUOUS:  # lost now: it may still land for a while
        return replace(pending, updated_at=now, note=message, settle_after=settle_after)
    cleared = replace(
        pending, pending_attempt=None, pending_since=None, settle_after=None, updated_at=now
    )
    if error.failure is Failure.TERMINAL:
        return replace(
            cleared, phase=PaymentPhase.NEEDS_REVIEW, note=f"Kravia refused it: {message}"
        )
    wait = (
        timedelta(seconds=error.retry_after)
        if error.retry_after is not None
        else retry_in(pending.attempts)
    )
    return replace(
        cleared,
        phase=PaymentPhase.NEW,
        attempts=pending.attempts + 1,
        next_attempt_at=now + wait,
        note=message,
    )
