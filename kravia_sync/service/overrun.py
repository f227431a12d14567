"""Passes that overran their deadline: each source's last one, while it (or a read it left in a
thread) still runs, as the queue, /readyz and /metrics see it; and the thread pool that tells
which reads a pass left running."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, ParamSpec, TypeVar

from prometheus_client import Gauge

from kravia_sync.logging import get_logger
from kravia_sync.service.metrics import Metrics

__all__ = ["PASS_SOURCE", "Overruns", "PassThreads", "PassWatch", "overran_error"]

log = get_logger("kravia_sync.service.daemon")

_P = ParamSpec("_P")
_T = TypeVar("_T")

# The source whose pass runs in this context: set on each pass's task, read by `PassThreads`
# when that pass hands work to a thread.
PASS_SOURCE: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "kravia_sync_pass_source", default=None
)


class PassThreads(ThreadPoolExecutor):
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
        source = PASS_SOURCE.get()  # read on the event loop, in the calling task's context
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
class PassWatch:
    """One pass under its deadline: what the watchdog, /readyz and /metrics know of it."""

    source: str
    started: float  # time.monotonic()
    task: asyncio.Task[None] | None = None
    overran_at: float | None = None  # when it ran past daemon.pass_timeout_seconds
    cut_off_at: float | None = None  # when it was cancelled (past its deadline, or at a stop)
    given_up: bool = False  # cancelled, it did not end within the grace: the daemon went on
    recorded: bool = False  # counted in its source's state and the metrics
    calls: dict[str, int] = field(default_factory=dict)  # Kravia calls, as the pass left them


class Overruns:
    """Each source's last pass that overran, with the gauge that says so per source."""

    def __init__(
        self, metrics: Metrics, threads: PassThreads, *, pass_timeout: Callable[[], float]
    ) -> None:
        self._threads = threads
        self._pass_timeout = pass_timeout  # daemon.pass_timeout_seconds, as configured now
        self._overruns: dict[str, PassWatch] = {}  # each source's last pass that overran
        self._gauge = _overrun_gauge(metrics)

    def watch_source(self, name: str) -> None:
        """Report `name` on the overrun gauge."""
        self._gauge.labels(name).set_function(self._flag(name))

    def add(self, watch: PassWatch) -> None:
        self._overruns[watch.source] = watch

    def drop(self, name: str) -> None:
        self._overruns.pop(name, None)

    def overrunning(self, name: str) -> PassWatch | None:
        """`name`'s pass that overran, while it runs: its task (even given up), or a read it
        left in a thread."""
        watch = self._overruns.get(name)
        if watch is None or (_done(watch.task) and not self._threads.running(name)):
            return None
        return watch

    def held_back(self, name: str) -> bool:
        """Whether `name`'s cut-off pass still runs (a read in a thread, or a task given up):
        a second pass of the source would write its state alongside the first, so it waits."""
        watch = self.overrunning(name)
        if watch is None:
            return False
        log.warning(
            "skipped: the source's cut-off pass is still running",
            source=name,
            running_s=round(time.monotonic() - watch.started, 3),
        )
        return True

    def _flag(self, name: str) -> Callable[[], float]:
        return lambda: 0.0 if self.overrunning(name) is None else 1.0

    def details(self) -> dict[str, dict[str, Any]]:
        """By source: the pass overrunning its deadline, for how long, and how far it got."""
        now = time.monotonic()
        details = {}
        for name in list(self._overruns):
            watch = self.overrunning(name)
            if watch is not None:
                details[name] = {
                    "running_seconds": round(now - watch.started, 3),
                    "pass_timeout_seconds": self._pass_timeout(),
                    "cut_off": watch.cut_off_at is not None,
                    "given_up": watch.given_up,
                    # The pass's task ended; a read it started in a thread has not returned.
                    "read_left_running": _done(watch.task),
                }
        return details


def _overrun_gauge(metrics: Metrics) -> Gauge:
    """Beside kravia_sync.service.metrics' gauges, on the same registry, labelled by source only."""
    return Gauge(
        "kravia_sync_pass_overrunning",
        "1 while the source's pass runs past daemon.pass_timeout_seconds (and until a read it "
        "left running in a thread returns), else 0.",
        ["source"],
        registry=metrics.registry,
    )


def overran_error(limit: float, *, cut_off: bool = False, also: str | None = None) -> str:
    ending = "was cut off" if cut_off else "was asked to stop"
    text = f"the pass overran daemon.pass_timeout_seconds ({limit:g} s) and {ending}"
    return text if also is None else f"{text}; {also}"


def _done(task: asyncio.Task[None] | None) -> bool:
    return task is not None and task.done()
