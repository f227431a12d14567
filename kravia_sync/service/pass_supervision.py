"""The watchdog over the running pass: its deadline, the stop timeout after it, and the grace
a cut-off pass gets to unwind before the daemon goes on without it."""

from __future__ import annotations

import asyncio
import contextvars
import time

from kravia_sync.engine.summary import RunStatus
from kravia_sync.logging import get_logger
from kravia_sync.service.daemon_parts import PassRunner, SourceState
from kravia_sync.service.overrun import (
    PASS_SOURCE,
    Overruns,
    PassThreads,
    PassWatch,
    overran_error,
)
from kravia_sync.service.pass_results import PassResults
from kravia_sync.settings import Settings
from kravia_sync.state.store import StateStore

__all__ = ["CUT_OFF_GRACE_SECONDS", "WATCH_TICK_SECONDS", "PassSupervision"]

log = get_logger("kravia_sync.service.daemon")

# How long a pass cancelled past its deadline (or at the stop timeout) may take to unwind, i.e.
# journal the outcomes it has and close its client, before the daemon goes on without it;
# never longer than daemon.stop_timeout_seconds.
CUT_OFF_GRACE_SECONDS = 5.0
# The watchdog looks at the running pass at least this often, so a deadline changed by a reload
# or a cut-off at the stop timeout is acted on within it.
WATCH_TICK_SECONDS = 1.0


class PassSupervision(PassResults):
    """Runs each pass under its deadline, cutting it off (and, past a grace, giving it up)."""

    settings: Settings
    sources: dict[str, SourceState]
    _current: PassRunner | None
    _pass_task: asyncio.Task[None] | None
    _watch: PassWatch | None  # the pass running now
    _overruns: Overruns
    _left_behind: set[asyncio.Task[None]]  # given up: kept referenced
    _threads: PassThreads
    _cut_off: bool
    _deadline_cut_off: bool

    async def _supervise(self, store: StateStore, name: str) -> None:
        """Run `name`'s pass under its deadline; return once it has ended or been given up."""
        self._overruns.drop(name)
        watch = PassWatch(name, started=time.monotonic())
        context = contextvars.copy_context()
        context.run(PASS_SOURCE.set, name)  # the threads it starts are counted as its own
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

    def _until_next_look(self, watch: PassWatch) -> float:
        """Seconds until the running pass reaches its next limit (at most WATCH_TICK_SECONDS)."""
        daemon = self.settings.daemon
        if watch.cut_off_at is not None:
            due = watch.cut_off_at + self._grace()
        elif watch.overran_at is not None:
            due = watch.overran_at + daemon.stop_timeout_seconds
        else:
            due = watch.started + daemon.pass_timeout_seconds
        return min(max(due - time.monotonic(), 0.0), WATCH_TICK_SECONDS)

    def _look(self, watch: PassWatch) -> None:
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

    def _overran(self, watch: PassWatch, now: float) -> None:
        daemon = self.settings.daemon
        watch.overran_at = now
        self._overruns.add(watch)
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

    async def _record_cut_off(self, watch: PassWatch) -> None:
        """Count an overrunning pass that was cut off as a failed pass of its source."""
        state = self.sources.get(watch.source)
        if state is None:  # removed by a reload meanwhile
            return
        watch.recorded = True
        self._after_pass(
            state,
            status=RunStatus.FAILED,
            error=overran_error(self.settings.daemon.pass_timeout_seconds, cut_off=True),
            seconds=time.monotonic() - watch.started,
            calls=watch.calls,
            run_id=None,
            counts={},
            money={},
        )
        await self._refresh_store_metrics()

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


async def _ends(task: asyncio.Task[None], *, within: float) -> bool:
    """Whether `task` is done within `within` seconds (it runs on either way)."""
    done, _ = await asyncio.wait({task}, timeout=within)
    return task in done
