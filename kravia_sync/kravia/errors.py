"""What a failed call to Kravia means: the error classes, the reading of an answer or an exception
as one of them, and how long to wait before trying again."""

from __future__ import annotations

import json
import random
import re
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from enum import StrEnum

import httpx

from kravia_sync.errors import KraviaSyncError
from kravia_sync.kravia.assumptions import (
    ALREADY_STARTED_STATUSES,
    ALREADY_STARTED_WORDS,
    CONFIG_STATUSES,
    MAX_RETRY_AFTER_SECONDS,
    NOT_APPLIED_STATUSES,
    OVERLOAD_STATUSES,
)
from kravia_sync.kravia.pacing import Signal

__all__ = [
    "Failure",
    "KraviaAuthError",
    "KraviaError",
    "backoff_delay",
    "classify_exception",
    "classify_response",
    "load_signal",
    "parse_retry_after",
    "start_already_done",
]


class Failure(StrEnum):
    """What a failed call means for what to do next."""

    TRANSIENT = "transient"  # not applied: retry later with backoff
    TERMINAL = "terminal"  # refused (4xx): do not retry until the input changes
    AMBIGUOUS = "ambiguous"  # may or may not have been applied: look before acting again
    AUTH = "auth"  # the token is wrong or lacks rights: stop the whole pass
    CONFIG = "config"  # the endpoint is not there (a wrong base_url): stop the whole pass

    @property
    def stops_pass(self) -> bool:
        return self in {Failure.AUTH, Failure.CONFIG}


class KraviaError(KraviaSyncError):
    """A Kravia call that did not succeed, classified by what to do next."""

    def __init__(
        self,
        failure: Failure,
        message: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
        timed_out: bool = False,
    ) -> None:
        super().__init__(message)
        self.failure = failure
        self.status = status
        self.retry_after = retry_after
        self.timed_out = timed_out  # no answer in time: a sign of load

    def stop_reason(self, what: str) -> str:
        """Why the pass stops, for a failure that stops it (`Failure.stops_pass`)."""
        if self.failure is Failure.AUTH:
            return f"Kravia refused the token ({what}): {self.args[0]}"
        return f"Kravia's {what} is not where kravia.base_url says: {self}"


class KraviaAuthError(KraviaError):
    """Kravia refused the token (401 or 403): wrong, expired, or without the rights the call
    needs. Stops the whole pass; nothing is retried with it."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(Failure.AUTH, message, status=status)

    def __str__(self) -> str:
        return f"Kravia refused the token ({self.status}): {self.args[0]}"


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a `Retry-After` header, or None when there is no usable hint.

    `0`, negative numbers, dates in the past and garbage all mean "no hint" (a `Retry-After: 0`
    must not turn into a tight retry loop). Hints are clamped to MAX_RETRY_AFTER_SECONDS.
    """
    if value is None:
        return None
    text = value.strip()
    # Seconds as RFC 9110 writes them (ASCII digits; a fraction is taken too), or several
    # headers' worth joined by commas (the longest wait holds); else an HTTP-date.
    parts = [part.strip() for part in text.split(",")]
    if all(_DELAY_SECONDS.fullmatch(part) for part in parts):
        seconds = max(float(part) for part in parts)
    else:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    if seconds <= 0:
        return None
    return min(seconds, MAX_RETRY_AFTER_SECONDS)


def _answered_at(response: httpx.Response) -> datetime | None:
    """When the answer was made, by Kravia's own clock (its `Date` header): an HTTP-date in a
    Retry-After is measured from it, so a clock of ours that is off does not stretch or
    shrink the wait. None (our clock) without a usable one."""
    try:
        made = parsedate_to_datetime(response.headers.get("Date", ""))
    except (TypeError, ValueError, IndexError):
        return None
    return made if made.tzinfo is not None else made.replace(tzinfo=UTC)


# Retry-After's delay-seconds (1*DIGIT, with a fraction allowed): not "1e-9", "Infinity",
# "1_000" or digits of other scripts, which Python's float() would take.
_DELAY_SECONDS = re.compile(r"[0-9]+(?:\.[0-9]+)?")


def classify_response(  # noqa: PLR0911 - one return per class of answer reads best
    response: httpx.Response, *, creates: bool, per_case: bool = False
) -> KraviaError | None:
    """None for a success; otherwise the error with its class. `creates`: the call makes state;
    `per_case`: the path names one case (a 404 there is about that case, not the base URL)."""
    status = response.status_code
    if 200 <= status < 300:
        return None
    message = f"Kravia answered {status}: {_problem_text(response)}"
    if status in {401, 403}:
        return KraviaAuthError(message, status=status)
    if status in CONFIG_STATUSES and not per_case:
        return KraviaError(Failure.CONFIG, f"{message} (is kravia.base_url right?)", status=status)
    if status in NOT_APPLIED_STATUSES:
        retry_after = parse_retry_after(
            response.headers.get("Retry-After"), now=_answered_at(response)
        )
        return KraviaError(Failure.TRANSIENT, message, status=status, retry_after=retry_after)
    if status >= 500:
        failure = Failure.AMBIGUOUS if creates else Failure.TRANSIENT
        return KraviaError(failure, message, status=status)
    if status == 408:
        return KraviaError(
            Failure.AMBIGUOUS if creates else Failure.TRANSIENT, message, status=status
        )
    return KraviaError(Failure.TERMINAL, message, status=status)


def classify_exception(exc: httpx.HTTPError, *, creates: bool) -> KraviaError:
    """Errors before the request left are transient; after it was sent they are ambiguous."""
    not_sent = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
    name = type(exc).__name__
    timed_out = isinstance(exc, httpx.TimeoutException) and not isinstance(exc, httpx.PoolTimeout)
    if isinstance(exc, not_sent) or not creates:
        return KraviaError(
            Failure.TRANSIENT, f"{name}: the request was not answered ({exc})", timed_out=timed_out
        )
    return KraviaError(
        Failure.AMBIGUOUS,
        f"{name}: the connection was lost after the request was sent ({exc})",
        timed_out=timed_out,
    )


def _problem_text(response: httpx.Response) -> str:
    """Kravia's message from an ASP.NET problem body, or the start of the body."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:300] or response.reason_phrase
    if isinstance(body, dict):
        errors = body.get("errors") or body.get("Errors")
        if isinstance(errors, dict) and errors:
            parts = [
                f"{key}: {'; '.join(map(str, value)) if isinstance(value, list) else value}"
                for key, value in errors.items()
            ]
            return " | ".join(parts)
        for key in ("detail", "title", "message", "Message"):
            if body.get(key):
                return str(body[key])
    return json.dumps(body)[:300]


def load_signal(error: KraviaError | None) -> Signal:
    """What an answer (None: a success; else the error it became) says of Kravia's load."""
    if error is None:
        return Signal.ANSWERED
    if error.status == 429:
        return Signal.THROTTLED
    if error.status in OVERLOAD_STATUSES or (error.status is None and error.timed_out):
        return Signal.OVERLOADED
    return Signal.ANSWERED


def start_already_done(error: KraviaError) -> bool:
    """Whether a refused Start reads as "collection was already started" (ASSUMED; see
    ALREADY_STARTED_WORDS). Only trusted after a Start whose outcome was unknown."""
    if error.failure is not Failure.TERMINAL or error.status not in ALREADY_STARTED_STATUSES:
        return False
    text = str(error).lower()
    return any(words in text for words in ALREADY_STARTED_WORDS)


def backoff_delay(
    attempt: int, *, base: float, cap: float, rng: random.Random | None = None
) -> float:
    """Exponential backoff with jitter: a random delay in [base/2, min(cap, base·2^attempt)]."""
    ceiling = min(cap, base * (2 ** max(0, attempt)))
    chooser = rng or random
    return chooser.uniform(min(base / 2, ceiling), ceiling)
