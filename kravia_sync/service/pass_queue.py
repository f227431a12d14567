"""The daemon's queue of due sources: their schedules, the sources it tracks, and the loop that
runs their passes one at a time (missed runs coalesce)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from kravia_sync.logging import get_logger
from kravia_sync.schedule import Schedule, parse_schedule
from kravia_sync.service.daemon_parts import SourceState, iso
from kravia_sync.service.metrics import Metrics
from kravia_sync.service.overrun import Overruns
from kravia_sync.service.pass_supervision import PassSupervision
from kravia_sync.service.scheduling import Scheduler
from kravia_sync.settings import Settings
from kravia_sync.state.store import StateStore
from kravia_sync.state.stored import utc_now

__all__ = ["PassQueue"]

log = get_logger("kravia_sync.service.daemon")


class PassQueue(PassSupervision):
    """Queues each source when due (once, however often) and runs the queue's passes."""

    settings: Settings
    metrics: Metrics
    sources: dict[str, SourceState]
    _stop: asyncio.Event
    _lease_held: bool
    _lease_lost: asyncio.Event
    _queue: asyncio.Queue[str | None]
    _queued: set[str]
    _overruns: Overruns

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
            self._overruns.watch_source(name)
        return added

    async def _due(self, name: str) -> None:
        """The scheduler says `name` is due."""
        state = self.sources.get(name)
        if state is None or self._stop.is_set() or not self._lease_held:
            return
        if state.not_before is not None and utc_now() < state.not_before:
            log.debug("skipped: backing off", source=name, until=iso(state.not_before))
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
                if not self._overruns.held_back(due):
                    await self._supervise(store, due)
        finally:
            if scheduler.running:
                scheduler.pause()
            self._queued.clear()
            while not self._queue.empty():
                self._queue.get_nowait()


def _last_success(state: SourceState) -> Callable[[], float | None]:
    return lambda: state.last_success
