"""Holding the writer lease: taken once, renewed from a thread of its own.

The lease is renewed every third of its time by a thread that does nothing else, so a busy
event loop or a thread pool full of slow reads cannot let it lapse. Whether it is still ours
is decided by the state store, inside every write transaction (the fence: `StateStore`);
this keeper adds the margin: no call is started once renewals are late, before the lease
could expire under a call in flight.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta

from kravia_sync.logging import get_logger, redact
from kravia_sync.state.errors import LeaseLostError
from kravia_sync.state.store import StateStore

__all__ = ["LeaseKeeper", "elapsed"]

log = get_logger("kravia_sync.state.lease")


def elapsed() -> float:
    """Seconds on a clock that also runs while the machine is suspended (where there is one):
    a process frozen past its lease must find its margin gone when it wakes."""
    boottime = getattr(time, "CLOCK_BOOTTIME", None)
    return time.clock_gettime(boottime) if boottime is not None else time.monotonic()


class LeaseKeeper:
    """`acquire()` takes the lease (or raises `LeaseHeldError`) and starts renewing it;
    `release()` stops and gives it up. `on_lost(why)` is called once, from the keeper's
    thread, when the lease is found taken over."""

    def __init__(
        self,
        store: StateStore,
        *,
        ttl: timedelta,
        clock: Callable[[], datetime],
        on_lost: Callable[[str], None] = lambda _why: None,
    ) -> None:
        self._store = store
        self._ttl = ttl
        self._clock = clock
        self._on_lost = on_lost
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._renewed = 0.0  # when the lease was last renewed (`elapsed`)
        self.lost: str | None = None
        self.holder: str | None = None

    @classmethod
    def stopping(
        cls,
        store: StateStore,
        *,
        ttl: timedelta,
        clock: Callable[[], datetime],
        stop: Callable[[], None],
    ) -> LeaseKeeper:
        """A keeper for a pass of its own, made on the pass's event loop: losing the lease
        calls `stop` there (nothing more is sent: every write after that is refused by the
        fence anyway)."""
        loop = asyncio.get_running_loop()

        def lost(why: str) -> None:
            log.error("stopping the pass", reason=why)
            loop.call_soon_threadsafe(stop)

        return cls(store, ttl=ttl, clock=clock, on_lost=lost)

    @property
    def ttl(self) -> timedelta:
        return self._ttl

    def acquire(self) -> str:
        self.holder = self._store.acquire_lease(ttl=self._ttl, now=self._clock())
        self._renewed = elapsed()
        self.lost = None
        self._stop.clear()
        self._thread = threading.Thread(target=self._beat, name="lease-keeper", daemon=True)
        self._thread.start()
        return self.holder

    def release(self) -> None:
        self.stop()
        if self.lost is None:
            self._store.release_lease()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def has_margin(self) -> bool:
        """Whether a call may start: the lease is ours and was renewed on time (at most one
        beat missed), so it cannot expire before the call's answer is journaled."""
        if self.lost is not None:
            return False
        beat = self._ttl.total_seconds() / 3
        return elapsed() - self._renewed < 2 * beat

    def check(self) -> None:
        """Raise `LeaseLostError` unless a call may start now (see `has_margin`)."""
        if self.lost is not None:
            raise LeaseLostError(self.lost)
        if not self.has_margin():
            raise LeaseLostError(
                "the writer lease was not renewed in time (the state store was busy or this "
                "process stalled): no call starts until it is; raise state.lease_seconds if "
                "this repeats"
            )

    def _beat(self) -> None:
        beat = self._ttl.total_seconds() / 3
        while not self._stop.wait(beat):
            try:
                ours = self._store.renew_lease(ttl=self._ttl, now=self._clock())
            except Exception as exc:  # a busy store: try again at the next beat
                log.warning("could not renew the writer lease", error=redact(str(exc)))
                continue
            if ours:
                self._renewed = elapsed()
                continue
            self.lost = "the writer lease was taken over by another process"
            log.error("writer lease lost: this process stops writing and sending")
            self._on_lost(self.lost)
            return
