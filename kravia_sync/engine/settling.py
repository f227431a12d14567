"""Settling what a lost answer left open, and what Kravia already holds before a register.

A register whose answer was lost is settled on a search of Kravia that began after the call
could still land; a lost upload or Start, or an adopted case, by reading the case's details.
Nothing is sent here: whatever a case's next step is afterwards goes through the case
driver's door like any other (`kravia_sync.engine.driver`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from dataclasses import replace

from kravia_sync.engine.case_writes import CaseWrites, PassStoppedError
from kravia_sync.identity import Absent, Adopt
from kravia_sync.kravia.answers import case_progress, case_standing
from kravia_sync.kravia.errors import Failure, KraviaError
from kravia_sync.lifecycle import (
    CaseState,
    Phase,
    Step,
    adopted_at_capital,
    after_details,
    after_identity,
    after_lookup_failed,
)
from kravia_sync.logging import get_logger, redact
from kravia_sync.state.records import CaseWrite, JournalKind

__all__ = ["CaseSettler"]

log = get_logger("kravia_sync.engine.driver")


class CaseSettler(CaseWrites):
    """Settles lost answers and identifies invoices in Kravia, for one pass."""

    async def settle(self, step: Step, case: CaseState) -> CaseState:
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

    async def known_in_kravia(self, case: CaseState) -> CaseState | None:
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

    async def adopted_instead(self, case: CaseState) -> CaseState | None:
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

    async def refused_start_was_done(
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
