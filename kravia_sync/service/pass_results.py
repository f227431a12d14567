"""One source's pass: run it with its own client, then record its outcome in the source's state,
the metrics and the log (backing off after a failure)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import datetime, timedelta

from kravia_sync.engine.summary import RunStatus
from kravia_sync.kravia.client import KraviaClient
from kravia_sync.kravia.errors import backoff_delay
from kravia_sync.kravia.pacing import PacingSnapshot
from kravia_sync.logging import get_logger, redact
from kravia_sync.service.daemon_lease import LeaseHolding
from kravia_sync.service.daemon_parts import PassFactory, PassRunner, SourceState, iso
from kravia_sync.service.overrun import PassWatch, overran_error
from kravia_sync.service.scheduling import Scheduler
from kravia_sync.settings import Settings
from kravia_sync.state.errors import LeaseHeldError, LeaseLostError, StateError
from kravia_sync.state.store import StateStore
from kravia_sync.state.stored import utc_now

__all__ = ["SUCCESS", "PassResults"]

log = get_logger("kravia_sync.service.daemon")

SUCCESS = frozenset({RunStatus.DONE, RunStatus.ATTENTION})  # attention: the pass worked


class PassResults(LeaseHolding):
    """Runs one source's pass and records what became of it."""

    settings: Settings
    sources: dict[str, SourceState]
    _client_factory: Callable[[Settings], KraviaClient]
    _pass_factory: PassFactory
    _current: PassRunner | None
    _pacing_client: KraviaClient | None
    _last_pace: PacingSnapshot | None
    _stop: asyncio.Event
    _scheduler: Scheduler | None
    _store: StateStore | None

    async def _run_pass(self, store: StateStore, name: str, watch: PassWatch) -> None:
        settings = self.settings
        state = self.sources[name]
        started = time.monotonic()
        calls: dict[str, int] = {}
        run_id: int | None = None
        counts: dict[str, int] = {}
        money: dict[str, str] = {}
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
            money = summary.money.log_fields()
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
            error = overran_error(settings.daemon.pass_timeout_seconds, also=error)
        watch.recorded = True
        self._after_pass(
            state,
            status=status,
            error=error,
            seconds=seconds,
            calls=calls,
            run_id=run_id,
            counts=counts,
            money=money,
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
        money: dict[str, str],
    ) -> None:
        """Record a pass's end: the source's back-off, the metrics, and the `pass finished` line
        (with the sums of money moved, as the `run finished` line has them)."""
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
            **money,
            consecutive_failures=state.failures,
            retry_at=iso(retry_at),
            next_run=iso(next_run),
            error=error,
        )
        if state.failures >= daemon.alert_after_failures:
            log.error(
                "source failing",
                source=state.name,
                consecutive_failures=state.failures,
                error=error,
                retry_at=iso(retry_at),
            )

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


def _store_counts(store: StateStore) -> tuple[dict[str, int], dict[str, int]]:
    return store.phase_counts(), store.quarantine_counts()
