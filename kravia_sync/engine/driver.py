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

Settling a call whose answer was lost (a look-up in the mirror, a read of the case's details)
sends nothing; whatever the case's next step is then, it goes through the door like any other.
`plan` asks `CaseDriver.preview` the same questions without sending anything.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import Counter
from collections.abc import Callable, Collection
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta

from kravia_sync.documents import check_pdf, read_copy
from kravia_sync.engine.diff import SETTLING_STEPS, WorkItem
from kravia_sync.engine.gate import Refusal, RefusalKind, judge
from kravia_sync.engine.mirror import KraviaMirror
from kravia_sync.errors import InvalidRecordError
from kravia_sync.identity import Absent, Adopt, KnownCase, Unknown, Verdict
from kravia_sync.kravia.answers import case_progress, case_standing
from kravia_sync.kravia.calls import Reservation
from kravia_sync.kravia.client import KraviaClient
from kravia_sync.kravia.errors import Failure, KraviaError, backoff_delay, start_already_done
from kravia_sync.lifecycle import (
    CaseState,
    Decision,
    Phase,
    Step,
    Timing,
    adopted_at_capital,
    after_details,
    after_failure,
    after_identity,
    after_lookup_failed,
    after_success,
    begin,
    next_step,
)
from kravia_sync.logging import get_logger, redact
from kravia_sync.model import Invoice
from kravia_sync.settings import PolicySettings, Settings
from kravia_sync.state.committer import GroupCommitter
from kravia_sync.state.errors import LeaseLostError
from kravia_sync.state.lease import LeaseKeeper
from kravia_sync.state.records import CaseWrite, JournalEntry, JournalKind, WriteStatus

__all__ = ["CaseDriver", "PassStoppedError", "Preview", "copy_problem"]

log = get_logger("kravia_sync.engine.driver")

_OPERATION = {Step.REGISTER: "register", Step.UPLOAD: "document", Step.START: "start"}
_DONE_COUNT = {Step.REGISTER: "registered", Step.UPLOAD: "documented", Step.START: "started"}


class PassStoppedError(Exception):
    """The whole pass must stop (a refused token, a wrong base URL)."""


@dataclass(frozen=True, slots=True)
class Preview:
    """What the driver would do next for a case, and why."""

    step: str
    detail: str = ""


@dataclass(slots=True)
class DriveLog:
    """What the driver did in a pass, for the run summary."""

    counts: Counter[str] = field(default_factory=Counter)
    problems: list[dict[str, str]] = field(default_factory=list)


class CaseDriver:
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
        pass_began: datetime,
        stop: asyncio.Event,
    ) -> None:
        self.settings = settings
        self.client = client
        self.committer = committer
        self.mirror = mirror
        self.lease = lease
        self.clock = clock
        self.run_id = run_id
        self.pass_began = pass_began
        self.stop = stop
        self.timing = timing_of(settings)
        self.log = DriveLog()

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
                settled = await self._settle(decision.step, case)
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
        if not item.copy_checked and step in {Step.REGISTER, Step.UPLOAD}:
            # Off the event loop: a copy may come over the network (a REST source).
            document = None if item.invoice is None else item.invoice.document
            read = await asyncio.to_thread(read_copy, document)
            item.copy_problem, item.copy = read.problem, read.content
            item.copy_checked = True
        refusal = self._judge(step, case, item)
        if refusal is not None:
            return await self._refused(step, case, refusal)
        assert item.invoice is not None  # noqa: S101 - the gate refuses a gone invoice
        checked = None
        if step is Step.UPLOAD:  # the copy read and checked this pass goes up as it was read
            checked, item.copy = item.copy, None
        return await self._send(step, case, item.invoice, checked_copy=checked)

    def _judge(self, step: Step, case: CaseState, item: WorkItem) -> Refusal | None:
        return _judged(
            step,
            case,
            item,
            policy=self.settings.policy,
            today=self.settings.policy.today(self.clock()),
        )

    async def _refused(self, step: Step, case: CaseState, refusal: Refusal) -> CaseState:
        """The case after the gate refused `step`: as it was, or adopted instead of a
        register (`_adopted_instead`)."""
        adopted = await self._adopted_instead(case) if step is Step.REGISTER else None
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
        if step is Step.REGISTER:
            known = await self._known_in_kravia(case)
            if known is not None:
                return known
        content = b""
        if step is Step.UPLOAD:
            loaded = checked_copy or await self._load_copy(case, invoice)
            if isinstance(loaded, CaseState):
                return loaded
            content = loaded
        operation = _OPERATION[step]
        async with self.client.reserve() as reservation:
            self.lease.check()
            attempt_id = uuid.uuid4().hex
            # If this process dies with the call out, the call may still land for a while:
            # it is settled only on a search that began the settle time later (Kravia's clock).
            pending = begin(
                case,
                step,
                attempt_id=attempt_id,
                now=self.clock(),
                settle_after=self._kravia_now() + self.timing.settle,
            )
            written = await self.committer.commit(
                CaseWrite(
                    pending,
                    self._journal(pending, operation, attempt_id, JournalKind.INTENT),
                    intent=True,
                    holds=(case.accounting_invoice_id, case.invoice_number),
                )
            )
            if written.status is WriteStatus.FENCED:
                raise LeaseLostError("the writer lease was taken over by another process")
            if not written.ok or written.case is None:
                self._not_written(case, written.status, written.reason)
                return case
            pending = written.case
            self.lease.check()  # the intent's commit may have waited: still ours to send?
            started = time.monotonic()
            failure: KraviaError | None = None
            try:
                kravia_id = await self._call(step, pending, invoice, content, reservation)
            except KraviaError as error:
                failure = error
        if failure is not None:  # the slot is given back first: a look at details takes one
            done = await self._refused_start_was_done(step, pending, failure)
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

    async def _call(
        self,
        step: Step,
        case: CaseState,
        invoice: Invoice,
        content: bytes,
        reservation: Reservation,
    ) -> int | None:
        if step is Step.REGISTER:
            return await self.client.register(
                invoice, creditor_id=self.settings.kravia.creditor_id, reservation=reservation
            )
        assert case.kravia_id is not None  # noqa: S101 - only cases in Kravia get here
        if step is Step.UPLOAD:
            name = invoice.document.name if invoice.document else "invoice.pdf"
            await self.client.upload_document(
                case.kravia_id, name=name, content=content, reservation=reservation
            )
        else:
            await self.client.start(
                case.kravia_id, message=self.settings.kravia.start_message, reservation=reservation
            )
        return None

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

    async def _refused_start_was_done(
        self, step: Step, pending: CaseState, error: KraviaError
    ) -> bool | None:
        """Whether a Start Kravia refused is one it had done already (sent by a process whose
        state store was lost or restored from an older copy): its case details say started.
        False leaves the refusal as it is; None: the details could not be read (the Start is
        tried again later, never parked on a failed look)."""
        if step is not Step.START or error.failure is not Failure.TERMINAL:
            return False
        assert pending.kravia_id is not None  # noqa: S101 - only cases in Kravia are started
        try:
            details = await self.client.details(pending.kravia_id)
        except KraviaError as look:
            if look.failure.stops_pass:
                raise PassStoppedError(look.stop_reason("details")) from None
            return None
        return case_progress(details).started is True

    def _not_written(self, case: CaseState, status: WriteStatus, reason: str | None) -> None:
        self.log.counts["held" if status is WriteStatus.HELD else "conflicts"] += 1
        log.warning(
            "not sent: the intent was not written",
            accounting_invoice_id=case.accounting_invoice_id,
            status=status.value,
            reason=reason or "the case changed in the state store since it was read",
        )

    async def _known_in_kravia(self, case: CaseState) -> CaseState | None:
        """Before a register: what Kravia already holds (the mirror, as it was when this pass
        began at the latest). None: Kravia has no such case, register it; else the case as
        now written (adopted, parked, or unchanged when Kravia could not be asked)."""
        if not await self._fresh(None):  # a search of this very pass
            self.log.counts["register_deferred"] += 1
            return case
        verdict = await self._identified(case)
        if isinstance(verdict, Absent):
            return None
        after = after_identity(case, verdict, now=self.clock())
        if after.phase is Phase.ADOPTED:  # a case parked is counted where the pass ends
            self.log.counts["adopted"] += 1
        return await self._decided(case, after, "identity", str(verdict))

    async def _adopted_instead(self, case: CaseState) -> CaseState | None:
        """A register the gate refuses, of an invoice Kravia holds all the same (the store was
        restored from a copy older than the register, or lost): Kravia's case is adopted, which
        sends nothing, so that what happened since (a payment, a hold) reaches it. The mirror
        as last searched is enough: a case Kravia reported does not go away. Several cases, or
        one that may be it and whose details do not tell, park it for a person (resolve), as
        before a register: Kravia may be collecting what is not to be collected, and it is not
        looked at again at every pass. None: Kravia has no case that is, or may be, this
        invoice's; the refusal stands."""
        verdict = await self._identified(case)
        if isinstance(verdict, Absent):
            return None
        if isinstance(verdict, Adopt):
            log.info(
                "adopted a case the gate keeps out: Kravia has it",
                accounting_invoice_id=case.accounting_invoice_id,
                kravia_id=verdict.kravia_id,
            )
        after = after_identity(case, verdict, now=self.clock())
        if after.phase is Phase.ADOPTED:  # a case parked is counted where the pass ends
            self.log.counts["adopted"] += 1
        return await self._decided(case, after, "identity", str(verdict))

    def _verdict(self, case: CaseState) -> Verdict:
        return known_verdict(self.settings, self.mirror, case)

    async def _identified(self, case: CaseState) -> Verdict:
        """The verdict, after reading the details of the cases that made it unknown (search
        items without an accountingInvoiceId): what their details say decides, where they
        say it."""
        verdict = self._verdict(case)
        if (
            isinstance(verdict, Unknown)
            and verdict.unreadable
            and await self.mirror.identify(verdict.kravia_ids)
        ):
            return self._verdict(case)
        return verdict

    def _until_kravia(self, moment: datetime) -> float:
        """Seconds until Kravia's clock (at the earliest it can be) reaches `moment`."""
        kravia_now = self.client.kravia_now() or self.clock()
        return (moment - kravia_now).total_seconds()

    def _kravia_now(self) -> datetime:
        """Kravia's clock now (at the latest it can be) where its answers told it, else
        ours: when a call went out, for settling it later."""
        return self.client.kravia_latest() or self.clock()

    async def _fresh(self, moment: datetime | None) -> bool:
        """Whether the mirror holds a search that began at or after `moment` (searching if
        not); a refused token or a wrong base URL stops the pass."""
        try:
            return await self.mirror.ensure_fresh(moment)
        except KraviaError as error:
            raise PassStoppedError(error.stop_reason("search")) from None

    async def _load_copy(self, case: CaseState, invoice: Invoice) -> bytes | CaseState:
        """The copy to upload, or the case to keep when it cannot be read now."""
        document = invoice.document
        if document is None:  # the gate refuses an upload without one: never an empty copy
            return case
        try:
            # Off the event loop: a copy may come over the network (a REST source).
            content = await asyncio.to_thread(document.load)
            check_pdf(content, document.name)
        except (OSError, InvalidRecordError) as exc:
            self.log.counts["gated_invalid"] += 1
            log.warning(
                "not sent: the invoice copy cannot be read",
                accounting_invoice_id=case.accounting_invoice_id,
                error=redact(str(exc)),
            )
            return case
        return content

    # --- settling what a lost answer left open ------------------------------------------------
    async def _settle(self, step: Step, case: CaseState) -> CaseState:
        if step is Step.LOOKUP:
            return await self._lookup(case)
        return await self._verify(step, case)

    async def _lookup(self, case: CaseState) -> CaseState:
        """Settle a register whose answer was lost, on a search that began after the call
        could still land (`settle_after`, on Kravia's clock; one search serves every such
        case). Too early in this pass: it waits for the next, without counting against it."""
        target = case.settle_after or (case.pending_since or case.updated_at) + self.timing.settle
        now = self.clock()
        fresh = await self._fresh(target)
        soon = self._until_kravia(target)
        if (
            not fresh
            and self.mirror.failure is None
            and soon <= self.settings.retry.max_inline_wait_seconds
        ):
            # Kravia's clock is nearly there (its Date headers are cut to the second): wait.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), timeout=max(soon, 0.0))
            fresh = await self._fresh(target)
        if not fresh:
            if self.mirror.failure is None:  # no search left in this pass: not a failure
                self.log.counts["lookups_deferred"] += 1
                return case
            after = after_lookup_failed(
                case,
                now=now,
                retry_in=self._retry_in(case, None),
                max_lookups=self.timing.max_lookups,
                why=self.mirror.failure or "Kravia's search could not be made this pass",
            )
            return await self._decided(case, after, "lookup", "search failed")
        verdict = await self._identified(case)
        after = after_identity(case, verdict, now=self.clock())
        self.log.counts["adopted" if after.phase is Phase.REGISTERED else "lookups"] += 1
        log.info(
            "lookup after a lost answer",
            accounting_invoice_id=case.accounting_invoice_id,
            verdict=str(verdict),
            phase=after.phase.value,
        )
        return await self._decided(case, after, "lookup", str(verdict))

    async def _verify(self, step: Step, case: CaseState) -> CaseState:
        """Read the case's details: settle a lost upload or Start answer, or learn how far an
        adopted case got."""
        assert case.kravia_id is not None  # noqa: S101 - only cases in Kravia are verified
        attempt_id = uuid.uuid4().hex
        self.committer.submit(
            CaseWrite(entry=self._journal(case, "details", attempt_id, JournalKind.INTENT))
        )
        started = time.monotonic()
        try:
            details = await self.client.details(case.kravia_id)
        except KraviaError as error:
            if error.failure.stops_pass:
                raise PassStoppedError(error.stop_reason("details")) from None
            if error.failure is Failure.TERMINAL:
                after = replace(
                    case,
                    phase=Phase.NEEDS_REVIEW,
                    last_error=redact(f"Kravia's details of case {case.kravia_id}: {error}"),
                    updated_at=self.clock(),
                )
            else:
                after = replace(
                    case,
                    next_attempt_at=self.clock() + self._retry_in(case, error),
                    attempts=case.attempts + 1,
                    last_error=redact(str(error)),
                )
            self._record(
                after,
                case,
                "details",
                attempt_id,
                started,
                outcome=error.failure.value,
                status=error.status,
                message=str(error),
            )
            return replace(after, revision=case.revision + 1)
        progress = case_progress(details)
        after = after_details(
            case,
            step,
            progress,
            now=self.clock(),
            resend_unconfirmed_uploads=self.settings.retry.resend_unconfirmed_uploads,
            max_unconfirmed=self.timing.max_lookups,
        )
        if step is Step.VERIFY_ADOPTED:
            after = adopted_at_capital(after, case_standing(details).remaining_capital)
        self._record(
            after,
            case,
            "details",
            attempt_id,
            started,
            outcome="ok",
            status=200,
            message=f"copy: {progress.documented}, started: {progress.started}",
        )
        self.log.counts["verified"] += 1
        return replace(after, revision=case.revision + 1)

    async def _decided(
        self, case: CaseState, after: CaseState, operation: str, message: str
    ) -> CaseState:
        """Write a decision taken without a call (compare-and-set), journaled."""
        if after == case:
            return case
        entry = self._journal(
            case, operation, uuid.uuid4().hex, JournalKind.DECISION, message=message
        )
        written = await self.committer.commit(CaseWrite(after, entry))
        if written.status is WriteStatus.FENCED:
            raise LeaseLostError("the writer lease was taken over by another process")
        if not written.ok or written.case is None:
            self._not_written(case, written.status, written.reason)
            return case
        return written.case

    # --- plan: the same questions, nothing sent -----------------------------------------------
    def preview(self, item: WorkItem, now: datetime) -> Preview:
        """What `drive` would do next for this case (without searching Kravia: registers are
        judged on the mirror as stored)."""
        return preview(self.settings, item, now, mirror=self.mirror)

    # --- journaling ---------------------------------------------------------------------------
    def _journal(
        self,
        case: CaseState,
        operation: str,
        attempt_id: str,
        kind: JournalKind,
        *,
        outcome: str | None = None,
        status: int | None = None,
        message: str | None = None,
        started: float | None = None,
    ) -> JournalEntry:
        return journal_entry(
            case,
            operation,
            attempt_id,
            kind,
            at=self.clock(),
            run_id=self.run_id,
            outcome=outcome,
            status=status,
            message=message,
            started=started,
        )

    def _record(
        self,
        after: CaseState,
        before: CaseState,
        operation: str,
        attempt_id: str,
        started: float,
        *,
        outcome: str,
        status: int | None,
        message: str | None = None,
        kravia_case: KnownCase | None = None,
    ) -> None:
        """Queue a call's outcome: the case row over the revision it was read at (`before`),
        and the journal entry (appended even if the row moved on: it is a fact), and a case
        Kravia made for us into the mirror of its cases."""
        entry = self._journal(
            after,
            operation,
            attempt_id,
            JournalKind.OUTCOME,
            outcome=outcome,
            status=status,
            message=message,
            started=started,
        )
        self.committer.submit(
            CaseWrite(replace(after, revision=before.revision), entry, kravia_case=kravia_case)
        )

    def _retry_in(self, case: CaseState, error: KraviaError | None) -> timedelta:
        if error is not None and error.retry_after is not None:
            return timedelta(seconds=error.retry_after)
        seconds = backoff_delay(
            case.attempts + case.lookups,
            base=self.timing.backoff_base.total_seconds(),
            cap=self.timing.backoff_cap.total_seconds(),
        )
        return timedelta(seconds=seconds)


def journal_entry(
    case: CaseState,
    operation: str,
    attempt_id: str,
    kind: JournalKind,
    *,
    at: datetime,
    run_id: int | None,
    outcome: str | None = None,
    status: int | None = None,
    message: str | None = None,
    started: float | None = None,
) -> JournalEntry:
    """A journal row for a call about `case` (`started`: its time.monotonic() start)."""
    return JournalEntry(
        attempt_id=attempt_id,
        kind=kind,
        operation=operation,
        accounting_invoice_id=case.accounting_invoice_id,
        at=at,
        run_id=run_id,
        kravia_id=case.kravia_id,
        outcome=outcome,
        http_status=status,
        duration_ms=None if started is None else round((time.monotonic() - started) * 1000),
        message=None if message is None else redact(message)[:1000],
    )


def known_verdict(settings: Settings, mirror: KraviaMirror, case: CaseState) -> Verdict:
    """Whether Kravia (as mirrored) already has the case's invoice, leaving out the cases a
    person declared are not it."""
    not_these = {int(i) for i in (case.not_kravia_ids or "").split(",") if i.strip().isdigit()}
    return _mirrored_verdict(
        settings,
        mirror,
        case.source,
        case.accounting_invoice_id,
        case.invoice_number,
        not_these=not_these,
    )


def kravia_may_hold(
    settings: Settings, mirror: KraviaMirror, source: str, invoice: Invoice, case: CaseState | None
) -> bool:
    """Whether Kravia (as mirrored) holds a case that is, or may be, this invoice's: an
    invoice the gate keeps out is then driven all the same, for its case to be adopted or
    the invoice parked (`CaseDriver._adopted_instead`)."""
    verdict = (
        known_verdict(settings, mirror, case)
        if case is not None
        else _mirrored_verdict(
            settings, mirror, source, invoice.accounting_invoice_id, invoice.invoice_number
        )
    )
    return not isinstance(verdict, Absent)


def _mirrored_verdict(
    settings: Settings,
    mirror: KraviaMirror,
    source_name: str,
    accounting_invoice_id: str,
    invoice_number: str,
    *,
    not_these: Collection[int] = (),
) -> Verdict:
    """The fallback id is what the source gives an invoice without an id of its own: its
    prefix and number."""
    source = next((s for s in settings.sources if s.name == source_name), None)
    return mirror.verdict(
        accounting_invoice_id,
        invoice_number,
        fallback_id=(source.id_prefix if source else "") + invoice_number,
        not_these=not_these,
    )


def timing_of(settings: Settings) -> Timing:
    retry = settings.retry
    return Timing(
        settle=timedelta(seconds=retry.settle_seconds),
        backoff_base=timedelta(seconds=retry.backoff_base_seconds),
        backoff_cap=timedelta(seconds=retry.backoff_cap_seconds),
        max_lookups=retry.max_lookups,
    )


def preview(
    settings: Settings, item: WorkItem, now: datetime, *, mirror: KraviaMirror | None
) -> Preview:
    """What the driver would do next for `item`: one decision path for `plan` and passes."""
    case = item.case
    decision: Decision = next_step(
        case, start=settings.policy.start, now=now, timing=timing_of(settings)
    )
    step = decision.step
    if step is Step.WAIT and decision.not_before is not None:
        return Preview(
            "wait", f"{decision.reason}, not before {decision.not_before:%Y-%m-%d %H:%M:%S %Z}"
        )
    if step in {Step.NONE, Step.WAIT} or step in SETTLING_STEPS | {Step.VERIFY_ADOPTED}:
        return Preview(step.value, decision.reason)
    if not item.copy_checked and step in {Step.REGISTER, Step.UPLOAD}:
        item.copy_problem = copy_problem(item.invoice)
        item.copy_checked = True
    refusal = _judged(step, case, item, policy=settings.policy, today=settings.policy.today(now))
    if refusal is not None:
        if step is Step.REGISTER and mirror is not None:
            adopted = _adoption_preview(known_verdict(settings, mirror, case), case, now)
            if adopted is not None:
                return adopted
        shown = "none" if refusal.kind is RefusalKind.APPROVAL else refusal.kind.value
        return Preview(shown, refusal.reason)
    if step is Step.REGISTER and mirror is not None:
        return _register_preview(known_verdict(settings, mirror, case), case, now)
    return Preview(step.value, decision.reason)


def _register_preview(verdict: Verdict, case: CaseState, now: datetime) -> Preview:
    """What a register comes to, given what the mirror says Kravia holds."""
    if isinstance(verdict, Unknown) and verdict.unreadable:
        ids = ", ".join(str(kravia_id) for kravia_id in verdict.kravia_ids)
        return Preview(
            "identify",
            f"Kravia's search lists case {ids} with this invoice number but no "
            "accountingInvoiceId: its details are read first, then it is adopted, "
            "registered, or left to a person",
        )
    if not isinstance(verdict, Absent):
        after = after_identity(case, verdict, now=now)
        return Preview(
            "adopt" if after.phase is Phase.ADOPTED else "needs_review",
            after.last_error or "",
        )
    return Preview("register", "Kravia has no case for it (as last searched)")


def _judged(
    step: Step, case: CaseState, item: WorkItem, *, policy: PolicySettings, today: date
) -> Refusal | None:
    """The gate's answer for `step` now (holds are checked again in the intent's own
    transaction). A case the source read kept out is never registered, whatever else
    changed: it is driven only to adopt the case Kravia may hold."""
    refusal = judge(
        step,
        case,
        item.invoice,
        policy=policy,
        today=today,
        hold=None,  # checked in the intent's own transaction
        copy_problem=lambda: item.copy_problem,
    )
    if refusal is None and step is Step.REGISTER:
        return item.kept_out
    return refusal


def _adoption_preview(verdict: Verdict, case: CaseState, now: datetime) -> Preview | None:
    """What a register the gate refuses comes to when Kravia may hold the invoice all the
    same (see `CaseDriver._adopted_instead`); None: the refusal stands."""
    if isinstance(verdict, Adopt):
        return Preview(
            "adopt",
            f"not to be sent, but Kravia holds case {verdict.kravia_id} for it already: "
            "adopted (nothing is sent), so that what changed since reaches Kravia",
        )
    if isinstance(verdict, Absent):
        return None
    return _register_preview(verdict, case, now)


def copy_problem(invoice: Invoice | None) -> str | None:
    """Why the invoice's copy cannot be sent, or None (read within the source's limits)."""
    return read_copy(None if invoice is None else invoice.document).problem
