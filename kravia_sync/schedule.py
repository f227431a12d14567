"""Schedules as the configuration writes them: an interval (`30s`, `15m`, `1h30m`, `1d`) or a
five-field cron expression (`*/10 7-18 * * mon-fri`). Parsed here, where the settings check
them; the daemon's scheduler (`kravia_sync.service.scheduling`) runs them."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta
from zoneinfo import ZoneInfo

__all__ = ["Schedule", "parse_schedule"]

_INTERVAL = re.compile(r"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")


@dataclass(frozen=True, slots=True)
class Schedule:
    """A parsed schedule: exactly one of `interval` and `cron` is set."""

    text: str
    interval: timedelta | None = None
    cron: str | None = None


def parse_schedule(text: str) -> Schedule:
    """`15m`-style intervals or five-field cron expressions; ValueError says what is wrong."""
    value = " ".join(text.split())
    match = _INTERVAL.match(value.lower())
    if match and value:
        days, hours, minutes, seconds = (int(part or 0) for part in match.groups())
        interval = timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)
        if interval <= timedelta(0):
            raise ValueError(f"{text!r}: an interval must be longer than 0")
        return Schedule(text=value, interval=interval)
    if len(value.split(" ")) != 5:
        raise ValueError(
            f"{text!r} is neither an interval (30s, 15m, 1h30m, 1d) nor a cron expression "
            "of five fields (minute hour day month weekday, e.g. '*/10 7-18 * * mon-fri')"
        )
    from apscheduler.triggers.cron import CronTrigger  # noqa: PLC0415 - only for cron

    try:
        CronTrigger.from_crontab(value, timezone=ZoneInfo("UTC"))
    except ValueError as exc:
        raise ValueError(f"{text!r} is not a valid cron expression: {exc}") from None
    return Schedule(text=value, cron=value)
