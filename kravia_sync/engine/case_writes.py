"""What the case driver and the settling of lost answers share: the pass's Kravia client,
state committer, mirror and lease, and the writing of each decision and call outcome with
its journal line (compare-and-set on the case's revision).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Self

from kravia_sync.engine.case_preview import known_verdict, timing_of
from kravia_sync.engine.mirror import KraviaMirror
from kravia_sync.engine.summary import StageOutcome
from kravia_sync.identity import KnownCase, Unknown, Verdict
from kravia_sync.kravia.client import KraviaClient
from kravia_sync.kravia.errors import KraviaError, backoff_delay
from kravia_sync.lifecycle import CaseState, Step, after_failure, begin
from kravia_sync.logging import get_logger, redact
from kravia_sync.settings import Settings
from kravia_sync.state.committer import GroupCommitter
from kravia_sync.state.errors import LeaseLostError
from kravia_sync.state.lease import LeaseKeeper, elapsed
from kravia_sync.state.records import CaseWrite, JournalEntry, JournalKind, WriteStatus

__all__ = ["CaseWrites", "PassStoppedError", "journal_entry"]

log = get_logger("kravia_sync.engine.driver")


class PassStoppedError(Exception):
    """The whole pass must stop (a refused token, a wrong base URL)."""


class CaseWrites:
    """The pass's means of writing cases, shared by `CaseDriver` and `CaseSettler`."""

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
        log: StageOutcome,
    ) -> None:
        self.settings = settings
        self.client = client
        self.committer = committer
        self.mirror = mirror
        self.lease = lease
        self.clock = clock
        self.run_id = run_id
        self.stop = stop
        self.timing = timing_of(settings)
        self.log = log

    @classmethod
    def sharing(cls, other: CaseWrites) -> Self:
        """One of the same pass as `other`, sharing its client, committer, mirror, lease,
        clock, run, stop request and log."""
        return cls(
            other.settings,
            client=other.client,
            committer=other.committer,
            mirror=other.mirror,
            lease=other.lease,
            clock=other.clock,
            run_id=other.run_id,
            stop=other.stop,
            log=other.log,
        )

    def _not_written(self, case: CaseState, status: WriteStatus, reason: str | None) -> None:
        self.log.counts["held" if status is WriteStatus.HELD else "conflicts"] += 1
        log.warning(
            "not sent: the intent was not written",
            accounting_invoice_id=case.accounting_invoice_id,
            status=status.value,
            reason=reason or "the case changed in the state store since it was read",
        )

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

    async def _intent(
        self, step: Step, case: CaseState, operation: str
    ) -> tuple[CaseState, str, float] | None:
        """Journal the intent to send `step` (its turn at the pace is booked): the case as
        written, the attempt's id and the deadline for its place in flight (on `elapsed()`,
        which runs on while the machine is suspended); None when the intent was not written
        (a conflict, a hold)."""
        self.lease.check()
        attempt_id = uuid.uuid4().hex
        deadline = elapsed() + self.timing.boarding.total_seconds()
        # If this process dies with the call out, the call may still land for a while: it is
        # settled only on a search that began the settle time after it could have left
        # (Kravia's clock).
        pending = begin(
            case,
            step,
            attempt_id=attempt_id,
            now=self.clock(),
            settle_after=self._kravia_now() + self.timing.boarding + self.timing.settle,
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
            return None
        return written.case, attempt_id, deadline

    def _not_sent(
        self, step: Step, pending: CaseState, attempt_id: str, operation: str
    ) -> CaseState:
        """The case after its intent's call found no place in flight in time: never sent."""
        message = "no place in flight came in time: not sent"
        after = after_failure(
            pending,
            step,
            failure="not_sent",
            message=message,
            now=self.clock(),
            retry_in=timedelta(0),
        )
        self.log.counts["not_boarded"] += 1
        self._record(
            after,
            pending,
            operation,
            attempt_id,
            time.monotonic(),
            outcome="not_sent",
            status=None,
            message=message,
        )
        return replace(after, revision=pending.revision + 1)

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
