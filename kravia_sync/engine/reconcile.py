"""One pass: read every source, diff against the state store, plan, and apply against Kravia.

The decisions are made by the pure functions in `plan`, `lifecycle` and `gate`; the case
driver (`kravia_sync.engine.driver`) takes each case through its calls, and this module runs the
pass around it: the writer lease, reading and diffing the sources, holds, payments, the status
pulled back from Kravia, and the run summary.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import threading
import time
from collections import Counter
from collections.abc import Callable, Collection, Iterator
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Protocol, TypeVar
from zoneinfo import ZoneInfo

from kravia_sync.connector import (
    Connector,
    ConnectorError,
    PaymentRecord,
    RecordError,
    RecordStamp,
    SourceRecord,
    StampedRead,
    load_connector,
)
from kravia_sync.documents import read_copy
from kravia_sync.engine.canary import CanaryFailedError, CanaryRun
from kravia_sync.engine.diff import (
    ATTENTION_PHASES,
    QUIET_PHASES,
    Lookup,
    SourceDiff,
    WorkItem,
    WorkList,
)
from kravia_sync.engine.driver import (
    CaseDriver,
    PassStoppedError,
    Preview,
    kravia_may_hold,
    preview,
    timing_of,
)
from kravia_sync.engine.errors import PassFailedError
from kravia_sync.engine.forwarding import HAS_KRAVIA_CASE, AuthRefusedError, PaymentForwarder
from kravia_sync.engine.holds import HoldsInKravia, HoldsOutcome
from kravia_sync.engine.mirror import KraviaMirror
from kravia_sync.engine.status import StatusPullBack
from kravia_sync.engine.summary import PlannedAction, RunStatus, RunSummary, SourceResult
from kravia_sync.kravia.client import KraviaClient
from kravia_sync.kravia.errors import KraviaError, backoff_delay
from kravia_sync.lifecycle import (
    IN_KRAVIA_PHASES,
    CaseState,
    CaseSummary,
    Phase,
    Step,
    next_step,
)
from kravia_sync.logging import get_logger, redact, register_secrets
from kravia_sync.model import Invoice
from kravia_sync.payments import (
    CHANGED_AFTER_SENT,
    PaymentPhase,
    PaymentPlan,
    PaymentState,
    PaymentStep,
    PayoutRule,
    next_payment_step,
    plan_payments,
)
from kravia_sync.settings import ConfigError, Settings, SourceConfig
from kravia_sync.state.committer import GroupCommitter, StateWriteError
from kravia_sync.state.errors import LeaseLostError, StateConflictError, StateError
from kravia_sync.state.lease import LeaseKeeper
from kravia_sync.state.source_read import SourceRead
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
_T = TypeVar("_T")
_Stamped = RecordStamp | PaymentRecord | RecordError  # an item of a stamped read's first phase


class Progress(Protocol):
    def start(self, total: int) -> None: ...

    def advance(self) -> None: ...


class _NoProgress:
    def start(self, total: int) -> None:
        del total

    def advance(self) -> None:
        return


class GoneBreakerError(PassFailedError):
    """Too many known cases are missing from one complete read: a person must confirm."""


def build_connector(settings: Settings, source: SourceConfig) -> Connector:
    """The configured connector for `source`; a bad setting is a `ConfigError` naming the key."""
    from pydantic import ValidationError  # noqa: PLC0415

    try:
        connector_class = load_connector(source.connector)
    except (LookupError, TypeError) as exc:
        raise ConfigError(f"sources.{source.name}.connector: {exc}") from None
    try:
        connector = connector_class.from_settings(source.settings, base_dir=settings.base_dir)
    except ValidationError as exc:
        details = "; ".join(
            f"sources.{source.name}.settings.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
            for e in exc.errors(include_url=False, include_input=False)
        )
        raise ConfigError(details) from None
    connector.timezone = ZoneInfo(settings.policy.timezone)
    register_secrets(connector.secret_values())
    return connector


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
        self.client = client
        self.clock = clock
        self.progress = progress or _NoProgress()
        self.timing = timing_of(settings)
        self._committer: GroupCommitter | None = None
        self._run_id: int | None = None
        self._lease: LeaseKeeper | None = None
        self._payment_work: list[PaymentState] = []
        self._payment_problems: list[dict[str, str]] = []
        self._holds: dict[str, str] = {}
        self._gone_in_kravia: list[str] = []
        # Invoices the gate kept out in this pass: Kravia may hold some of them already.
        self._kept_out = 0
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

    # --- the pass -----------------------------------------------------------------------------
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
                summary.status = RunStatus.FAILED
                summary.error = redact(str(exc))
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
                summary.status = RunStatus.FAILED
                summary.error = keeper.lost
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
            summary.status = RunStatus.FAILED
            summary.error = redact(str(exc))
        except BaseException as exc:  # interrupted or a bug: the run row still says so
            summary.status = RunStatus.FAILED
            summary.error = redact(f"{type(exc).__name__}: {exc}")
            self._finish_run(summary, clock_start)
            raise
        finally:
            self._committer = None

    def _lease_keeper(self) -> LeaseKeeper:
        """A keeper for a pass of its own; losing the lease stops the pass (nothing more is
        sent: every write after that is refused by the fence anyway)."""
        loop = asyncio.get_running_loop()

        def lost(why: str) -> None:
            log.error("stopping the pass", reason=why)
            loop.call_soon_threadsafe(self.request_stop)

        return LeaseKeeper(
            self.store,
            ttl=timedelta(seconds=self.settings.state.lease_seconds),
            clock=self.clock,
            on_lost=lost,
        )

    def _finish_run(self, summary: RunSummary, clock_start: float) -> None:
        assert self.client is not None  # noqa: S101 - run() checks
        assert self._run_id is not None  # noqa: S101 - started before
        summary.duration_seconds = time.monotonic() - clock_start
        summary.remote_calls = dict(self.client.stats.counts)
        summary.pacing = self.client.pacing().as_dict()
        self.store.finish_run(
            self._run_id,
            status=summary.status,
            counts=summary.as_dict()["counts"] | {"remote_calls": self.client.stats.total()},
            now=self.clock(),
            error=summary.error,
        )

    async def _pass(self, summary: RunSummary, *, dry_run: bool) -> None:
        self._check_target(dry_run=dry_run)
        with WorkList() as work:
            await self._pass_with(work, summary, dry_run=dry_run)

    async def _pass_with(self, work: WorkList, summary: RunSummary, *, dry_run: bool) -> None:
        self._payment_work = []
        self._holds = {invoice: row["reason"] for invoice, row in self.store.holds().items()}
        self._gone_in_kravia = []
        self._kept_out = 0
        began = self.clock()
        self._mirror = KraviaMirror(
            self.store,
            self.client,
            clock=self.clock,
            gather=min(0.5, self.settings.retry.settle_seconds),
        )
        for source in self.settings.sources:
            if self._only is not None and source.name not in self._only:
                continue
            if self.stopping:
                break
            await self._read_into(work, source, summary, dry_run=dry_run)
        if work.broken is not None:
            raise PassFailedError(work.broken)
        if not dry_run:
            self.progress.start(len(work))
            await self._canary(work, summary, began)
        held = HoldsOutcome()
        try:
            await HoldsInKravia(
                self.settings,
                self.store,
                client=self.client,
                committer=self._committer,
                lease=self._lease,
                clock=self.clock,
                run_id=self._run_id,
                holds=self._holds,
            ).flag(held, dry_run=dry_run)
        finally:
            summary.counts.update(held.counts)
            summary.problems.extend(held.problems)
        if dry_run:
            await self._preview(work, summary)
            return
        try:
            await self._apply(work, summary, began)
        finally:
            self._record_target()
        await self._forward_payments(summary)
        if not self.stopping:
            await self._pull_back().refresh(summary, kept_out=self._kept_out)
            gone, self._gone_in_kravia = self._gone_in_kravia, []
            await self._pull_back().flag_gone(summary, gone)
        await self._pull_back().flag_duplicates(summary)
        if self.stopping and summary.status != RunStatus.FAILED:
            summary.status = RunStatus.STOPPED

    async def _read_into(
        self, work: WorkList, source: SourceConfig, summary: RunSummary, *, dry_run: bool
    ) -> None:
        """Read one source and put its work in `work`; a source that fails leaves none."""
        result = SourceResult(source.name)
        summary.sources.append(result)
        try:
            self._check_prefix(source, dry_run=dry_run)
            connector = build_connector(self.settings, source)
            # In a thread: a long read must not hold up the event loop.
            diff = await asyncio.to_thread(
                self._read_source, source, connector, work, result, dry_run=dry_run
            )
        except (ConnectorError, ConfigError, OSError, StateConflictError) as exc:
            work.drop_source(source.name)  # nothing of a source read in part is driven
            result.status = "failed"
            result.error = redact(f"{type(exc).__name__}: {exc}")
            summary.status = RunStatus.FAILED
            log.error("source read failed", source=source.name, error=result.error)  # noqa: TRY400
        else:
            self._kept_out += diff.kept_out
            summary.problems.extend(diff.problems())
            summary.problems.extend(self._payment_problems)
        self._payment_problems = []
        summary.counts.update(result.counts)

    async def _preview(self, work: WorkList, summary: RunSummary) -> None:
        """What `plan` shows: each case's next step, and the payments due."""
        now = self.clock()
        for item in work:
            shown = await asyncio.to_thread(preview, self.settings, item, now, mirror=self._mirror)
            summary.planned.append(_planned(item, shown))
        summary.counts["payments_to_forward"] += self._payments_due(self._payment_work, now)
        self._payment_work = []

    async def _canary(self, work: WorkList, summary: RunSummary, began: datetime) -> None:
        """First contact (`kravia_sync.engine.canary`): while no contract with this Kravia is
        confirmed, one case goes end to end and is read back before the rest of the work
        (it is taken out of `work`); when Kravia's answers differ from what the engine
        reads, the pass stops here."""
        if self.settings.policy.canary == "off":
            return
        assert self.client is not None  # noqa: S101 - applied passes have one

        async def apply(items: list[WorkItem]) -> list[CaseState]:
            finals: list[CaseState] = []
            await self._apply(items, summary, began, finals=finals)
            return finals

        canary = CanaryRun(self.settings, self.store, self.client, self.timing, self.clock)
        try:
            outcome = await canary.before_work(work, apply)
        except CanaryFailedError as exc:
            self._record_target()
            summary.problems.extend(
                {
                    "source": "kravia",
                    "record": self.settings.kravia.base_url,
                    "field": finding.assumption,
                    "reason": f"came back: {finding.seen}"
                    + (f"; {finding.note}" * bool(finding.note)),
                }
                for finding in exc.findings
                if finding.verdict.value == "differs"
            )
            summary.counts["canary_differs"] += 1
            raise PassFailedError(str(exc)) from None
        except KraviaError as exc:
            raise PassFailedError(exc.stop_reason("search")) from None
        if outcome not in {"known", "waiting"}:
            summary.counts[f"canary_{outcome}"] += 1

    def _payments_due(self, payments: list[PaymentState], now: datetime) -> int:
        """How many of these payments a pass would send or verify now (a payment waiting for
        its invoice to reach Kravia, or backing off, is not work for this pass)."""
        invoices = {aid for payment in payments for aid in payment.invoices}
        cases = self.store.load_cases_by_id(invoices)
        in_kravia = {
            aid: case.kravia_id if case.phase in HAS_KRAVIA_CASE else None
            for aid, case in cases.items()
        }
        return sum(
            next_payment_step(payment, in_kravia=in_kravia, now=now, settle=self.timing.settle).step
            in {PaymentStep.SEND, PaymentStep.VERIFY}
            for payment in payments
        )

    def _check_target(self, *, dry_run: bool) -> None:
        """A state store keeps one Kravia's cases (its ids, its mirror): used against another
        Kravia or creditor, every case would look known there, and payments would reach the
        wrong cases. The first pass that reached Kravia records which; any other is
        refused."""
        target = self._target()
        stored = self.store.meta(KRAVIA_TARGET)
        if stored == target or (stored is None and dry_run):
            return
        if stored is not None:
            raise PassFailedError(
                f"this state store belongs to Kravia at {stored}, but the configuration names "
                f"{target}. A state store holds one Kravia's cases: give this Kravia a state "
                "store of its own (state.path), or put kravia.base_url and kravia.creditor_id "
                "back"
            )

    def _target(self) -> str:
        return kravia_target(self.settings)

    def _record_target(self) -> None:
        """Once a case of this store is in Kravia, the store is that Kravia's (a refused
        configuration, a wrong creditor, leaves nothing to protect yet)."""
        if self.store.meta(KRAVIA_TARGET) is None and self.store.has_kravia_cases():
            self.store.set_meta(KRAVIA_TARGET, self._target())

    def _check_prefix(self, source: SourceConfig, *, dry_run: bool) -> None:
        """A source's accountingInvoiceIds are its id_prefix and its own ids, and Kravia keeps
        them for good: the prefix may not change while the source has cases (every open
        invoice would look new and be registered again)."""
        stored = self.store.source_prefix(source.name)
        if stored == source.id_prefix:
            return
        cases = self.store.source_case_count(source.name)
        if stored is None and not self.store.cases_outside_prefix(source.name, source.id_prefix):
            stored = source.id_prefix  # an older state store: its cases agree with the file
        elif stored is None:
            stored = "(another prefix)"
        elif cases == 0:
            stored = source.id_prefix  # nothing sent under the old one yet
        if stored != source.id_prefix:
            raise ConfigError(
                f"sources.{source.name}.id_prefix: changed to {source.id_prefix!r} while "
                f"{cases} case(s) of this source are known under {stored!r}; Kravia keeps the "
                "accountingInvoiceIds it was sent, so every open invoice would look new. Put "
                f"the prefix back to {stored!r}. (To keep several sources apart, give the new "
                "source a prefix of its own; to start this source afresh under a new prefix, "
                "use a new source name and a new state store, knowing Kravia's cases are "
                "matched by accountingInvoiceId only.)"
            )
        if not dry_run:
            self.store.set_meta(f"id_prefix:{source.name}", source.id_prefix)

    async def _forward_payments(self, summary: RunSummary) -> None:
        """Payments and credit notes, after the cases they cover had their turn."""
        work, self._payment_work = self._payment_work, []
        if not work:
            return
        assert self.client is not None  # noqa: S101 - run() checks
        assert self._lease is not None  # noqa: S101 - run() holds one
        await self.committer.flush()  # every case outcome written before payments read cases
        forwarder = PaymentForwarder(
            self.store,
            self.client,
            clock=self.clock,
            settle=self.timing.settle,
            retry_in=lambda attempts: timedelta(
                seconds=backoff_delay(
                    attempts,
                    base=self.timing.backoff_base.total_seconds(),
                    cap=self.timing.backoff_cap.total_seconds(),
                )
            ),
            run_id=self._run_id,
            lease=self._lease,
            max_inline_wait=self.settings.retry.max_inline_wait_seconds,
            max_waits=self.settings.retry.retries_per_pass,
            should_stop=lambda: self.stopping,
        )
        try:
            outcome = await forwarder.forward(work)
        except AuthRefusedError as exc:
            raise PassFailedError(str(exc)) from None
        summary.counts.update(outcome.counts)
        summary.problems.extend(outcome.problems)

    @property
    def committer(self) -> GroupCommitter:
        if self._committer is None:
            raise RuntimeError("not inside a pass")
        return self._committer

    # --- reading and diffing ------------------------------------------------------------------
    def _read_source(
        self,
        source: SourceConfig,
        connector: Connector,
        work: WorkList,
        result: SourceResult,
        *,
        dry_run: bool,
    ) -> SourceDiff:
        """Read one source completely, a chunk at a time, and diff it against the state."""
        now = self.clock()
        mirror = self._mirror

        def kravia_has(invoice: Invoice, case: CaseState | None) -> bool:
            return mirror is not None and kravia_may_hold(
                self.settings, mirror, source.name, invoice, case
            )

        def new_diff() -> SourceDiff:
            return SourceDiff(
                source,
                policy=self.settings.policy,
                now=now,
                check_document=lambda invoice: read_copy(invoice.document),
                payments=source.payments or connector.payments_source(),
                holds=self._holds,
                kravia_has=kravia_has,
                work=work,
            )

        with _bulk_reading():
            read = self._read_stamped(source, connector, new_diff())
            if read is None:
                work.drop_source(source.name)  # what the stamped read added, if anything
                read = self._read_whole(source, connector, new_diff())
        diff, gone, gone_settling = read
        diff.finish(
            self.store.load_cases_by_id(diff.wanted_cases()),
            gone=gone,
            gone_settling=self.store.load_cases_by_id(gone_settling).values(),
        )
        plan = self._plan_payments(source, diff, now)
        result.counts.update(diff.counts)
        for written in plan.writes:
            if written.note is not None and written.note.startswith(CHANGED_AFTER_SENT):
                result.counts["payments_changed_after_sent"] += 1
                self._payment_problems.append(
                    {
                        "source": source.name,
                        "record": f"payment {written.payment_id}",
                        "field": "payment",
                        "reason": written.note,
                    }
                )
            elif written.phase is not PaymentPhase.NEW:
                result.counts[f"payments_{written.phase.value}"] += 1
        if not dry_run:
            if diff.updates or plan.writes:
                # One transaction: a drop in an amount is never stored without its payment.
                stored = self.store.write_payments(plan.writes, [], diff.updates)
                diff.stored(stored)
            self.store.sync_quarantine(source.name, diff.quarantine, complete=True, now=now)
        self._payment_work.extend(plan.work)
        return diff

    def _read_whole(
        self, source: SourceConfig, connector: Connector, diff: SourceDiff
    ) -> tuple[SourceDiff, int, list[str]]:
        """The plain read: every record built, looked up in the state a chunk at a time."""
        with self.store.source_read(source.name) as state:
            for chunk in _chunked(connector.read(), READ_CHUNK):
                diff.add_chunk(chunk, *_triaged(diff, state, chunk))
            gone, gone_settling = self._unseen(source, state)
        return diff, gone, gone_settling

    def _read_stamped(
        self, source: SourceConfig, connector: Connector, diff: SourceDiff
    ) -> tuple[SourceDiff, int, list[str]] | None:
        """The two-phase read where the connector offers one: stamps looked up in the state a
        chunk at a time; every STAMPED_BATCH items that need a look, the full records of those
        stamps are fetched and everything is added in read order (duplicates are judged as in
        a plain read). None when the connector has none, when more than STAMPED_MAX_BATCHES
        batches are needed (a first sync: a plain read is cheaper), or when the second phase
        misses a record of the first: then the caller reads the source whole."""
        stamped = connector.stamped_read()
        if stamped is None:
            return None
        pending: list[tuple[_Stamped, Lookup]] = []
        batches = 0
        with stamped, self.store.source_read(source.name) as state:
            for chunk in _chunked(stamped.stamps(), READ_CHUNK):
                pending.extend(diff.add_stamps(chunk, *_triaged(diff, state, chunk)))
                if len(pending) < STAMPED_BATCH:
                    continue
                batches += 1
                if batches > STAMPED_MAX_BATCHES:
                    log.info(
                        "many records to look at: reading the source whole",
                        source=source.name,
                        at_least=batches * STAMPED_BATCH,
                    )
                    return None
                if not self._add_full_records(source, diff, stamped, pending):
                    return None
                pending = []
            if pending and not self._add_full_records(source, diff, stamped, pending):
                return None
            gone, gone_settling = self._unseen(source, state)
        return diff, gone, gone_settling

    @staticmethod
    def _add_full_records(
        source: SourceConfig,
        diff: SourceDiff,
        stamped: StampedRead,
        pending: list[tuple[_Stamped, Lookup]],
    ) -> bool:
        """Fetch the full records of the pending stamps and add everything pending to the
        diff in read order; False (nothing added) when a stamp finds no record."""
        stamps = [item for item, _ in pending if isinstance(item, RecordStamp)]
        records = _matched(stamps, stamped.records(_distinct(stamps))) if stamps else []
        if isinstance(records, str):
            log.warning(
                "a record of the first phase was not read again in the second (a volatile "
                "function such as random() or clock_timestamp() in the query?): reading the "
                "source whole",
                source=source.name,
                record=records,
            )
            return False
        full = iter(records)
        for item, lookup in pending:
            if isinstance(item, RecordStamp):
                diff.add(replace(next(full), key=item.key), lookup)
            else:
                diff.add(item, lookup)
        return True

    def _unseen(self, source: SourceConfig, state: SourceRead) -> tuple[int, list[str]]:
        """After a complete read: how many stored cases of the source it did not have, and
        those with a lost answer to settle; the circuit breaker first."""
        gone, gone_settling = state.unseen()
        self._check_gone(source, gone, state.known())
        if gone:
            self._gone_in_kravia.extend(state.unseen_in(_IN_KRAVIA_VALUES))
        return gone, gone_settling

    def _check_gone(self, source: SourceConfig, gone: int, known: int) -> None:
        """The circuit breaker: a complete read that misses more than `max_gone_share` of a
        source's known cases stops the pass before anything is written or sent."""
        policy = self.settings.policy
        if known < policy.gone_breaker_min_cases or gone <= policy.max_gone_share * known:
            return
        if source.name in self.confirm_gone:
            log.warning("large disappearance confirmed", source=source.name, gone=gone, known=known)
            return
        raise GoneBreakerError(
            f"{gone} of the {known} cases known from source {source.name!r} "
            f"({gone / known:.0%}) are not in its read, more than max_gone_share "
            f"({policy.max_gone_share:.0%}); the pass stopped and changed nothing. Check the "
            f"source; if they really are gone, run: kravia-sync reconcile --confirm-gone "
            f"{source.name}"
        )

    def _pull_back(self) -> StatusPullBack:
        assert self.client is not None  # noqa: S101 - run() and refresh check
        return StatusPullBack(
            self.settings, self.store, client=self.client, clock=self.clock, mirror=self._mirror
        )

    async def refresh(self) -> RunSummary:
        """Only the status pull-back (`kravia-sync refresh`), under the writer lease."""
        if self.client is None:
            raise ValueError("a client is needed to refresh")
        summary = RunSummary(run_id=None, started_at=self.clock())
        clock_start = time.monotonic()
        keeper = self._lease_keeper()
        keeper.acquire()
        self._mirror = KraviaMirror(self.store, self.client, clock=self.clock)
        try:
            await self._pull_back().refresh(summary, force=True)
        except (PassFailedError, LeaseLostError) as exc:
            summary.status = RunStatus.FAILED
            summary.error = redact(str(exc))
        finally:
            keeper.release()
        if summary.counts["status_refresh_failed"]:
            summary.status = RunStatus.FAILED
            summary.error = self._mirror.failure
        summary.duration_seconds = time.monotonic() - clock_start
        summary.remote_calls = dict(self.client.stats.counts)
        summary.pacing = self.client.pacing().as_dict()
        return summary

    def _plan_payments(self, source: SourceConfig, diff: SourceDiff, now: datetime) -> PaymentPlan:
        """The payments of this read against the stored ones (see `kravia_sync.payments`)."""
        ids = {payment.payment_id for _, payment in diff.payments}
        stored = self.store.load_payments(source.name, ids, unfinished=True)
        payouts = self.settings.policy.payouts
        rule = PayoutRule(
            payers=frozenset(name.casefold() for name in payouts.payers),
            references=tuple(prefix.casefold() for prefix in payouts.reference_prefixes),
            kids=frozenset(payouts.kids),
            accounts=frozenset(payouts.accounts),
        )
        return plan_payments(
            diff.payments,
            stored,
            source=source.name,
            rule=rule,
            now=now,
        )

    # --- applying -----------------------------------------------------------------------------
    async def _apply(
        self,
        work: WorkList | list[WorkItem],
        summary: RunSummary,
        began: datetime,
        *,
        finals: list[CaseState] | None = None,
    ) -> None:
        """Drive every case with a fixed pool of workers (twice the calls allowed in flight, so
        the next intents are committed while calls are out), counting where each ends (kept
        in `finals` when given). Memory does not grow with the number of cases: the work
        list gives them out a chunk at a time."""
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
            pass_began=began,
            stop=self._stop,
        )
        pending = iter(work)

        async def worker() -> None:
            for item in pending:
                if self.stopping:
                    return
                try:
                    final = await driver.drive(item)
                    self._tally(final, summary)
                    if finals is not None:
                        finals.append(final)
                except PassStoppedError as exc:
                    raise PassFailedError(str(exc)) from None
                except (PassFailedError, StateWriteError, LeaseLostError):
                    raise
                except Exception as exc:  # one case's unexpected failure never stops the rest
                    log.exception(
                        "case failed unexpectedly",
                        accounting_invoice_id=item.case.accounting_invoice_id,
                    )
                    summary.counts["errors"] += 1
                    summary.problems.append(
                        {
                            "source": item.case.source,
                            "record": item.case.record_key,
                            "field": "engine",
                            "reason": redact(f"{type(exc).__name__}: {exc}"),
                        }
                    )
                finally:
                    self.progress.advance()

        workers = [
            asyncio.create_task(worker())
            for _ in range(min(len(work), self.settings.kravia.max_in_flight * 2))
        ]
        try:
            await asyncio.gather(*workers)
        except BaseException:
            for task in workers:
                task.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
            raise
        finally:
            summary.counts.update(driver.log.counts)
        self._judge_run(summary)

    def _tally(self, case: CaseState, summary: RunSummary) -> None:
        """Count where a case ended."""
        if case.phase is Phase.STARTED:
            return
        if case.phase in ATTENTION_PHASES:
            summary.counts[case.phase.value] += 1
            summary.problems.append(
                {
                    "source": case.source,
                    "record": case.record_key,
                    "field": "kravia",
                    "reason": case.last_error or case.phase.value,
                }
            )
            return
        decision = next_step(
            case, start=self.settings.policy.start, now=self.clock(), timing=self.timing
        )
        summary.counts["awaiting_approval" if decision.step is Step.NONE else "deferred"] += 1

    def _judge_run(self, summary: RunSummary) -> None:
        """Whether the run needs attention, from what it counted."""
        needs_person = summary.counts["rejected"] + summary.counts["needs_review"]
        if summary.status != RunStatus.FAILED and (
            summary.problems or summary.counts["deferred"] or needs_person
        ):
            summary.status = RunStatus.ATTENTION


READ_CHUNK = 2000  # records looked up in the state store together
# A stamped read fetches full records in batches of this many items that need a look (held
# in memory until added), and reads the source whole instead when it would take more than
# STAMPED_MAX_BATCHES of them (each batch runs the source's query once more).
STAMPED_BATCH = 10_000
STAMPED_MAX_BATCHES = 4
KRAVIA_TARGET = "kravia_target"  # meta key: the Kravia (base URL, creditor) of this store
# Phases of a case in Kravia, for the gone check (needs_review ones may be collecting too).
_IN_KRAVIA_VALUES = frozenset(phase.value for phase in IN_KRAVIA_PHASES | {Phase.NEEDS_REVIEW})


def _chunked(items: Iterator[_T], size: int) -> Iterator[list[_T]]:
    chunk: list[_T] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


_BULK_READS = threading.Lock()
_bulk_depth = 0


@contextlib.contextmanager
def _bulk_reading() -> Iterator[None]:
    """While a source is read, the cyclic garbage collector leaves alone the objects that
    existed before (kravia-sync's and its libraries' own) and runs less often: a read makes
    a few short-lived objects per row, freed as it goes, and a read of a million rows would
    otherwise spend a fifth of its time rescanning everything else. Restored afterwards (by
    the outermost of overlapping reads); a collector switched off stays off."""
    global _bulk_depth  # noqa: PLW0603 - one process-wide setting, counted under a lock
    with _BULK_READS:
        _bulk_depth += 1
        if _bulk_depth == 1:
            thresholds = gc.get_threshold()
            gc.freeze()
            if thresholds[0]:
                gc.set_threshold(max(thresholds[0], 50_000), *thresholds[1:])
            _SAVED_THRESHOLDS[:] = thresholds
    try:
        yield
    finally:
        with _BULK_READS:
            _bulk_depth -= 1
            if _bulk_depth == 0:
                gc.set_threshold(*_SAVED_THRESHOLDS)
                gc.unfreeze()


_SAVED_THRESHOLDS: list[int] = []


def _triaged(
    diff: SourceDiff,
    state: SourceRead,
    chunk: list[SourceRecord | PaymentRecord | RecordError] | list[_Stamped],
) -> tuple[list[tuple[str, str] | None], dict[str, CaseSummary | None], list[str | None]]:
    """Each item's identity, and what the state says of the identified ones (see
    `SourceRead.triage`)."""
    identities = [diff.identify(item) for item in chunk]
    looked_at, earlier = state.triage(
        [
            (identity[0], item.key, identity[1])
            for item, identity in zip(chunk, identities, strict=True)
            if identity is not None
        ],
        quiet=QUIET_PHASES,
    )
    return identities, looked_at, earlier


def _distinct(stamps: list[RecordStamp]) -> list[RecordStamp]:
    """The stamps to ask full records for: one per digest."""
    return list({stamp.digest: stamp for stamp in stamps}.values())


def _matched(
    stamps: list[RecordStamp], records: Iterator[SourceRecord]
) -> list[SourceRecord] | str:
    """The full record of each stamp, in the stamps' order. Records with the same digest are
    the same row content, so any of them serves any of those stamps; a record nobody asked
    for is passed over. A stamp left without a record (the source changed between the
    phases, which one snapshot should prevent) is returned instead: its key."""
    records_by_digest: dict[str, list[SourceRecord]] = {}
    need = Counter(stamp.digest for stamp in stamps)
    for record in records:
        digest = record.digest or ""
        found = records_by_digest.setdefault(digest, [])
        if len(found) < need[digest]:
            found.append(record)
    matched: list[SourceRecord] = []
    for stamp in stamps:
        candidates = records_by_digest.get(stamp.digest)
        if not candidates:
            return stamp.key
        matched.append(candidates.pop())
    return matched


def kravia_target(settings: Settings) -> str:
    """Which Kravia (base URL and creditor) a state store's cases belong to."""
    return f"{settings.kravia.base_url} creditor {settings.kravia.creditor_id}"


def _planned(item: WorkItem, shown: Preview) -> PlannedAction:
    return PlannedAction(
        source=item.case.source,
        accounting_invoice_id=item.case.accounting_invoice_id,
        invoice_number=item.case.invoice_number,
        change=item.change.value,
        step=shown.step,
        detail=shown.detail,
    )
