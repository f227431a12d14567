"""The case driver: takes one case at a time as far as it can go in a pass.

Every call that changes a case in Kravia goes through one door, `CaseDriver._send`:

1. the gate (`kravia_sync.engine.gate.judge`): the invoice as the source has it now, the policy, and
   its copy; for a register also the mirror of Kravia's cases (`kravia_sync.engine.mirror`), so an
   invoice Kravia already has is adopted, never registered again;
2. a concurrency slot and a rate token (`KraviaClient.reserve`), so what follows leaves now;
3. the intent, committed only while this process holds the writer lease at its epoch, the
   case is still at the revision it was read at, and no operator holds the invoice (one
   transaction: `StateStore.commit_case_writes`);
4. the call, then its outcome (compare-and-set again).

Settling a call whose answer was lost (a look-up in the mirror, a read of the case's details:
`kravia_sync.engine.settling`) sends nothing; whatever the case's next step is then, it goes
through the door like any other. `plan` asks the same questions without sending anything
(`kravia_sync.engine.case_preview.preview`); what the driver and the settling share, writing
each outcome with its journal line, is in `kravia_sync.engine.case_writes`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import datetime

from kravia_sync.documents import check_pdf, read_copy
from kravia_sync.engine.case_preview import (
    Preview,
    copy_problem,
    judged,
    kravia_may_hold,
    preview,
    timing_of,
)
from kravia_sync.engine.case_writes import CaseWrites, PassStoppedError, journal_entry
from kravia_sync.engine.diff import SETTLING_STEPS, WorkItem
from kravia_sync.engine.gate import Refusal
from kravia_sync.engine.mirror import KraviaMirror
from kravia_sync.engine.settling import CaseSettler
from kravia_sync.engine.summary import StageOutcome
from kravia_sync.errors import InvalidRecordError
from kravia_sync.identity import KnownCase
from kravia_sync.kravia.calls import Reservation
from kravia_sync.kravia.client import KraviaClient
from kravia_sync.kravia.errors import Failure, KraviaError, start_already_done
from kravia_sync.lifecycle import (
    CaseState,
    Step,
    after_failure,
    after_success,
    next_step,
)
from kravia_sync.logging import get_logger, redact
from kravia_sync.model import Invoice
from kravia_sync.settings import Settings
from kravia_sync.state.committer import GroupCommitter
from kravia_sync.state.lease import LeaseKeeper, elapsed

__all__ = [
    "CaseDriver",
    "PassStoppedError",
    "Preview",
    "copy_problem",
    "journal_entry",
    "kravia_may_hold",
    "preview",
    "timing_of",
]

log = get_logger("kravia_sync.engine.driver")

_OPERATION = {Step.REGISTER: "register", Step.UPLOAD: "document", Step.START: "start"}
_DONE_COUNT = {Step.REGISTER: "registered", Step.UPLOAD: "documented", Step.START: "started"}


@dataclass(frozen=True, slots=True)
class _Departed:
    """A call that left: its case as journaled, the attempt, when it left (monotonic), and
    Kravia's answer (the new case's id for a register) or the failure."""

    pending: CaseState
    attempt_id: str
    started: float
    kravia_id: int | None
    failure: KraviaError | None


class CaseDriver(CaseWrites):
    """Drives the cases of one pass against one Kravia client and one state store."""

    def __init__(
        self,
        settings: Settings,
        *,
        client: KraviaClient,
        committer: GroupCommitter,
        mirror: KraviaMirror,
        lease: LeaseKeeper,
        clock: Callable[[], datetime],
        run_id: int | None,
        stop: asyncio.Event,
    ) -> None:
        super().__init__(
            settings,
            client=client,
            committer=committer,
            mirror=mirror,
            lease=lease,
            clock=clock,
            run_id=run_id,
            stop=stop,
            log=StageOutcome(),
        )
        # Settling shares this driver's means of writing and its log.
        self.settler = CaseSettler.sharing(self)

    # --- one case -----------------------------------------------------------------------------
    async def drive(self, item: WorkItem) -> CaseState:
        """Take one case as far as it can go in this pass."""
        case = item.case
        waits = 0
        retry = self.settings.retry
        while not self.stop.is_set():
            now = self.clock()
            decision = next_step(
                case, start=self.settings.policy.start, now=now, timing=self.timing
            )
            if decision.step is Step.NONE:
                return case
            if decision.step is Step.WAIT:
                assert decision.not_before is not None  # noqa: S101 - WAIT always carries it
                delay = (decision.not_before - now).total_seconds()
                if waits >= retry.retries_per_pass or delay > retry.max_inline_wait_seconds:
                    return case
                waits += 1
                with contextlib.suppress(TimeoutError):  # a stop request ends the wait
                    await asyncio.wait_for(self.stop.wait(), timeout=max(delay, 0.0))
                continue
            if decision.step in SETTLING_STEPS | {Step.VERIFY_ADOPTED}:
                # Settling decides nothing about sending: the next step is decided afresh and
                # passes the gate like any other.
                settled = await self.settler.settle(decision.step, case)
                if settled == case:
                    return case
                if decision.step is Step.LOOKUP and self.mirror.failure is not None:
                    # This pass's search failed and is not made again in it: a retry here
                    # would charge the case another failed look-up for the same search.
                    return settled
                case = settled
                continue
            before = case
            case = await self._through_gate(decision.step, case, item)
            if case.attempts > before.attempts and case.next_attempt_at is not None:
                continue  # not applied (a 429, a 503, no connection): tried again after a wait
            if case.phase is before.phase:  # nothing moved (refused, deferred, conflict)
                return case
        return case

    async def _through_gate(self, step: Step, case: CaseState, item: WorkItem) -> CaseState:
        """`step` sent if the gate lets it go; the case after it (or after the refusal)."""
        unchecked = not item.copy_checked or (item.copy_recheck and item.copy is None)
        if unchecked and step in {Step.REGISTER, Step.UPLOAD}:
            # Off the event loop: a copy may come over the network (a REST source). Checked
            # at the read without its bytes kept: checked again, and those bytes are sent.
            document = None if item.invoice is None else item.invoice.document
            read = await asyncio.to_thread(read_copy, document)
            item.copy_problem, item.copy = read.problem, read.content
            item.copy_checked, item.copy_recheck = True, False
        refusal = self._judge(step, case, item)
        if refusal is not None:
            return await self._refused(step, case, refusal)
        assert item.invoice is not None  # noqa: S101 - the gate refuses a gone invoice
        checked = None
        if step is Step.UPLOAD:  # the copy read and checked this pass goes up as it was read
            checked, item.copy = item.copy, None
        return await self._send(step, case, item.invoice, checked_copy=checked)

    def _judge(self, step: Step, case: CaseState, item: WorkItem) -> Refusal | None:
        return judged(
            step,
            case,
            item,
            policy=self.settings.policy,
            today=self.settings.policy.today(self.clock()),
        )

    async def _refused(self, step: Step, case: CaseState, refusal: Refusal) -> CaseState:
        """The case after the gate refused `step`: as it was, or adopted instead of a
        register (`CaseSettler.adopted_instead`)."""
        adopted = await self.settler.adopted_instead(case) if step is Step.REGISTER else None
        if adopted is not None:
            return adopted
        self.log.counts[f"gated_{refusal.kind.value}"] += 1
        log.info(
            "not sent",
            accounting_invoice_id=case.accounting_invoice_id,
            reason=refusal.reason,
        )
        return case

    # --- the one door for calls that change a case --------------------------------------------
    async def _send(
        self, step: Step, case: CaseState, invoice: Invoice, *, checked_copy: bytes | None = None
    ) -> CaseState:
        """`checked_copy`: for an upload, the copy as read and checked earlier in this pass
        (None: it is read now)."""
        content = await self._content(step, case, invoice, checked_copy)
        if isinstance(content, CaseState):
            return content
        operation = _OPERATION[step]
        departed = await self._depart(step, case, invoice, content)
        if isinstance(departed, CaseState):
            return departed
        pending, attempt_id, started = departed.pending, departed.attempt_id, departed.started
        kravia_id, failure = departed.kravia_id, departed.failure
        if failure is not None:  # the slot is given back first: a look at details takes one
            done = await self.settler.refused_start_was_done(step, pending, failure)
            if done is None:
                failure = KraviaError(
                    Failure.TRANSIENT,
                    f"{failure}; Kravia's case details could not be read to tell whether it "
                    "had started already: Start is tried again",
                    status=failure.status,
                )
            return self._failed(step, pending, failure, attempt_id, started, done=bool(done))
        after = after_success(pending, step, now=self.clock(), kravia_id=kravia_id)
        registered = (
            None
            if kravia_id is None
            else KnownCase(kravia_id, pending.accounting_invoice_id, pending.invoice_number)
        )
        self._record(
            after,
            pending,
            operation,
            attempt_id,
            started,
            outcome="ok",
            status=200,
            kravia_case=registered,
        )
        self.log.counts[_DONE_COUNT[step]] += 1
        return replace(after, revision=pending.revision + 1)

    async def _depart(
        self, step: Step, case: CaseState, invoice: Invoice, content: bytes
    ) -> _Departed | CaseState:
        """Journal the intent and send the call: what came of it, or the case as it stays
        (its intent not written, a stop request, no place in flight twice)."""
        operation = _OPERATION[step]
        # First the intent, then a place in flight, so the intent's commit holds no place
        # idle; a call that found none in time takes its place first on the second try, then
        # journals its intent (as payments do), and so always goes.
        for pipelined in (True, False):
            if self.stop.is_set():
                return case
            intent: tuple[CaseState, str, float] | None = None
            place: contextlib.AbstractAsyncContextManager[Reservation | None]
            if pipelined:
                if not await paced_unless_stopped(self.client.pace, self.stop):
                    return case
                intent = await self._intent(step, case, operation)
                if intent is None:
                    return case
                place = self.client.board(within=intent[2] - elapsed())
            else:
                place = self.client.reserve()
            async with place as reservation:
                intent = intent or await self._intent(step, case, operation)
                if intent is None:
                    return case
                pending, attempt_id, deadline = intent
                if reservation is None or self.stop.is_set() or elapsed() > deadline:
                    # No place in flight in time, or asked to stop: never sent.
                    case = self._not_sent(step, pending, attempt_id, operation)
                    continue
                self.lease.check()  # the intent's commit may have waited: still ours to send?
                started = time.monotonic()
                failure: KraviaError | None = None
                kravia_id: int | None = None
                try:
                    kravia_id = await _call(
                        self.client,
                        self.settings,
                        step,
                        pending,
                        invoice=invoice,
                        content=content,
                        reservation=reservation,
                    )
                except KraviaError as error:
                    failure = error
            return _Departed(pending, attempt_id, started, kravia_id, failure)
        return case

    async def _content(
        self, step: Step, case: CaseState, invoice: Invoice, checked_copy: bytes | None
    ) -> bytes | CaseState:
        """What the call sends besides the invoice (an upload's copy, else nothing), or the
        case as it stays: adopted or parked instead of a register, a copy that cannot be
        read now."""
        if step is Step.REGISTER:
            known = await self.settler.known_in_kravia(case)
            if known is not None:
                return known
        if step is not Step.UPLOAD:
            return b""
        return checked_copy or await _load_copy(case, invoice, self.log)

    def _failed(
        self,
        step: Step,
        pending: CaseState,
        error: KraviaError,
        attempt_id: str,
        started: float,
        *,
        done: bool = False,
    ) -> CaseState:
        """The case after `step` failed; `done`: Kravia refused a Start because the case's
        details show it started already."""
        operation = _OPERATION[step]
        now = self.clock()
        if done:
            after = replace(
                after_success(pending, step, now=now),
                last_error=redact(
                    f"Kravia refused Start ({error}) and its case details show it started "
                    "already (a Start this state store did not know of): done"
                ),
            )
            self.log.counts["started"] += 1
        elif step is Step.START and pending.lookups > 0 and start_already_done(error):
            # Start was sent again after an unknown outcome: "not available" means it is done.
            after = replace(
                after_success(pending, step, now=now),
                last_error=redact(f"Start sent again after its answer was lost; Kravia: {error}"),
            )
            self.log.counts["started"] += 1
        else:
            after = after_failure(
                pending,
                step,
                failure=error.failure.value,
                message=redact(str(error)),
                now=now,
                retry_in=self._retry_in(pending, error),
            )
            if error.failure is Failure.AMBIGUOUS:  # lost now: it may still land a while
                after = replace(after, settle_after=self._kravia_now() + self.timing.settle)
            self.log.counts[f"{operation}_{error.failure.value}"] += 1
        self._record(
            after,
            pending,
            operation,
            attempt_id,
            started,
            outcome=error.failure.value,
            status=error.status,
            message=str(error),
        )
        if error.failure.stops_pass:
            raise PassStoppedError(error.stop_reason(operation))
        log.warning(
            "call failed",
            operation=operation,
            invoice=pending.invoice_number,
            accounting_invoice_id=pending.accounting_invoice_id,
            failure=error.failure.value,
            error=str(error),
        )
        return replace(after, revision=pending.revision + 1)


async def _load_copy(
    case: CaseState, invoice: Invoice, drive_log: StageOutcome
) -> bytes | CaseState:
    """The copy to upload, or the case to keep when it cannot be read now."""
    document = invoice.document
    if document is None:  # the gate refuses an upload without one: never an empty copy
        return case
    try:
        # Off the event loop: a copy may come over the network (a REST source).
        content = await asyncio.to_thread(document.load)
        check_pdf(content, document.name)
    except (OSError, InvalidRecordError) as exc:
        drive_log.counts["gated_invalid"] += 1
        log.warning(
            "not sent: the invoice copy cannot be read",
            accounting_invoice_id=case.accounting_invoice_id,
            error=redact(str(exc)),
        )
        return case
    return content


async def paced_unless_stopped(pace: Callable[[], Awaitable[None]], stop: asyncio.Event) -> bool:
    """Wait for a call's turn at the pace (`pace`: a rate, a Retry-After pause of up to a
    minute); False when the pass is asked to stop first, or by then: the wait ends at once
    and nothing is journaled for a call that will not leave."""
    if stop.is_set():
        return False
    turn = asyncio.ensure_future(pace())
    stopped = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({turn, stopped}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiting in (turn, stopped):
            if not waiting.done():
                waiting.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await waiting
    if turn.done() and not turn.cancelled():
        turn.result()  # its error, if any
    return not stop.is_set()


async def _call(
    client: KraviaClient,
    settings: Settings,
    step: Step,
    case: CaseState,
    *,
    invoice: Invoice,
    content: bytes,
    reservation: Reservation,
) -> int | None:
    if step is Step.REGISTER:
        return await client.register(
            invoice, creditor_id=settings.kravia.creditor_id, reservation=reservation
        )
    assert case.kravia_id is not None  # noqa: S101 - only cases in Kravia get here
    if step is Step.UPLOAD:
        name = invoice.document.name if invoice.document else "invoice.pdf"
        await client.upload_document(
            case.kravia_id, name=name, content=content, reservation=reservation
        )
    else:
        await client.start(
            case.kravia_id, message=settings.kravia.start_message, reservation=reservation
        )
    return None
