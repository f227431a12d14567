"""The daemon's hold on the state store's writer lease: waiting for it, losing it, releasing it."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import timedelta

from kravia_sync.logging import get_logger, redact
from kravia_sync.service.daemon_parts import PassRunner, iso
from kravia_sync.service.metrics import Metrics
from kravia_sync.settings import Settings
from kravia_sync.state.errors import LeaseHeldError
from kravia_sync.state.lease import LeaseKeeper
from kravia_sync.state.store import StateStore
from kravia_sync.state.stored import utc_now

__all__ = ["LeaseHolding"]

log = get_logger("kravia_sync.service.daemon")


class LeaseHolding:
    """Takes the writer lease and keeps it renewed; on losing it, pauses the passes."""

    settings: Settings
    metrics: Metrics
    _stop: asyncio.Event
    _lease_lost: asyncio.Event
    _queue: asyncio.Queue[str | None]
    _current: PassRunner | None
    _keeper: LeaseKeeper | None
    _lease_held: bool

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
                        expires_at=iso(lease.get("expires_at")),
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

    async def _release_lease(self) -> None:
        """Give the writer lease up (the daemon stops)."""
        if self._keeper is not None:
            keeper, self._keeper = self._keeper, None
            with contextlib.suppress(Exception):
                await asyncio.to_thread(keeper.release)
            if self._lease_held:
                log.info("writer lease released")
            self._lease_held = False
