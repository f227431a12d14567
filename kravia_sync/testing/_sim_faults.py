"""The Kravia simulator's faults: `Faults` (the shares of 429s, 5xx, timeouts and dropped
answers, latency and a rate limit), one call's roll of them, and the 429 a throttled call gets."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from decimal import Decimal
from typing import Any, Final

from kravia_sync.testing._sim_constants import OPERATIONS
from kravia_sync.testing._sim_http import _Outcome, _problem

__all__ = ["Faults"]


# --- faults -----------------------------------------------------------------------------------


_SHARE_FIELDS: Final = ("error_5xx", "rate_limit_429", "timeout", "drop_after_commit")


@dataclass
class Faults:
    """Faults injected into API calls; the defaults inject nothing.

    Shares are probabilities in [0, 1], rolled independently per call in this order: 429, 5xx,
    timeout, drop. `latency_ms` is added to every call of the listed `operations`.
    `rate_limit` (calls per second) enforces a token bucket over every API call, as a gateway
    in front of an API would: `rate_limit_burst` calls (default: one second's worth) may come
    at once, then one per 1/rate_limit seconds; a call beyond is answered 429 at once with a
    `Retry-After` of whole seconds until the next token, and applies nothing.
    """

    latency_ms: float = 0.0
    rate_limit: float | None = None
    rate_limit_burst: float | None = None
    error_5xx: float = 0.0
    rate_limit_429: float = 0.0
    timeout: float = 0.0
    timeout_delay_s: float = 2.0
    drop_after_commit: float = 0.0
    seed: int | None = None
    operations: tuple[str, ...] = OPERATIONS

    def __post_init__(self) -> None:
        self.operations = tuple(self.operations)
        for name in _SHARE_FIELDS:
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"faults.{name} must be a share between 0 and 1, not {value!r}")
        if self.latency_ms < 0:
            raise ValueError(f"faults.latency_ms must not be negative, not {self.latency_ms!r}")
        for name in ("rate_limit", "rate_limit_burst"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"faults.{name} must be above 0 or null, not {value!r}")
        if self.rate_limit_burst is not None and self.rate_limit_burst < 1:
            raise ValueError(
                f"faults.rate_limit_burst must be at least 1, not {self.rate_limit_burst!r}"
            )
        if self.timeout_delay_s < 0:
            raise ValueError(
                f"faults.timeout_delay_s must not be negative, not {self.timeout_delay_s!r}"
            )
        unknown = [name for name in self.operations if name not in OPERATIONS]
        if unknown:
            raise ValueError(
                f"faults.operations: unknown {', '.join(unknown)} (known: {', '.join(OPERATIONS)})"
            )

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> Faults:
        """Faults from a JSON-like mapping.

        Unknown keys and out-of-range values raise ValueError; wrong types raise TypeError.
        """
        known = {item.name for item in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown fault settings: {', '.join(unknown)}")
        kwargs: dict[str, Any] = {}
        for name in (*_SHARE_FIELDS, "latency_ms", "timeout_delay_s"):
            if name in data:
                kwargs[name] = _fault_number(name, data[name])
        for name in ("rate_limit", "rate_limit_burst"):
            if data.get(name) is not None:
                kwargs[name] = _fault_number(name, data[name])
        if "seed" in data:
            seed = data["seed"]
            if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
                raise TypeError(f"faults.seed must be an integer or null, not {seed!r}")
            kwargs["seed"] = seed
        if "operations" in data:
            operations = data["operations"]
            if not isinstance(operations, list | tuple) or not all(
                isinstance(item, str) for item in operations
            ):
                raise TypeError("faults.operations must be a list of operation names")
            kwargs["operations"] = tuple(operations)
        return cls(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        """The faults as a JSON-ready dict (the inverse of from_dict)."""
        return {
            "latency_ms": self.latency_ms,
            "rate_limit": self.rate_limit,
            "rate_limit_burst": self.rate_limit_burst,
            "error_5xx": self.error_5xx,
            "rate_limit_429": self.rate_limit_429,
            "timeout": self.timeout,
            "timeout_delay_s": self.timeout_delay_s,
            "drop_after_commit": self.drop_after_commit,
            "seed": self.seed,
            "operations": list(self.operations),
        }


def _throttled(bucket_wait: float | None, roll: _Roll) -> _Outcome | None:
    """The 429 for a call the rate limit's bucket had no token for (`bucket_wait`: seconds to
    the next), or that the roll made a 429; None for any other call."""
    if bucket_wait is None and not roll.rate_limited:
        return None
    outcome = _problem(429)
    retry_after = roll.retry_after
    if bucket_wait is not None:
        retry_after = str(max(1, math.ceil(bucket_wait)))
    if retry_after is not None:
        outcome.headers["Retry-After"] = retry_after
    return outcome


def _fault_number(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        raise TypeError(f"faults.{name} must be a number, not {value!r}")
    return float(value)


@dataclass(frozen=True)
class _Roll:
    rate_limited: bool = False
    server_error: bool = False
    timeout: bool = False
    drop: bool = False
    retry_after: str | None = None
    error_status: int = 500
