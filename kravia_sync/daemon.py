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
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from kravia_sync.health import HealthServer
from kravia_sync.kravia import KraviaClient, backoff_delay
from kravia_sync.lease import LeaseKeeper
from kravia_sync.logging import get_logger, redact
from kravia_sync.metrics import Metrics
from kravia_sync.reconcile import Reconciler
from kravia_sync.scheduling import Schedule, Scheduler, parse_schedule
from kravia_sync.settings import ConfigError, Settings
from kravia_sync.store import QUARANTINE, LeaseHeldError, LeaseLostError, StateStore, utc_now

__all__ = ["Daemon", "run_daemon"]

log = get_logger("kravia_sync.daemon")

SUCCESS = frozenset({"done", "attention"})  # attention: records need a person, the pass worked


@dataclass
class SourceState:
    """What the daemon remembers of one source between passes."""

    name: str
    failures: int = 0  # failed passes in a row
    last_status: str | None = None
    last_error: str | None = None
    last_success: float | None = None  # Unix time
    not_before: datetime | None = None  # backing off until then


class Daemon:
    """Runs the configured sources on their schedules until stopped."""

    def __init__(
        self,
        settings: Settings,
        *,
        client_factory: Callable[[Settings], KraviaClient],
        reload: Callable[[], Settings] | None = None,
        handle_signals: bool = True,
    ) -> None:
        self.settings = settings
        self._client_factory = client_factory
        self._reload = reload
        self._handle_signals = handle_signals
        self.metrics = Metrics()
        self.sources: dict[str, SourceState] = {}
        self._stop = asyncio.Event()
        self._lease_lost = asyncio.Event()
        self._queue: asyncio.Queue[str | None] = asyncio.Queue()
        self._queued: set[str] = set()
        self._current: Reconciler | None = None
        self._pass_task: asyncio.Task[None] | None = None
        self._lease_held = False
        self._keeper: LeaseKeeper | None = None
        self._cut_off = False
        self._store: StateStore | None = None
        self._scheduler: Scheduler | None = None
        self.http: HealthServer | None = None
        self._sync_sources()

    # --- lifecycle ----------------------------------------------------------------------------
    async def run(self) -> int:
        """Work until stopped; 0 after a clean stop."""
        loop = asyncio.get_running_loop()
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
        scheduler = Scheduler(self._due, timezone=self.settings.policy.timezone)
        self._scheduler = scheduler
        log.info(
            "daemon started",
            pid=os.getpid(),
            http=f"http://{_url_host(daemon.host)}:{self.http.port}",
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
            await self.http.stop()

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
            self._pass_task.cancel()

    @property
    def cut_off(self) -> bool:
        """Whether a pass had to be cancelled at the stop timeout."""
        return self._cut_off

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
                self._pass_task = asyncio.create_task(self._run_pass(store, due))
                try:
                    await self._pass_task
                except asyncio.CancelledError:
                    if not self._cut_off:
                        raise
                finally:
                    self._pass_task = None
        finally:
            if scheduler.running:
                scheduler.pause()
            self._queued.clear()
            while not self._queue.empty():
                self._queue.get_nowait()

    # --- one pass -----------------------------------------------------------------------------
    async def _run_pass(self, store: StateStore, name: str) -> None:
        settings = self.settings
        state = self.sources[name]
        started = time.monotonic()
        calls: dict[str, int] = {}
        run_id: int | None = None
        counts: dict[str, int] = {}
        error: str | None = None
        try:
            async with self._client_factory(settings) as client:
                reconciler = Reconciler(settings, store, client=client)
                self._current = reconciler
                try:
                    if self._stop.is_set() or self._keeper is None:
                        return
                    summary = await reconciler.run(
                        sources=[name], command="daemon", lease=self._keeper
                    )
                finally:
                    self._current = None
                    calls = dict(client.stats.counts)
            run_id = summary.run_id
            status = summary.status
            counts = dict(sorted(summary.counts.items()))
            error = summary.error or next(
                (s.error for s in summary.sources if s.error is not None), None
            )
        except (LeaseHeldError, LeaseLostError) as exc:  # another process took the lease over
            self._lose_lease(str(exc))
            return
        except Exception as exc:  # one source's trouble never stops the daemon
            log.exception("pass failed unexpectedly", source=name)
            status = "failed"
            error = redact(f"{type(exc).__name__}: {exc}")
        finally:
            # Counted even for a pass cut off or lost: the calls were made.
            seconds = time.monotonic() - started
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
        """Ready: the state store answers and no source failed `alert_after_failures` times
        in a row."""
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
        ready = store_ok and not any(item["failing"] for item in sources.values())
        details = {
            "store": store_detail,
            "lease": "held" if self._lease_held else "waiting",
            "stopping": self._stop.is_set(),
            "sources": sources,
        }
        return ready, details

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
        if settings.state_path != old.state_path or (
            (settings.daemon.host, settings.daemon.port) != (old.daemon.host, old.daemon.port)
        ):
            log.error(
                "configuration not reloaded: state.path, daemon.host and daemon.port take a "
                "restart; keeping the running configuration"
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


def _store_counts(store: StateStore) -> tuple[dict[str, int], dict[str, int]]:
    from sqlalchemy import func, select  # noqa: PLC0415

    with store.engine.connect() as connection:
        rows = connection.execute(
            select(QUARANTINE.c.kind, func.count()).group_by(QUARANTINE.c.kind)
        )
        quarantined = {str(kind): int(count) for kind, count in rows}
    return store.phase_counts(), quarantined


def _iso(value: object) -> str | None:
    return value.isoformat() if isinstance(value, datetime) else None


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def run_daemon(daemon: Daemon) -> int:
    """Run the daemon on a new event loop; the exit code. After a pass was cut off at the stop
    timeout, a source read may still be running in a thread: the process exits without
    waiting for it (the journal keeps the state consistent)."""

    async def main() -> int:
        code = await daemon.run()
        if daemon.cut_off:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
        return code

    return asyncio.run(main())
