"""The Kravia simulator's JSON and time helpers: JSON text with exact decimals, a strict JSON
parser, case-insensitive property names, and .NET-style timestamps (written and read)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from kravia_sync.testing._sim_constants import _DOTNET_TIME_RE, _EPOCH, _TICKS_PER_SECOND

__all__ = ["format_dotnet_time", "parse_dotnet_time"]


# --- JSON -------------------------------------------------------------------------------------


def _dump(value: object) -> str:
    """JSON text with Decimals written exactly as JSON numbers (never through a float)."""
    if isinstance(value, Mapping):
        items = (
            f"{json.dumps(str(key), ensure_ascii=False)}:{_dump(item)}"
            for key, item in value.items()
        )
        return "{" + ",".join(items) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(_dump(item) for item in value) + "]"
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise ValueError(f"{value} is not a JSON number")
        return format(value, "f")
    if value is None or isinstance(value, bool | int | float | str):
        return json.dumps(value, ensure_ascii=False, allow_nan=False)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _reject_constant(name: str) -> object:
    raise ValueError(f"'{name}' is an invalid JSON literal")


def _loads(body: bytes) -> object:
    """Parse a JSON body; numbers with a fraction or exponent become Decimal. ValueError if bad."""
    return json.loads(body.decode("utf-8"), parse_float=Decimal, parse_constant=_reject_constant)


def _ci(obj: Mapping[str, object]) -> dict[str, object]:
    """Property names folded to lower case (ASP.NET matches them case-insensitively; last wins)."""
    return {key.lower(): value for key, value in obj.items()}


# --- time -------------------------------------------------------------------------------------


def _ticks(moment: datetime) -> int:
    """100-ns ticks since the epoch, for exact comparisons with .NET timestamps."""
    return (moment - _EPOCH) // timedelta(microseconds=1) * 10


def format_dotnet_time(moment: datetime) -> str:
    """`2026-11-27T06:24:01.1234567`: UTC, 7 fractional digits, no zone (as the guide shows)."""
    utc = moment.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond:06d}0"


def parse_dotnet_time(text: str) -> int | None:
    """Ticks for a .NET-style timestamp (no zone means UTC; up to 7 fractional digits)."""
    match = _DOTNET_TIME_RE.fullmatch(text.strip())
    if match is None:
        return None
    year, month, day, hour, minute, second, fraction, zone = match.groups()
    try:
        moment = datetime(
            int(year),
            int(month),
            int(day),
            int(hour or 0),
            int(minute or 0),
            int(second or 0),
            tzinfo=UTC,
        )
    except ValueError:
        return None
    if zone and zone != "Z":
        sign = 1 if zone[0] == "+" else -1
        offset = timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6]))
        moment -= sign * offset
    seconds = (moment - _EPOCH) // timedelta(seconds=1)
    return seconds * _TICKS_PER_SECOND + int((fraction or "").ljust(7, "0"))


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat()
