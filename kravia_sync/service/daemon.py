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
  default executor is the daemon's own, see `PassThreads`): until it has returned, that
  source's next pass is held back, so two reads never write one source's state at once, and
  the source still counts as overrunning. The same holds for a cut-off pass that does not
  end within a short grace: the daemon goes on without it. Each such read keeps a worker
  thread and its source's connection; a process that exits leaves it behind (`run_daemon`).
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Callable

from kravia_sync.engine.reconcile import Reconciler
from kravia_sync.kravia.client import KraviaClient
from kravia_sync.kravia.pacing import PacingSnapshot
from kravia_sync.logging import get_logger
from kravia_sync.service.daemon_parts import PassFactory, PassRunner, SourceState
from kravia_sync.service.health import HealthServer
from kravia_sync.service.metrics import Metrics
from kravia_sync.service.overrun import Overruns, PassThreads, PassWatch
from kravia_sync.service.pass_queue import PassQueue
from kravia_sync.service.scheduling import Scheduler
from kravia_sync.service.serving import Serving
from kravia_sync.service.webhook_server import WEBHOOK_ROUTE, WebhookServer
from kravia_sync.settings import ConfigError, Settings
from kravia_sync.state.lease import LeaseKeeper
from kravia_sync.state.store import StateStore

__all__ = ["Daemon", "PassRunner", "SourceState", "run_daemon"]

log = get_logger("kravia_sync.service.daemon")


def _reconciler(settings: Settings, store: StateStore, client: KraviaClient) -> PassRunner:
    return Reconciler(settings, store, client=client)


class Daemon(PassQueue, Serving):
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
        self._watch: PassWatch | None = None  # the pass running now
        self._left_behind: set[asyncio.Task[None]] = set()  # given up: kept referenced
        self._threads = PassThreads()
        # Each source's last pass that overran, and the gauge that says so.
        self._overruns = Overruns(
            self.metrics,
            self._threads,
            pass_timeout=lambda: self.settings.daemon.pass_timeout_seconds,
        )
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
        # Ours, to count the threads each pass leaves running (see PassThreads).
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
            await self._release_lease()
            if self.webhook is not None:
                await self.webhook.stop()
            await self.http.stop()

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
