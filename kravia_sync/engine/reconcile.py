"""One pass: read every source, diff against the state store, plan, and apply against Kravia.

The decisions are made by the pure functions in `plan`, `lifecycle` and `gate`; the case
driver (`kravia_sync.engine.driver`) takes each case through its calls, and this module runs the
pass around it: the writer lease, reading and diffing the sources, holds, payments, the status
pulled back from Kravia, and the run summary.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from kravia_sync.engine.canary import CanaryRun, canary_stage
from kravia_sync.engine.diff import (
    WorkItem,
    WorkList,
)
from kravia_sync.engine.driver import CaseDriver, timing_of
from kravia_sync.engine.errors import PassFailedError
from kravia_sync.engine.holds import HoldsInKravia
from kravia_sync.engine.mirror import KraviaMirror
from kravia_sync.engine.outcome import finished_status
from kravia_sync.engine.payment_stage import PaymentStage
from kravia_sync.engine.plan_listing import KeptOutList, list_plan
from kravia_sync.engine.pool import CasePool, Progress
from kravia_sync.engine.reading import SourceReader, build_connector
from kravia_sync.engine.status import StatusPullBack, refresh_statuses
from kravia_sync.engine.summary import RunStatus, RunSummary, StageOutcome
from kravia_sync.engine.target import KRAVIA_TARGET, StoreTarget, kravia_target
from kravia_sync.engine.worklist import WorkListError
from kravia_sync.kravia.client import KraviaClient
from kravia_sync.lifecycle import (
    CaseState,
)
from kravia_sync.logging import get_logger
from kravia_sync.payments import (
    PaymentState,
)
from kravia_sync.settings import Settings
from kravia_sync.state.committer import GroupCommitter, StateWriteError
from kravia_sync.state.errors import LeaseLostError, StateConflictError, StateError
from kravia_sync.state.lease import LeaseKeeper
from kravia_sync.state.store import StateStore
from kravia_sync.state.stored import utc_now as store_now

__all__ = [
    "KRAVIA_TARGET",
    "Progress",
    "Reconciler",
    "build_connector",
    "kravia_target",
]

log = get_logger("kravia_sync.engine.reconcile")


class _NoProgress:
    def start(self, total: int) -> None:
        del total

    def advance(self) -> None:
        return


@dataclass
class _Reads:
    """What a pass's source reads left for its later stages."""

    payment_work: list[PaymentState] = field(default_factory=list)
    gone_in_kravia: list[str] = field(default_factory=list)  # missing cases Kravia may hold
    back_in_source: list[str] = field(default_factory=list)  # noted as gone, read again
    kept_out: int = 0  # invoices the gate kept out: Kravia may hold some of them already
    kept_out_list: KeptOutList = field(default_factory=KeptOutList)  # for `plan` to list


class Reconciler:
    """Runs passes for one configuration against one state store and one Kravia client."""

    def __init__(
        self,
        settings: Settings,
        store: StateStore,
        *,
        client: KraviaClient | None = None,
        clock: Callable[[], datetime] = store_now,
        progress: Progress | None = None,
        confirm_gone: Collection[str] = (),
    ) -> None:
        self.settings = settings
        # Sources whose large disappearance an operator confirmed for this pass.
        self.confirm_gone = frozenset(confirm_gone)
        self.store = store
        self.target = StoreTarget(settings, store)
        self.client = client
        self.clock = clock
        self.progress = progress or _NoProgress()
        self.timing = timing_of(settings)
        self._committer: GroupCommitter | None = None
        self._run_id: int | None = None
        self._lease: LeaseKeeper | None = None
        self._stop = asyncio.Event()
        self._only: frozenset[str] | None = None  # the sources of this pass; None: all
        self._mirror: KraviaMirror | None = None

    def request_stop(self) -> None:
        """Finish what is in flight, start nothing new: workers take no new case, a case takes
        no next step and no payment is sent after this. Each call already sent still has its
        outcome journaled; the pass then ends with status `stopped`. Safe to call at any time
        from the event loop's thread (a signal handler)."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    async def run(
        self,
        *,
        dry_run: bool = False,
        command: str = "reconcile",
        sources: Collection[str] | None = None,
        lease: LeaseKeeper | None = None,
    ) -> RunSummary:
        """One pass over every source, or over the named `sources` only. `dry_run` plans
        without writing or calling anything. `lease`: the writer lease as held by the caller
        (the daemon holds it between passes); without one the pass takes the lease itself and
        gives it up at the end (`LeaseHeldError` when another process holds it)."""
        if sources is not None:
            unknown = set(sources) - {source.name for source in self.settings.sources}
            if unknown:
                raise ValueError(f"no such source: {', '.join(sorted(unknown))}")
        self._only = None if sources is None else frozenset(sources)
        started = self.clock()
        clock_start = time.monotonic()
        summary = RunSummary(run_id=None, started_at=started)
        if dry_run:
            try:
                await self._pass(summary, dry_run=True)
            except PassFailedError as exc:
                summary.fail(str(exc))
            summary.status = finished_status(summary.status, summary.counts, summary.problems)
            summary.duration_seconds = time.monotonic() - clock_start
            return summary
        if self.client is None:
            raise ValueError("a client is needed to apply a plan")
        keeper = lease or self._lease_keeper()
        if lease is None:
            keeper.acquire()
        self._lease = keeper
        try:
            keeper.check()
            self._run_id = self.store.start_run(
                holder=keeper.holder or "?", command=command, now=started
            )
            summary.run_id = self._run_id
            await self._applied_pass(summary, clock_start)
            if keeper.lost is not None and summary.status != RunStatus.FAILED:
                summary.fail(keeper.lost)
            summary.status = finished_status(summary.status, summary.counts, summary.problems)
            self._finish_run(summary, clock_start)
        finally:
            self._lease = None
            if lease is None:
                keeper.release()
        log.info(
            "run finished",
            run_id=summary.run_id,
            status=summary.status,
            duration_s=round(summary.duration_seconds, 3),
            remote_calls=self.client.stats.total(),
            **dict(sorted(summary.counts.items())),
            **summary.money.log_fields(),
        )
        return summary

    async def _applied_pass(self, summary: RunSummary, clock_start: float) -> None:
        """The pass with its writes group-committed; what stops it is in the summary."""
        try:
            async with GroupCommitter(self.store) as committer:
                self._committer = committer
                await self._pass(summary, dry_run=False)
        except (
            PassFailedError,
            StateWriteError,
            LeaseLostError,
            StateConflictError,
            StateError,
        ) as exc:
            summary.fail(str(exc))
        except BaseException as exc:  # interrupted or a bug: the run row still says so
            summary.fail(f"{type(exc).__name__}: {exc}")
            self._finish_run(summary, clock_start)
            raise
        finally:
            self._committer = None

    def _lease_keeper(self) -> LeaseKeeper:
        """A keeper for a pass of its own; losing the lease stops the pass."""
        return LeaseKeeper.stopping(
            self.store,
            ttl=timedelta(seconds=self.settings.state.lease_seconds),
            clock=self.clock,
            stop=self.request_stop,
        )

    def _finish_run(self, summary: RunSummary, clock_start: float) -> None:
        assert self.client is not None  # noqa: S101 - run() checks
        assert self._run_id is not None  # noqa: S101 - started before
        summary.close(self.client, clock_start=clock_start)
        self.store.finish_run(
            self._run_id,
            status=summary.status,
            counts=summary.as_dict()["counts"]
            | summary.money.log_fields()
            | {"remote_calls": self.client.stats.total()},
            now=self.clock(),
            error=summary.error,
        )

    async def _pass(self, summary: RunSummary, *, dry_run: bool) -> None:
        self.target.check_target(dry_run=dry_run)
        with WorkList() as work:
            try:
                await self._pass_with(work, summary, dry_run=dry_run)
            except WorkListError as exc:  # the drive stops on its own; this is before it
                raise PassFailedError(str(exc)) from exc

    async def _pass_with(self, work: WorkList, summary: RunSummary, *, dry_run: bool) -> None:
        holds = {invoice: row["reason"] for invoice, row in self.store.holds().items()}
        reads = await self._read_sources(work, summary, holds, dry_run=dry_run)
        if work.broken is not None:
            raise PassFailedError(work.broken)
        if not dry_run:
            self.progress.start(len(work))
            await self._canary(work, summary)
        held = StageOutcome()
        holds_in_kravia = HoldsInKravia(
            self.settings,
            self.store,
            client=self.client,
            committer=self._committer,
            lease=self._lease,
            clock=self.clock,
            run_id=self._run_id,
            holds=holds,
        )
        try:
            await holds_in_kravia.flag(held, dry_run=dry_run)
        finally:
            held.add_to(summary)
        if dry_run:
            await list_plan(
                self.settings,
                self.store,
                work,
                summary,
                mirror=self._mirror,
                held=holds_in_kravia.planned(),
                kept_out=reads.kept_out_list,
                payment_work=reads.payment_work,
                now=self.clock(),
            )
            return
        try:
            await self._apply(work, summary)
        finally:
            self.target.record_target()
        assert self.client is not None  # noqa: S101 - run() checks
        assert self._lease is not None  # noqa: S101 - run() holds one
        await PaymentStage(
            self.settings,
            self.store,
            self.client,
            timing=self.timing,
            clock=self.clock,
            run_id=self._run_id,
            lease=self._lease,
            committer=self.committer,
            should_stop=lambda: self.stopping,
        ).forward(reads.payment_work, summary)
        if not self.stopping:
            await self._pull_back().refresh(summary, kept_out=reads.kept_out)
            await self._pull_back().flag_gone(summary, reads.gone_in_kravia)
            await self._pull_back().clear_back_in_source(summary, reads.back_in_source)
        await self._pull_back().flag_duplicates(summary)
        if self.stopping and summary.status != RunStatus.FAILED:
            summary.status = RunStatus.STOPPED

    async def _read_sources(
        self, work: WorkList, summary: RunSummary, holds: dict[str, str], *, dry_run: bool
    ) -> _Reads:
        """Read the pass's sources into `work`, in order, until a stop is asked for."""
        reads = _Reads()
        self._mirror = KraviaMirror(
            self.store,
            self.client,
            clock=self.clock,
            gather=min(0.5, self.settings.retry.settle_seconds),
        )
        reader = SourceReader(
            self.settings,
            self.store,
            target=self.target,
            now=self.clock(),
            mirror=self._mirror,
            holds=holds,
            confirm_gone=self.confirm_gone,
        )
        for source in self.settings.sources:
            if self._only is not None and source.name not in self._only:
                continue
            if self.stopping:
                break
            read = await reader.read_into(work, source, summary, dry_run=dry_run)
            if read is not None:
                reads.payment_work.extend(read.payment_work)
                reads.gone_in_kravia.extend(read.gone_in_kravia)
                reads.back_in_source.extend(read.back_in_source)
                reads.kept_out += read.diff.rejections.kept_out
                if dry_run:
                    reads.kept_out_list.add(source.name, read.diff.quarantine.values())
        return reads

    async def _canary(self, work: WorkList, summary: RunSummary) -> None:
        """First contact (see `kravia_sync.engine.canary.canary_stage`)."""
        if self.settings.policy.canary == "off":
            return
        assert self.client is not None  # noqa: S101 - applied passes have one

        async def apply(items: list[WorkItem]) -> list[CaseState]:
            finals: list[CaseState] = []
            await self._apply(items, summary, finals=finals)
            return finals

        canary = CanaryRun(self.settings, self.store, self.client, self.timing, self.clock)
        await canary_stage(canary, work, summary, apply, on_failed=self.target.record_target)

    async def _apply(
        self,
        work: WorkList | list[WorkItem],
        summary: RunSummary,
        *,
        finals: list[CaseState] | None = None,
    ) -> None:
        """Drive the cases of `work` (see `kravia_sync.engine.pool`)."""
        assert self.client is not None  # noqa: S101 - run() checks
        assert self._lease is not None  # noqa: S101 - run() holds one
        assert self._mirror is not None  # noqa: S101 - the pass made one
        driver = CaseDriver(
            self.settings,
            client=self.client,
            committer=self.committer,
            mirror=self._mirror,
            lease=self._lease,
            clock=self.clock,
            run_id=self._run_id,
            stop=self._stop,
        )
        pool = CasePool(
            self.settings,
            driver,
            timing=self.timing,
            clock=self.clock,
            stop=self._stop,
            progress=self.progress,
        )
        await pool.drive(work, summary, finals=finals)

    @property
    def committer(self) -> GroupCommitter:
        if self._committer is None:
            raise RuntimeError("not inside a pass")
        return self._committer

    def _pull_back(self) -> StatusPullBack:
        assert self.client is not None  # noqa: S101 - run() and refresh check
        return StatusPullBack(
            self.settings,
            self.store,
            client=self.client,
            clock=self.clock,
            mirror=self._mirror,
            run_id=self._run_id,
        )

    async def refresh(self) -> RunSummary:
        """Only the status pull-back (`kravia-sync refresh`), under the writer lease."""
        if self.client is None:
            raise ValueError("a client is needed to refresh")
        return await refresh_statuses(
            self.settings, self.store, self.client, clock=self.clock, lease=self._lease_keeper()
        )
