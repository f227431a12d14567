"""When each source's pass is due: schedules from the configuration, and a small scheduler.

The daemon only needs "tell me when a named job is due". This module keeps APScheduler (the
3.x line) behind that interface, so a move to APScheduler 4 touches this file and the cron
check in `kravia_sync.schedule` alone.

A schedule (parsed in `kravia_sync.schedule`) is read in the configured time zone. Missed runs
(the machine slept, a long pass) are coalesced into one run, run however late; the daemon
itself makes sure a source never has two passes at once.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from kravia_sync.schedule import Schedule

__all__ = ["Scheduler"]


class Scheduler:
    """Calls `on_due(name)` (a coroutine function, run on the event loop) whenever the job
    `name` is due. Start it from inside the running event loop."""

    def __init__(
        self, on_due: Callable[[str], Awaitable[None]], *, timezone: str = "Europe/Oslo"
    ) -> None:
        from apscheduler.schedulers.asyncio import AsyncIOScheduler  # noqa: PLC0415

        # Its INFO lines ("Added job", "Running job") would only repeat ours.
        logging.getLogger("apscheduler").setLevel(logging.WARNING)
        self._on_due = on_due
        self._timezone = ZoneInfo(timezone)
        self._scheduler: Any = AsyncIOScheduler(
            timezone=self._timezone,
            job_defaults={
                "coalesce": True,  # several missed runs: run once
                "misfire_grace_time": None,  # however late: a missed run is run, not skipped
                "max_instances": 1,
            },
        )

    def _trigger(self, schedule: Schedule) -> Any:  # noqa: ANN401 - APScheduler's triggers are untyped
        from apscheduler.triggers.cron import CronTrigger  # noqa: PLC0415
        from apscheduler.triggers.interval import IntervalTrigger  # noqa: PLC0415

        if schedule.interval is not None:
            return IntervalTrigger(
                seconds=schedule.interval.total_seconds(), timezone=self._timezone
            )
        assert schedule.cron is not None  # noqa: S101 - a Schedule has one or the other
        return CronTrigger.from_crontab(schedule.cron, timezone=self._timezone)

    def set_jobs(self, schedules: Mapping[str, Schedule]) -> None:
        """Make the recurring jobs exactly these (added, changed or removed by name)."""
        for job in self._scheduler.get_jobs():
            if job.id.startswith("every:") and job.id.removeprefix("every:") not in schedules:
                job.remove()
        for name, schedule in schedules.items():
            self._scheduler.add_job(
                self._on_due,
                self._trigger(schedule),
                args=[name],
                id=f"every:{name}",
                name=f"{name} ({schedule.text})",
                replace_existing=True,
            )

    def once(self, name: str, at: datetime) -> None:
        """An extra run of `name` at `at` (a retry after a back-off); replaces an earlier one."""
        self._scheduler.add_job(
            self._on_due,
            "date",
            run_date=at,
            args=[name],
            id=f"once:{name}",
            name=f"{name} (retry)",
            replace_existing=True,
        )

    def next_run(self, name: str) -> datetime | None:
        """When the recurring job `name` is next due; None when unknown or paused."""
        job = self._scheduler.get_job(f"every:{name}")
        when = None if job is None else job.next_run_time
        return when if isinstance(when, datetime) else None

    def next_runs(self) -> Mapping[str, datetime | None]:
        return {
            job.id.removeprefix("every:"): job.next_run_time
            for job in self._scheduler.get_jobs()
            if job.id.startswith("every:")
        }

    @property
    def running(self) -> bool:
        return bool(self._scheduler.running)

    def start(self) -> None:
        self._scheduler.start()

    def pause(self) -> None:
        self._scheduler.pause()

    def resume(self) -> None:
        self._scheduler.resume()

    def shutdown(self) -> None:
        """Stop firing (a job already fired keeps running: the daemon waits for it)."""
        if self._scheduler.running:
            self._scheduler.shutdown(wait=False)
