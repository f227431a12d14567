"""`kravia-sync daemon`: every source on its own schedule, one pass at a time, stopped cleanly.

- The daemon holds the state store's writer lease for as long as it works (renewed by a
  heartbeat), so a second daemon on the same store waits, says so, and takes over when the
  first stops or its lease expires.
- Passes run one at a time from a queue: a source due while its pass runs is queued once (missed
  runs coalesce into one), so a source never has two passes at once and the state store never
  has two writers. Every source gets a first pass at start-up.
- A failed pass backs off (doubling up to a cap; scheduled runs inside the back-off are
  skipped) and, after `daemon.alert_after_failures` failures in a row, logs an error line
  (`"event": "source failing"`) an operator can alert on; /readyz then answers 503.
- SIGTERM or SIGINT: no new case, step or payment is started, the calls in flight finish and are
  journaled, the lease is released and the process exits 0 (a pass still running after
  `daemon.stop_timeout_seconds` is cut off; the journal keeps the state consistent). A second
  signal exits at once. SIGHUP reloads the configuration file.
- A pass has a deadline, `daemon.pass_timeout_seconds`. Past it the daemon logs an error line
  (`"event": "pass overran"`), /readyz answers 503, and the pass is asked to stop as at SIGTERM;
  still running `daemon.stop_timeout_seconds` later, it is cut off. It counts as a failed pass
  of its source, and the daemon goes on with the next queued source.
- With `webhook.enabled`, Kravia's webhooks are taken on a listener of their own
  (`kravia_sync.service.webhook_server`): each only asks for one case's details to be read, within a
  refresh budget, and only while this daemon holds the writer lease.
- Source reads run in threads, and a thread cannot be cancelled: a read stuck when its pass is
  cut off runs on until its source answers, then stores what it read for that source (it
  never calls Kravia). The daemon does not wait for it, but it counts it (the event loop's
  default executor is the daemon's own, see `_PassThreads`): until it has returned, that
  source's next pass is held back, so two reads never write one source's state at once, and
  the source still counts as overrunning. The same holds for a cut-off pass that does not
  end within a short grace: the daemon goes on without it. Each such read keeps a worker
  thread and its source's connection; a process that exits leaves it behind (`run_daemon`).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import os
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Collection
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, ParamSpec, Protocol, TypeVar

from prometheus_client import Gauge

from kravia_sync.engine.mirror import KraviaMirror
from kravia_sync.engine.reconcile import Reconciler
from kravia_sync.engine.summary import RunStatus, RunSummary
from kravia_sync.kravia.client import KraviaClient
from kravia_sync.kravia.errors import backoff_delay
from kravia_sync.kravia.pacing import PacingSnapshot
from kravia_sync.logging import get_logger, redact
from kravia_sync.schedule import Schedule, parse_schedule
from kravia_sync.service.health import HealthServer
from kravia_sync.service.metrics import Metrics
from kravia_sync.service.scheduling import Scheduler
from kravia_sync.service.webhook_server import WEBHOOK_ROUTE, WebhookServer
from kravia_sync.settings import ConfigError, Settings
from kravia_sync.state.errors import LeaseHeldError, LeaseLostError, StateError
from kravia_sync.state.lease import LeaseKeeper
from kravia_sync.state.store import StateStore
from kravia_sync.state.stored import utc_now

__all__ = ["Daemon", "PassRunner", "run_daemon"]

log = get_logger("kravia_sync.service.daemon")

SUCCESS = frozenset({RunStatus.DONE, RunStatus.ATTENTION})  # attention: the pass worked
# How long a pass cancelled past its deadline (or at the stop timeout) may take to unwind, i.e.
# journal the outcomes it has and close its client, before the daemon goes on without it;
# never longer than daemon.stop_timeout_seconds.
CUT_OFF_GRACE_SECONDS = 5.0
# The watchdog looks at the running pass at least this often, so a deadline changed by a reload
# or a cut-off at the stop timeout is acted on within it.
WATCH_TICK_SECONDS = 1.0

_P = ParamSpec("_P")
_T = TypeVar("_T")

# The source whose pass runs in this context: set on each pass's task, read by `_PassThreads`
# when that pass hands work to a thread.
_PASS_SOURCE: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "kravia_sync_pass_source", default=None
)


class PassRunner(Protocol):
    """What the daemon drives for one source's pass: a `Reconciler` (tests stand in their own)."""

    def request_stop(self) -> None: ...

    async def run(
        self,
        *,
        command: str = ...,
        sources: Collection[str] | None = ...,
        lease: LeaseKeeper | None = ...,
    ) -> RunSummary: ...


PassFactory = Callable[[Settings, StateStore, KraviaClient], PassRunner]


def _reconciler(settings: Settings, store: StateStore, client: KraviaClient) -> PassRunner:
    return Reconciler(settings, store, client=client)


class _PassThreads(ThreadPoolExecutor):
    """The event loop's default executor while the daemon runs (`asyncio.to_thread` uses it),
    counting per source the threads its passes started that have not returned yet. A thread
    cannot be cancelled: after a pass is cut off, this is how the daemon knows its read still
    runs. A source is not read again while a read of it is stuck, so at most one thread per
    source is ever stuck; the pool's 32 threads leave room for those beside a running pass."""

    def __init__(self) -> None:
        super().__init__(max_workers=32, thread_name_prefix="kravia-sync")
        self._lock = threading.Lock()
        self._running: Counter[str] = Counter()

    def submit(self, fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs) -> Future[_T]:
        source = _PASS_SOURCE.get()  # read on the event loop, in the calling task's context
        future = super().submit(fn, *args, **kwargs)
        if source is not None:
            with self._lock:
                self._running[source] += 1
            # Also called for work cancelled before it started: it will not run.
            future.add_done_callback(functools.partial(self._returned, source))
        return future

    def _returned(self, source: str, _: Future[Any]) -> None:
        with self._lock:
            self._running[source] -= 1
            if self._running[source] <= 0:
                del self._running[source]

    def running(self, source: str) -> int:
        """Threads started by `source`'s passes that have not returned."""
        with self._lock:
            return self._running[source]


@dataclass
class SourceState:
    """What the daemon remembers of one source between passes."""

    name: str
    failures: int = 0  # failed passes in a row
    last_status: str | None = None
    last_error: str | None = None
    last_success: float | None = None  # Unix time
    not_before: datetime | None = None  # backing off until then


@dataclass
class _PassWatch:
    """One pass under its deadline: what the watchdog, /readyz and /metrics know of it."""

    source: str
    started: float  # time.monotonic()
    task: asyncio.Task[None] | None = None
    overran_at: float | None = None  # when it ran past daemon.pass_timeout_seconds
    cut_off_at: float | None = None  # when it was cancelled (past its deadline, or at a stop)
    given_up: bool = False  # cancelled, it did not end within the grace: the daemon went on
    recorded: bool = False  # counted in its source's state and the metrics
    calls: dict[str, int] = field(default_factory=dict)  # Kravia calls, as the pass left them


class Daemon:
    """Runs the configured sources on their schedules until stopped."""

    def __init__(
        self,
        settings: Settings,
        *,
        client_factory: Callable[[Settings], KraviaClient],
        reload: Callable[[], Settings] | None = None,
        handle_signals: bool = True,
        pass_factory: PassFactory = _reconciler,
    ) -> None:
        self.settings = settings
        self._client_factory = client_factory
        self._pass_factory = pass_factory
        self._reload = reload
        self._handle_signals = handle_signals
        self.metrics = Metrics()
        self._pacing_client: KraviaClient | None = None  # the pass's client, while it runs
        self._last_pace: PacingSnapshot | None = None  # the pace as the last pass left it
        self.metrics.watch_pace(self.pace)
        self.sources: dict[str, SourceState] = {}
        self._stop = asyncio.Event()
        self._lease_lost = asyncio.Event()
        self._queue: asyncio.Queue[str | None] = asyncio.Queue()
        self._queued: set[str] = set()
        self._current: PassRunner | None = None
        self._pass_task: asyncio.Task[None] | None = None
        self._watch: _PassWatch | None = None  # the pass running now
        self._overruns: dict[str, _PassWatch] = {}  # each source's last pass that overran
        self._left_behind: set[asyncio.Task[None]] = set()  # given up: kept referenced
        self._threads = _PassThreads()
        self._overrun_gauge = _overrun_gauge(self.metrics)
        self._lease_held = False
        self._keeper: LeaseKeeper | None = None
        self._cut_off = False
        self._deadline_cut_off = False
        self._store: StateStore | None = None
        self._scheduler: Scheduler | None = None
        self.http: HealthServer | None = None
        self.webhook: WebhookServer | None = None  # with webhook.enabled, once started
        self._sync_sources()

    # --- lifecycle ----------------------------------------------------------------------------
    async def run(self) -> int:
        """Work until stopped; 0 after a clean stop."""
        loop = asyncio.get_running_loop()
        # Ours, to count the threads each pass leaves running (see _PassThreads).
        loop.set_default_executor(self._threads)
        if self._handle_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self._on_stop_signal, sig)
            loop.add_signal_handler(signal.SIGHUP, self.reload)
        try:
            with StateStore(self.settings.state_path) as store:
                self._store = store
                await self._serve(store)
        finally:
            if self._handle_signals:
                for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                    loop.remove_signal_handler(sig)
            self._store = None
        log.info("daemon stopped", cut_off=self._cut_off)
        return 0

    async def _serve(self, store: StateStore) -> None:
        daemon = self.settings.daemon
        self.http = HealthServer(
            host=daemon.host,
            port=daemon.port,
            readiness=self.readiness,
            metrics=self.metrics.exposition,
        )
        try:
            await self.http.start()
        except OSError as exc:
            raise ConfigError(
                f"daemon.host/daemon.port: cannot listen on {daemon.host}:{daemon.port}: {exc}"
            ) from None
        try:
            await self._start_webhook()
        except BaseException:
            await self.http.stop()
            raise
        scheduler = Scheduler(self._due, timezone=self.settings.policy.timezone)
        self._scheduler = scheduler
        log.info(
            "daemon started",
            pid=os.getpid(),
            http=f"http://{_url_host(daemon.host)}:{self.http.port}",
            webhook=None
            if self.webhook is None
            else f"http://{_url_host(self.settings.webhook.host)}:{self.webhook.port}"
            f"{WEBHOOK_ROUTE}",
            sources={name: self._schedule(name).text for name in self.sources},
        )
        try:
            await self._refresh_store_metrics()
            while not self._stop.is_set():
                if not await self._take_lease(store):
                    break
                await self._work(store, scheduler)
        finally:
            scheduler.shutdown()
            self._scheduler = None
            if self._keeper is not None:
                keeper, self._keeper = self._keeper, None
                with contextlib.suppress(Exception):
                    await asyncio.to_thread(keeper.release)
                if self._lease_held:
                    log.info("writer lease released")
                self._lease_held = False
            if self.webhook is not None:
                await self.webhook.stop()
            await self.http.stop()

    # --- the webhook ----------------------------------------------------------------------------
    async def _start_webhook(self) -> None:
        """With webhook.enabled, the receiver's own listener (`service.webhook_server`)."""
        hook = self.settings.webhook
        if not hook.enabled:
            return
        if self.settings.kravia_webhook_secret is None:
            log.warning(
                "webhook enabled without a secret: signatures cannot be checked (every webhook "
                "is still only a hint to read that case sooner)"
            )
        server = WebhookServer(
            settings=lambda: self.settings,
            metrics=self.metrics,
            is_ours=self._is_ours,
            refresh=self._refresh_case,
        )
        try:
            await server.start()
        except OSError as exc:
            raise ConfigError(
                f"webhook.host/webhook.port: cannot listen on {hook.host}:{hook.port}: {exc}"
            ) from None
        self.webhook = server

    async def _is_ours(self, kravia_id: int) -> bool:
        """Whether one of our cases has this Kravia id."""
        store = self._store
        if store is None:
            return False
        found = await asyncio.to_thread(store.find_cases, str(kravia_id))
        return any(case.kravia_id == kravia_id for case in found)

    async def _refresh_case(self, kravia_id: int) -> str:
        """Read one case's details and store its status and capital. Only while this daemon
        holds the writer lease: a daemon waiting for it writes nothing."""
        store = self._store
        if store is None or not self._lease_held or self._stop.is_set():
            return "skipped"
        async with self._client_factory(self.settings) as client:
            try:
                mirror = KraviaMirror(store, client, clock=utc_now)
                changed = await mirror.refresh_case(kravia_id)
            finally:
                self.metrics.record_calls(client.stats.counts)
        return "changed" if changed else "unchanged"

    def pace(self) -> PacingSnapshot | None:
        """The pace of calls to Kravia: the running pass's, or as the last pass left it."""
        client = self._pacing_client
        return client.pacing() if client is not None else self._last_pace

    def request_stop(self) -> None:
        """Stop as SIGTERM does: finish what is in flight, start nothing new."""
        if self._stop.is_set():
            return
        self._stop.set()
        if self._current is not None:
            self._current.request_stop()
        self._queue.put_nowait(None)
        loop = asyncio.get_running_loop()
        loop.call_later(self.settings.daemon.stop_timeout_seconds, self._stop_overdue)

    def _on_stop_signal(self, sig: signal.Signals) -> None:
        if self._stop.is_set():
            log.error("second signal: exiting at once", signal=sig.name)
            sys.stdout.flush()
            os._exit(128 + sig.value)
        log.info(
            "stopping: the calls in flight finish, nothing new starts",
            signal=sig.name,
            pass_running=self._current is not None,
        )
        self.request_stop()

    def _stop_overdue(self) -> None:
        if self._pass_task is not None and not self._pass_task.done():
            log.warning(
                "stop timeout reached: cutting the pass off (the journal keeps the state; "
                "calls without an answer are settled by looking at the next pass)",
                timeout_s=self.settings.daemon.stop_timeout_seconds,
            )
            self._cut_off = True
            self._cancel_pass()

    def _cancel_pass(self) -> None:
        """Cancel the running pass; the watchdog gives it a grace to unwind, then goes on."""
        watch, task = self._watch, self._pass_task
        if watch is None or task is None or task.done():
            return
        if watch.cut_off_at is None:
            watch.cut_off_at = time.monotonic()
        task.cancel()

    @property
    def cut_off(self) -> bool:
        """Whether a pass had to be cancelled (at the stop timeout, or past its deadline): a
        source read may still be running in a thread."""
        return self._cut_off or self._deadline_cut_off

    # --- the lease ----------------------------------------------------------------------------
    async def _take_lease(self, store: StateStore) -> bool:
        """Wait until the writer lease is ours (True) or a stop is requested (False). It is
        then renewed from a thread of its own until released or taken over."""
        ttl = timedelta(seconds=self.settings.state.lease_seconds)
        poll = min(ttl.total_seconds() / 4, 5.0)
        said: str | None = None
        loop = asyncio.get_running_loop()

        def lost(why: str) -> None:
            loop.call_soon_threadsafe(self._lose_lease, why)

        keeper = LeaseKeeper(store, ttl=ttl, clock=utc_now, on_lost=lost)
        while not self._stop.is_set():
            try:
                holder = await asyncio.to_thread(keeper.acquire)
            except LeaseHeldError as exc:
                if said != str(exc):
                    lease = store.current_lease() or {}
                    log.warning(
                        "waiting for the writer lease",
                        holder=lease.get("holder"),
                        expires_at=_iso(lease.get("expires_at")),
                        detail=str(exc),
                    )
                    said = str(exc)
            except Exception as exc:  # a busy or unreachable store: try again
                log.warning("could not take the writer lease", error=redact(str(exc)))
            else:
                self._keeper = keeper
                self._lease_held = True
                self._lease_lost.clear()
                self.metrics.lease.set(1)
                log.info("writer lease acquired", holder=holder)
                return True
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), timeout=poll)
        return False

    def _lose_lease(self, why: str) -> None:
        if not self._lease_held:
            return
        log.error("writer lease lost: pausing until it can be taken again", reason=why)
        if self._current is not None:
            self._current.request_stop()  # its writes are fenced off already
        if self._keeper is not None:
            self._keeper.stop()
            self._keeper = None
        self._lease_held = False
        self.metrics.lease.set(0)
        self._lease_lost.set()
        self._queue.put_nowait(None)

    # --- scheduling ---------------------------------------------------------------------------
    def _schedule(self, name: str) -> Schedule:
        source = next(s for s in self.settings.sources if s.name == name)
        return parse_schedule(source.schedule or self.settings.daemon.schedule)

    def _sync_sources(self) -> list[str]:
        """Track the configured sources; the names that are new."""
        names = [source.name for source in self.settings.sources]
        added = [name for name in names if name not in self.sources]
        for name in list(self.sources):
            if name not in names:
                del self.sources[name]
        for name in added:
            state = SourceState(name)
            self.sources[name] = state
            self.metrics.watch_source(name, _last_success(state))
            self._overrun_gauge.labels(name).set_function(self._overrun_flag(name))
        return added

    async def _due(self, name: str) -> None:
        """The scheduler says `name` is due."""
        state = self.sources.get(name)
        if state is None or self._stop.is_set() or not self._lease_held:
            return
        if state.not_before is not None and utc_now() < state.not_before:
            log.debug("skipped: backing off", source=name, until=_iso(state.not_before))
            return
        self._enqueue(name)

    def _enqueue(self, name: str) -> None:
        if name in self._queued:  # already waiting for its turn: runs coalesce
            return
        self._queued.add(name)
        self._queue.put_nowait(name)

    async def _work(self, store: StateStore, scheduler: Scheduler) -> None:
        """Run passes from the queue while the lease is ours and no stop is requested."""
        scheduler.set_jobs({name: self._schedule(name) for name in self.sources})
        if scheduler.running:
            scheduler.resume()
        else:
            scheduler.start()
        for name in self.sources:  # a first pass of each at start-up
            self._enqueue(name)
        try:
            while not self._stop.is_set() and not self._lease_lost.is_set():
                due = await self._queue.get()
                if due is None:
                    continue
                self._queued.discard(due)
                if due not in self.sources:  # removed by a reload
                    continue
                if not self._held_back(due):
                    await self._supervise(store, due)
        finally:
            if scheduler.running:
                scheduler.pause()
            self._queued.clear()
            while not self._queue.empty():
                self._queue.get_nowait()

    # --- the pass deadline --------------------------------------------------------------------
    async def _supervise(self, store: StateStore, name: str) -> None:
        """Run `name`'s pass under its deadline; return once it has ended or been given up."""
        self._overruns.pop(name, None)
        watch = _PassWatch(name, started=time.monotonic())
        context = contextvars.copy_context()
        context.run(_PASS_SOURCE.set, name)  # the threads it starts are counted as its own
        task = asyncio.create_task(self._run_pass(store, name, watch), context=context)
        watch.task = task
        self._watch, self._pass_task = watch, task
        try:
            while not await _ends(task, within=self._until_next_look(watch)):
                self._look(watch)
                if watch.given_up:
                    self._leave_behind(task)
                    break
        except asyncio.CancelledError:  # the daemon itself is cancelled: so is its pass
            task.cancel()
            await _ends(task, within=self._grace())  # let it unwind while the store is open
            raise
        finally:
            self._watch, self._pass_task = None, None
        if watch.overran_at is not None and not watch.recorded:
            await self._record_cut_off(watch)
        if self._threads.running(name) and watch.cut_off_at is not None:
            log.warning(
                "the cut-off pass left a read running in a thread: the source's next pass "
                "waits until it returns",
                source=name,
            )
        if task.done() and not task.cancelled():
            task.result()  # what no pass may swallow (KeyboardInterrupt, a bug of ours)

    def _until_next_look(self, watch: _PassWatch) -> float:
        """Seconds until the running pass reaches its next limit (at most WATCH_TICK_SECONDS)."""
        daemon = self.settings.daemon
        if watch.cut_off_at is not None:
            due = watch.cut_off_at + self._grace()
        elif watch.overran_at is not None:
            due = watch.overran_at + daemon.stop_timeout_seconds
        else:
            due = watch.started + daemon.pass_timeout_seconds
        return min(max(due - time.monotonic(), 0.0), WATCH_TICK_SECONDS)

    def _look(self, watch: _PassWatch) -> None:
        """Act on the limit the running pass has reached, if any: its deadline (ask it to stop),
        the stop timeout after that (cut it off), the grace after a cut-off (give it up)."""
        daemon = self.settings.daemon
        now = time.monotonic()
        if watch.cut_off_at is not None:
            if now - watch.cut_off_at >= self._grace():
                log.error(
                    "the cut-off pass did not end: going on without it",
                    source=watch.source,
                    grace_s=self._grace(),
                )
                watch.given_up = True
        elif watch.overran_at is not None:
            if now - watch.overran_at >= daemon.stop_timeout_seconds:
                log.error(
                    "the overrunning pass did not stop: cutting it off (the journal keeps the "
                    "state; calls without an answer are settled by looking at the next pass)",
                    source=watch.source,
                    running_s=round(now - watch.started, 3),
                    stop_timeout_s=daemon.stop_timeout_seconds,
                )
                self._deadline_cut_off = True
                self._cancel_pass()
        elif now - watch.started >= daemon.pass_timeout_seconds:
            self._overran(watch, now)

    def _overran(self, watch: _PassWatch, now: float) -> None:
        daemon = self.settings.daemon
        watch.overran_at = now
        self._overruns[watch.source] = watch
        log.error(
            "pass overran",
            source=watch.source,
            running_s=round(now - watch.started, 3),
            pass_timeout_s=daemon.pass_timeout_seconds,
            cut_off_after_s=daemon.stop_timeout_seconds,
        )
        if self._current is not None:  # as at SIGTERM: calls in flight finish, nothing new
            self._current.request_stop()

    def _grace(self) -> float:
        return min(CUT_OFF_GRACE_SECONDS, self.settings.daemon.stop_timeout_seconds)

    def _leave_behind(self, task: asyncio.Task[None]) -> None:
        """Keep a given-up pass referenced until it ends (the loop holds tasks weakly)."""
        self._left_behind.add(task)
        task.add_done_callback(self._forget)

    def _forget(self, task: asyncio.Task[None]) -> None:
        self._left_behind.discard(task)
        if not task.cancelled():
            task.exception()  # seen: it was counted as failed when it was given up

    async def _record_cut_off(self, watch: _PassWatch) -> None:
        """Count an overrunning pass that was cut off as a failed pass of its source."""
        state = self.sources.get(watch.source)
        if state is None:  # removed by a reload meanwhile
            return
        watch.recorded = True
        self._after_pass(
            state,
            status=RunStatus.FAILED,
            error=_overran_error(self.settings.daemon.pass_timeout_seconds, cut_off=True),
            seconds=time.monotonic() - watch.started,
            calls=watch.calls,
            run_id=None,
            counts={},
        )
        await self._refresh_store_metrics()

    def _overrunning(self, name: str) -> _PassWatch | None:
        """`name`'s pass that overran, while it runs: its task (even given up), or a read it
        left in a thread."""
        watch = self._overruns.get(name)
        if watch is None or (_done(watch.task) and not self._threads.running(name)):
            return None
        return watch

    def _held_back(self, name: str) -> bool:
        """Whether `name`'s cut-off pass still runs (a read in a thread, or a task given up):
        a second pass of the source would write its state alongside the first, so it waits."""
        watch = self._overrunning(name)
        if watch is None:
            return False
        log.warning(
            "skipped: the source's cut-off pass is still running",
            source=name,
            running_s=round(time.monotonic() - watch.started, 3),
        )
        return True

    def _overrun_flag(self, name: str) -> Callable[[], float]:
        return lambda: 0.0 if self._overrunning(name) is None else 1.0

    # --- one pass -----------------------------------------------------------------------------
    async def _run_pass(self, store: StateStore, name: str, watch: _PassWatch) -> None:
        settings = self.settings
        state = self.sources[name]
        started = time.monotonic()
        calls: dict[str, int] = {}
        run_id: int | None = None
        counts: dict[str, int] = {}
        error: str | None = None
        try:
            async with self._client_factory(settings) as client:
                reconciler = self._pass_factory(settings, store, client)
                self._current = reconciler
                self._pacing_client = client
                try:
                    if self._stop.is_set() or self._keeper is None:
                        return
                    summary = await reconciler.run(
                        sources=[name], command="daemon", lease=self._keeper
                    )
                finally:
                    if self._current is reconciler:  # not a later pass's, if this one was given up
                        self._current = None
                    calls = watch.calls = dict(client.stats.counts)
                    if self._pacing_client is client:
                        self._last_pace = client.pacing()
                        self._pacing_client = None
            run_id = summary.run_id
            status = summary.status
            counts = dict(sorted(summary.counts.items()))
            error = summary.error or next(
                (s.error for s in summary.sources if s.error is not None), None
            )
        except (LeaseHeldError, LeaseLostError) as exc:  # another process took the lease over
            self._lose_lease(str(exc))
            return
        except StateError as exc:  # a locked or broken state store: said, and tried again
            log.error("pass failed", source=name, error=redact(str(exc)))  # noqa: TRY400 - said in full, no traceback
            status = RunStatus.FAILED
            error = redact(str(exc))
        except Exception as exc:  # one source's trouble never stops the daemon
            log.exception("pass failed unexpectedly", source=name)
            status = RunStatus.FAILED
            error = redact(f"{type(exc).__name__}: {exc}")
        finally:
            # Counted even for a pass cut off or lost: the calls were made.
            seconds = time.monotonic() - started
        if watch.recorded:  # given up and counted by the watchdog before it ended
            return
        if watch.overran_at is not None:  # stopped on request, or finished late: it overran
            status = RunStatus.FAILED
            error = _overran_error(settings.daemon.pass_timeout_seconds, also=error)
        watch.recorded = True
        self._after_pass(
            state,
            status=status,
            error=error,
            seconds=seconds,
            calls=calls,
            run_id=run_id,
            counts=counts,
        )
        await self._refresh_store_metrics()

    def _after_pass(
        self,
        state: SourceState,
        *,
        status: str,
        error: str | None,
        seconds: float,
        calls: dict[str, int],
        run_id: int | None,
        counts: dict[str, int],
    ) -> None:
        daemon = self.settings.daemon
        state.last_status = status
        state.last_error = error
        retry_at: datetime | None = None
        if status in SUCCESS:
            state.failures = 0
            state.last_success = time.time()
            state.not_before = None
        elif status == "failed":
            state.failures += 1
            delay = backoff_delay(
                state.failures - 1, base=daemon.backoff_seconds, cap=daemon.backoff_cap_seconds
            )
            retry_at = utc_now() + timedelta(seconds=delay)
            state.not_before = retry_at
            if self._scheduler is not None and not self._stop.is_set():
                self._scheduler.once(state.name, retry_at)
        self.metrics.record_pass(state.name, outcome=status, seconds=seconds, calls=calls)
        self.metrics.failures.labels(state.name).set(state.failures)
        next_run = None if self._scheduler is None else self._scheduler.next_run(state.name)
        log.info(
            "pass finished",
            source=state.name,
            run_id=run_id,
            status=status,
            duration_s=round(seconds, 3),
            remote_calls=sum(calls.values()),
            calls=dict(sorted(calls.items())),
            counts=counts,
            consecutive_failures=state.failures,
            retry_at=_iso(retry_at),
            next_run=_iso(next_run),
            error=error,
        )
        if state.failures >= daemon.alert_after_failures:
            log.error(
                "source failing",
                source=state.name,
                consecutive_failures=state.failures,
                error=error,
                retry_at=_iso(retry_at),
            )

    # --- health -------------------------------------------------------------------------------
    async def _refresh_store_metrics(self) -> None:
        store = self._store
        if store is None:
            return
        try:
            phases, quarantined = await asyncio.to_thread(_store_counts, store)
        except Exception as exc:
            log.warning("could not read the state store for metrics", error=redact(str(exc)))
            return
        self.metrics.set_store_counts(phases, quarantined)

    async def readiness(self) -> tuple[bool, dict[str, Any]]:
        """Ready: the state store answers, no source failed `alert_after_failures` times in a
        row, and no pass is overrunning its deadline (nor a read it left running)."""
        store_ok = False
        store_detail = "not open"
        if self._store is not None:
            try:
                await asyncio.wait_for(asyncio.to_thread(self._store.schema_version), timeout=5)
            except Exception as exc:
                store_detail = redact(f"{type(exc).__name__}: {exc}")
            else:
                store_ok, store_detail = True, "ok"
        threshold = self.settings.daemon.alert_after_failures
        sources = {
            name: {
                "last_status": state.last_status,
                "consecutive_failures": state.failures,
                "failing": state.failures >= threshold,
                "last_error": state.last_error,
            }
            for name, state in self.sources.items()
        }
        overrunning = self._overrun_details()
        failing = any(item["failing"] for item in sources.values())
        ready = store_ok and not failing and not overrunning
        details = {
            "store": store_detail,
            "lease": "held" if self._lease_held else "waiting",
            "stopping": self._stop.is_set(),
            "sources": sources,
            "overrunning": overrunning,
        }
        return ready, details

    def _overrun_details(self) -> dict[str, dict[str, Any]]:
        """By source: the pass overrunning its deadline, for how long, and how far it got."""
        now = time.monotonic()
        details = {}
        for name in list(self._overruns):
            watch = self._overrunning(name)
            if watch is not None:
                details[name] = {
                    "running_seconds": round(now - watch.started, 3),
                    "pass_timeout_seconds": self.settings.daemon.pass_timeout_seconds,
                    "cut_off": watch.cut_off_at is not None,
                    "given_up": watch.given_up,
                    # The pass's task ended; a read it started in a thread has not returned.
                    "read_left_running": _done(watch.task),
                }
        return details

    # --- reload -------------------------------------------------------------------------------
    def reload(self) -> None:
        """Read the configuration again (SIGHUP). Schedules, sources, policy, retry and Kravia
        settings take effect from the next pass; a bad file, or a change of the state store or
        the HTTP address (which need a restart), leaves the running configuration in place."""
        if self._reload is None:
            return
        try:
            settings = self._reload()
        except ConfigError as exc:
            log.error("configuration not reloaded: keeping the running one", error=str(exc))  # noqa: TRY400 - the message says it all
            return
        old = self.settings
        if (
            settings.state_path != old.state_path
            or (settings.daemon.host, settings.daemon.port) != (old.daemon.host, old.daemon.port)
            or settings.webhook != old.webhook
        ):
            log.error(
                "configuration not reloaded: state.path, daemon.host, daemon.port and the "
                "[webhook] section take a restart; keeping the running configuration"
            )
            return
        self.settings = settings
        added = self._sync_sources()
        if self._scheduler is not None and self._lease_held:
            self._scheduler.set_jobs({name: self._schedule(name) for name in self.sources})
            for name in added:
                self._enqueue(name)
        log.info(
            "configuration reloaded",
            sources={name: self._schedule(name).text for name in self.sources},
        )


def _last_success(state: SourceState) -> Callable[[], float | None]:
    return lambda: state.last_success


def _overrun_gauge(metrics: Metrics) -> Gauge:
    """Beside kravia_sync.service.metrics' gauges, on the same registry, labelled by source only."""
    return Gauge(
        "kravia_sync_pass_overrunning",
        "1 while the source's pass runs past daemon.pass_timeout_seconds (and until a read it "
        "left running in a thread returns), else 0.",
        ["source"],
        registry=metrics.registry,
    )


def _overran_error(limit: float, *, cut_off: bool = False, also: str | None = None) -> str:
    ending = "was cut off" if cut_off else "was asked to stop"
    text = f"the pass overran daemon.pass_timeout_seconds ({limit:g} s) and {ending}"
    return text if also is None else f"{text}; {also}"


def _done(task: asyncio.Task[None] | None) -> bool:
    return task is not None and task.done()


async def _ends(task: asyncio.Task[None], *, within: float) -> bool:
    """Whether `task` is done within `within` seconds (it runs on either way)."""
    done, _ = await asyncio.wait({task}, timeout=within)
    return task in done


def _store_counts(store: StateStore) -> tuple[dict[str, int], dict[str, int]]:
    return store.phase_counts(), store.quarantine_counts()


def _iso(value: object) -> str | None:
    return value.isoformat() if isinstance(value, datetime) else None


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def run_daemon(daemon: Daemon) -> int:
    """Run the daemon on a new event loop; the exit code. After a pass was cut off (at the stop
    timeout, or past its deadline), a source read may still be running in a thread: the process
    exits without waiting for it (the journal keeps the state consistent)."""

    async def main() -> int:
        code = await daemon.run()
        if daemon.cut_off:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
        return code

    return asyncio.run(main())
