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
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from decimal import Decimal

import structlog

from kravia_sync.errors import KraviaSyncError
from kravia_sync.kravia.answers import (
    CaseStanding,
    MoneyLine,
    Settlement,
    case_standing,
    payment_recorded,
)
from kravia_sync.kravia.answers import PaymentKind as RecordedKind
from kravia_sync.kravia.client import KraviaClient
from kravia_sync.kravia.errors import Failure, KraviaError
from kravia_sync.lifecycle import IN_KRAVIA_PHASES, CaseState, Phase
from kravia_sync.logging import redact
from kravia_sync.payments import (
    LineEvidence,
    PaymentKind,
    PaymentLine,
    PaymentPhase,
    PaymentState,
    PaymentStep,
    clamp_lines,
    explain_by_payouts,
    limit_to_owed,
    next_payment_step,
    payment_arrived,
)
from kravia_sync.state.lease import LeaseKeeper
from kravia_sync.state.records import JournalEntry, JournalKind
from kravia_sync.state.store import StateStore

__all__ = ["HAS_KRAVIA_CASE", "PaymentForwarder", "PaymentOutcome"]

log = structlog.get_logger("kravia_sync.engine.forwarding")
# Phases in which a case with a Kravia id exists in Kravia (needs_review: a person looks at
# it, but it may be collecting all the same, so money paid must still reach it).
HAS_KRAVIA_CASE = IN_KRAVIA_PHASES | {Phase.NEEDS_REVIEW}


class AuthRefusedError(KraviaSyncError, RuntimeError):
    """Kravia refused the token: the pass stops."""


@dataclass(slots=True)
class PaymentOutcome:
    counts: Counter[str] = field(default_factory=Counter)
    problems: list[dict[str, str]] = field(default_factory=list)


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
        self._settlements: list[Settlement] | None = None  # read once, when first needed
        self.should_stop = should_stop  # checked before each payment and each step

    async def forward(self, payments: list[PaymentState]) -> PaymentOutcome:
        outcome = PaymentOutcome()
        for payment in payments:
            if self.should_stop():
                break
            try:
                final = await self._drive(payment, outcome)
            except KraviaError as error:  # a details read failed: try again next pass
                if error.failure.stops_pass:
                    raise AuthRefusedError(error.stop_reason("details")) from None
                outcome.counts["payments_deferred"] += 1
                log.warning(
                    "payment deferred", payment_id=payment.payment_id, error=redact(str(error))
                )
                continue
            outcome.counts[f"payments_{final.phase.value}"] += 1
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

    async def _drive(self, payment: PaymentState, outcome: PaymentOutcome) -> PaymentState:
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

    async def _send(
        self, payment: PaymentState, cases: Mapping[str, CaseState], outcome: PaymentOutcome
    ) -> PaymentState:
        if not payment.derived:
            # A drop is limited by Kravia's capital instead (below): no clock is compared.
            payment = self._net_late_registers(payment, cases)
        if payment.phase is PaymentPhase.NETTED:
            self.store.write_payments([payment], [])
            return payment
        standings = {}
        for aid in payment.invoices:
            kravia_id = cases[aid].kravia_id
            assert kravia_id is not None  # noqa: S101 - next_payment_step checked
            standings[aid] = case_standing(await self.client.details(kravia_id))
        now = self.clock()
        already = self._already_in_kravia(payment, standings)
        if already is not None:
            return already
        lines = payment.lines
        case_updates: list[CaseState] = []
        notes: list[str] = []
        if payment.derived:
            derived = await self._drop_lines(payment, cases, standings, outcome)
            if isinstance(derived, PaymentState):
                return derived
            lines, case_updates, notes = derived
        remaining = {aid: standing.remaining_capital for aid, standing in standings.items()}
        clamped, clamp_notes = clamp_lines(lines, remaining)
        notes += clamp_notes
        for note in clamp_notes:
            log.warning("payment clamped", payment_id=payment.payment_id, detail=note)
            outcome.counts["payments_clamped"] += 1
        if not any(line.sent for line in clamped):
            phase = (
                PaymentPhase.PAYOUT
                if payment.derived and not any(line.amount for line in lines)
                else PaymentPhase.NOTHING_LEFT
            )
            final = replace(
                payment, lines=clamped, phase=phase, updated_at=now, note="; ".join(notes) or None
            )
            self.store.write_payments([final], [], case_notes=_payouts(case_updates))
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
        return await self._transmit(payment, pending, cases, _payouts(case_updates))

    async def _drop_lines(
        self,
        payment: PaymentState,
        cases: Mapping[str, CaseState],
        standings: Mapping[str, CaseStanding],
        outcome: PaymentOutcome,
    ) -> tuple[tuple[PaymentLine, ...], list[CaseState], list[str]] | PaymentState:
        """What of an amount drop is still to be sent: Kravia's own payouts taken out, each
        line limited to what the source says is owed; the payment as written when it is not
        sent (parked or netted)."""
        unknown = _unknown_money(standings)
        if unknown is not None:
            # Money of a type we cannot read could be Kravia's own payout: never sent
            # back on a guess.
            review = replace(
                payment, phase=PaymentPhase.NEEDS_REVIEW, updated_at=self.clock(), note=unknown
            )
            self.store.write_payments([review], [])
            return review
        lines, case_updates, notes = await self._explain(payment, cases, standings)
        remaining = {aid: standing.remaining_capital for aid, standing in standings.items()}
        limited = self._limited_to_owed(payment, lines, cases, remaining, outcome)
        if isinstance(limited, PaymentState):
            return limited
        lines, owed_notes = limited
        if owed_notes and not any(line.amount for line in lines):
            netted = replace(
                payment,
                phase=PaymentPhase.NETTED,
                updated_at=self.clock(),
                note="; ".join(notes + owed_notes),
            )
            self.store.write_payments([netted], [], case_notes=_payouts(case_updates))
            return netted  # counted by `forward`, as every payment's final phase
        return lines, case_updates, notes + owed_notes

    def _limited_to_owed(
        self,
        payment: PaymentState,
        lines: tuple[PaymentLine, ...],
        cases: Mapping[str, CaseState],
        remaining: Mapping[str, Decimal | None],
        outcome: PaymentOutcome,
    ) -> tuple[tuple[PaymentLine, ...], list[str]] | PaymentState:
        """A drop's lines limited so no case's capital falls below what the source says is
        owed (`limit_to_owed`), with a note per line limited; the payment as written when a
        case's capital cannot be read (a person looks: a drop sent on a guess could be money
        paid twice)."""
        now = self.clock()
        unread = [
            line.accounting_invoice_id
            for line in lines
            if remaining.get(line.accounting_invoice_id) is None
        ]
        if unread:
            review = replace(
                payment,
                phase=PaymentPhase.NEEDS_REVIEW,
                updated_at=now,
                note=(
                    f"Kravia's case details do not say the capital left on {', '.join(unread)}, "
                    "so how much of the drop is still to be paid cannot be told: check the case "
                    f"in Kravia, then kravia-sync resolve --payment {payment.payment_id}"
                ),
            )
            self.store.write_payments([review], [])
            return review
        owed = {aid: cases[aid].amount for aid in payment.invoices}
        limited, notes = limit_to_owed(lines, remaining, owed)
        for note in notes:
            log.warning(
                "payment limited to what was paid", payment_id=payment.payment_id, detail=note
            )
            outcome.counts["payments_limited"] += 1
        return limited, notes

    def _already_in_kravia(
        self, payment: PaymentState, standings: Mapping[str, CaseStanding]
    ) -> PaymentState | None:
        """A payment Kravia already lists (our record of sending it was lost: a state store
        restored from an older copy) is marked sent, never sent again."""
        kind = RecordedKind.CREDIT_NOTE if payment.kind is PaymentKind.CREDIT_NOTE else None
        kind = kind or RecordedKind.PAYMENT
        listed = [
            aid
            for aid, standing in standings.items()
            if payment_recorded(standing, payment.payment_id, kind=kind) is True
        ]
        if not listed:
            return None
        sent = replace(
            payment,
            phase=PaymentPhase.SENT,
            updated_at=self.clock(),
            note=(
                f"Kravia already lists {payment.payment_id} on {', '.join(listed)}: not sent "
                "again (the record of sending it was not in the state store)"
            ),
        )
        log.warning("payment already in Kravia", payment_id=payment.payment_id)
        self.store.write_payments([sent], [])
        return sent

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
            MoneyLine(kravia_id=_kravia_id(cases, line), amount=line.sent)
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
            after = self._after_failure(pending, error)
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

    async def _explain(
        self,
        payment: PaymentState,
        cases: Mapping[str, CaseState],
        standings: Mapping[str, CaseStanding],
    ) -> tuple[tuple[PaymentLine, ...], list[CaseState], list[str]]:
        """The part of a derived payment (an amount drop) that Kravia's own payouts do not
        explain; the cases with the payouts now accounted for; notes. Kravia's payouts on a
        case are those its details list as collected; where the details list no payments,
        those of `GET settlements` (booked or not). Neither readable: the call fails and the
        payment waits, since a payout we cannot see could be echoed back."""
        lines: list[PaymentLine] = []
        updates: list[CaseState] = []
        notes: list[str] = []
        for line in payment.lines:
            case = cases[line.accounting_invoice_id]
            standing = standings[line.accounting_invoice_id]
            if standing.payments is not None:
                collected = sum(
                    (p.amount for p in standing.payments if p.kind is RecordedKind.COLLECTED),
                    Decimal(0),
                )
            else:
                collected = await self._settled(case.kravia_id)
            explained, accounted = explain_by_payouts(
                line.amount, collected=collected, accounted=case.payouts_accounted or Decimal(0)
            )
            if explained:
                notes.append(
                    f"{explained} of the drop on {line.accounting_invoice_id} is Kravia's own "
                    "payout: not sent back"
                )
                updates.append(replace(case, payouts_accounted=accounted))
            lines.append(replace(line, amount=line.amount - explained))
        return tuple(lines), updates, notes

    def _net_late_registers(
        self, payment: PaymentState, cases: Mapping[str, CaseState]
    ) -> PaymentState:
        """A case whose register's answer was lost when the payment was first seen may have
        been registered again since, with the source's amount of then, which already left
        the payment out: such lines are netted, not sent."""
        late = [
            line
            for line in payment.lines
            if (registered := cases[line.accounting_invoice_id].registered_at) is not None
            and payment.first_seen_at <= registered
        ]
        if not late:
            return payment
        netted = ", ".join(f"{line.amount} on {line.accounting_invoice_id}" for line in late)
        note = (
            f"netted {netted}: the register that created the case was sent after this was "
            "first seen, with an amount that already left it out"
        )
        kept = tuple(line for line in payment.lines if line not in late)
        if not kept:
            return replace(payment, phase=PaymentPhase.NETTED, note=note, updated_at=self.clock())
        joined = f"{payment.note}; {note}" if payment.note else note
        return replace(payment, lines=kept, note=joined, updated_at=self.clock())

    async def _settled(self, kravia_id: int | None) -> Decimal:
        """What Kravia's settlements say it paid out on one case."""
        if self._settlements is None:
            self._settlements = await self.client.settlements(exclude_closed=False)
        return sum(
            (
                line.amount
                for settlement in self._settlements
                for line in settlement.lines
                if line.kravia_id == kravia_id
            ),
            Decimal(0),
        )

    async def _verify(
        self, payment: PaymentState, cases: Mapping[str, CaseState], outcome: PaymentOutcome
    ) -> PaymentState:
        """After a lost answer: did the payment reach the cases it was sent to (the lines that
        carried an amount)? See `payment_arrived`: never a second payment on a guess. An
        amount drop that Kravia does not list where it lists the case's payments, though the
        capital moved, is sent again: limited to what Kravia's capital holds above what the
        source says is owed, a drop that did arrive sends nothing."""
        attempt_id = uuid.uuid4().hex
        started = time.monotonic()
        kind = (
            RecordedKind.CREDIT_NOTE
            if payment.kind is PaymentKind.CREDIT_NOTE
            else RecordedKind.PAYMENT
        )
        evidence: list[LineEvidence] = []
        # Whether every case it was sent to lists payments of ours by their ids (so Kravia
        # does fill the list in), and this one on none of them.
        listed_elsewhere = True
        for line in payment.lines:
            if line.sent is not None and line.sent <= 0:
                continue  # not in the body: Kravia cannot list it there
            standing = case_standing(await self.client.details(_kravia_id(cases, line)))
            recorded_here = payment_recorded(standing, payment.payment_id, kind=kind)
            evidence.append(
                LineEvidence(recorded_here, standing.remaining_capital, line.left_before)
            )
            listed_elsewhere = (
                listed_elsewhere
                and recorded_here is False
                and any(p.accounting_payment_id for p in standing.payments or ())
            )
        recorded = payment_arrived(evidence)
        listed_elsewhere = listed_elsewhere and bool(evidence)
        now = self.clock()
        if recorded is not True and not self._past_settle(payment):
            return payment  # it may still land: decided at a later pass, on Kravia's clock
        if recorded is True:
            after = replace(
                payment,
                phase=PaymentPhase.SENT,
                pending_attempt=None,
                pending_since=None,
                updated_at=now,
            )
        elif recorded is False or (payment.derived and listed_elsewhere):
            after = replace(
                payment,
                phase=PaymentPhase.NEW,
                pending_attempt=None,
                pending_since=None,
                updated_at=now,
                note=(
                    "the answer was lost and Kravia does not list the payment: sending again"
                    if recorded is False
                    # Not listed, but the capital moved (another payment since): an amount drop
                    # is limited to what Kravia's capital holds above what the source says is
                    # owed, read afresh, so one that did arrive after all sends nothing.
                    else "the answer was lost; Kravia lists the case's payments but not this "
                    "one, and its capital moved since: sent again, limited to what is still "
                    "owed (nothing, if it did arrive)"
                ),
            )
        else:
            after = replace(
                payment,
                phase=PaymentPhase.NEEDS_REVIEW,
                updated_at=now,
                note=(
                    "the answer was lost and Kravia's case details do not show whether it "
                    f"arrived: check in Kravia whether {payment.payment_id} is there, then "
                    f"kravia-sync resolve --payment {payment.payment_id} --as sent (or --as new "
                    "to send it again)"
                ),
            )
        self.store.write_payments(
            [after],
            [
                self._journal(
                    after,
                    "payment_verify",
                    attempt_id,
                    JournalKind.OUTCOME,
                    outcome="ok",
                    status=200,
                    started=started,
                    message=f"recorded: {recorded}",
                )
            ],
        )
        if after.phase is PaymentPhase.NEW:
            return await self._drive(after, outcome)
        return after

    def _past_settle(self, payment: PaymentState) -> bool:
        """Whether a sent payment whose answer was lost has had the settle time to land
        (Kravia's clock, read from the details just fetched, is past its `settle_after`)."""
        kravia_now = self.client.kravia_now()
        if payment.settle_after is None or kravia_now is None:
            return True  # nothing to wait for, or no Kravia clock: the host's settle applies
        return kravia_now >= payment.settle_after

    def _after_failure(self, pending: PaymentState, error: KraviaError) -> PaymentState:
        now = self.clock()
        message = redact(str(error))
        if error.failure is Failure.AMBIGUOUS:  # lost now: it may still land for a while
            settle_after = self._kravia_now() + self.settle
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
            else self.retry_in(pending.attempts)
        )
        return replace(
            cleared,
            phase=PaymentPhase.NEW,
            attempts=pending.attempts + 1,
            next_attempt_at=now + wait,
            note=message,
        )

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
        return JournalEntry(
            attempt_id=attempt_id,
            kind=kind,
            operation=operation,
            accounting_invoice_id=payment.lines[0].accounting_invoice_id,
            at=self.clock(),
            run_id=self.run_id,
            outcome=outcome,
            http_status=status,
            duration_ms=None if started is None else round((time.monotonic() - started) * 1000),
            message=None if message is None else redact(message)[:1000],
            payment_id=payment.payment_id,
        )


def _unknown_money(standings: Mapping[str, CaseStanding]) -> str | None:
    """Why money Kravia lists on a case cannot be told apart from its own payouts, or None."""
    for aid, standing in standings.items():
        unknown = [p for p in standing.payments or () if p.kind is RecordedKind.UNKNOWN]
        if unknown:
            return (
                f"Kravia lists {unknown[0].amount} of a type we do not know on {aid}'s case: it "
                "may be Kravia's own payout, which must not be sent back. Check the case in "
                "Kravia, then resolve this payment (--as new to send it, --as sent to drop it)"
            )
    return None


def _payouts(cases: list[CaseState]) -> list[tuple[str, dict[str, Decimal | None]]]:
    """Only the payouts accounted for: the rest of each case row is not ours to write."""
    return [
        (case.accounting_invoice_id, {"payouts_accounted": case.payouts_accounted})
        for case in cases
    ]


def _kravia_id(cases: Mapping[str, CaseState], line: PaymentLine) -> int:
    kravia_id = cases[line.accounting_invoice_id].kravia_id
    if kravia_id is None:
        raise ValueError(f"{line.accounting_invoice_id} is not in Kravia")
    return kravia_id
