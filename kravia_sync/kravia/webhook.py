"""Kravia's webhooks, decided without I/O: what a body says, whether its signature holds, and
how many case reads a flood of them may cost.

A webhook is never trusted. Its body is size-limited and parsed strictly; a valid one only
names a Kravia case (`claimId`) whose details the daemon reads sooner than the next status
pull-back would (`kravia_sync.service.webhook_server` does the I/O). The signing recipe is
unpublished: the signature is compared with each candidate in
`kravia_sync.kravia.assumptions.WEBHOOK_SIGNATURE_RECIPES`.
Reads are paid from a token bucket, and a case waits at most once in a bounded queue however
many webhooks name it.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

from kravia_sync.kravia.assumptions import (
    WEBHOOK_ALGORITHM,
    webhook_signatures,
)

__all__ = [
    "LogThrottle",
    "MalformedWebhookError",
    "Outcome",
    "PendingRefreshes",
    "SignatureCheck",
    "TokenBucket",
    "WebhookEvent",
    "check_signature",
    "parse_webhook",
]

MAX_CLAIM_ID = 2**63 - 1


class Outcome(StrEnum):
    """What became of one webhook request (the `outcome` label of its metric)."""

    QUEUED = "queued"  # its case will be read
    COALESCED = "coalesced"  # its case was waiting to be read already
    DROPPED = "dropped"  # the queue was full: the status pull-back reads the case later
    UNKNOWN_CLAIM = "unknown_claim"  # not one of our cases: ignored
    OVERSIZED = "oversized"  # 413
    MALFORMED = "malformed"  # 400
    REFUSED = "refused"  # 401: not signed by any candidate recipe, with require_signature


class SignatureCheck(StrEnum):
    """How a webhook's signature compared (the `result` label of its metric)."""

    VALID = "valid"  # one of the candidate recipes gives it
    MISMATCH = "mismatch"  # none does (or another algorithm than MD5 is named)
    MISSING = "missing"  # the body carries no signature
    UNCHECKED = "unchecked"  # no webhook secret is configured to check it with


class MalformedWebhookError(ValueError):
    """The body is not a webhook we can read; the message says why (never quotes the body)."""


@dataclass(frozen=True, slots=True)
class WebhookEvent:
    """What a webhook body says. `data_text` is the exact text of its `data` value."""

    claim_id: int
    event_type: str | None
    timestamp: datetime | None
    algorithm: str | None
    signature: str | None
    data: Mapping[str, object]
    data_text: str


def parse_webhook(body: bytes) -> WebhookEvent:
    """Read a webhook body: a JSON object with `data` (an object holding an integer
    `claimId`), an optional `header` and `signature`. Names are matched case-insensitively;
    a name given twice is refused (the signed `data` could differ from the one read)."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedWebhookError("the body is not UTF-8") from None
    members = _top_level_members(text)
    data_member = members.get("data")
    if data_member is None:
        raise MalformedWebhookError("no `data` object")
    data, data_text = data_member
    if not isinstance(data, dict):
        raise MalformedWebhookError("`data` is not an object")
    header = members.get("header", (None, ""))[0]
    if header is not None and not isinstance(header, dict):
        raise MalformedWebhookError("`header` is not an object")
    algorithm = None if header is None else _get_ci(header, "algorithm")
    if algorithm is not None and not isinstance(algorithm, str):
        raise MalformedWebhookError("`header.algorithm` is not a string")
    signature = members.get("signature", (None, ""))[0]
    if signature is not None and not isinstance(signature, str):
        raise MalformedWebhookError("`signature` is not a string")
    event_type = _get_ci(data, "eventType")
    return WebhookEvent(
        claim_id=_claim_id(_get_ci(data, "claimId")),
        event_type=event_type if isinstance(event_type, str) else None,
        timestamp=_unix_time(_get_ci(data, "timestamp")),
        algorithm=algorithm,
        signature=signature or None,
        data=data,
        data_text=data_text,
    )


def check_signature(event: WebhookEvent, secret: str | None) -> tuple[SignatureCheck, str | None]:
    """How the event's signature compares with the candidate recipes, and the recipe that
    gives it when one does."""
    if secret is None:
        return SignatureCheck.UNCHECKED, None
    if event.signature is None:
        return SignatureCheck.MISSING, None
    if event.algorithm is not None and event.algorithm.upper() != WEBHOOK_ALGORITHM:
        return SignatureCheck.MISMATCH, None
    given = event.signature.strip().lower().encode("ascii", "replace")
    for recipe, digest in webhook_signatures(secret, event.data, event.data_text):
        if hmac.compare_digest(given, digest.encode("ascii")):
            return SignatureCheck.VALID, recipe
    return SignatureCheck.MISMATCH, None


class TokenBucket:
    """At most `rate` takes a second after a burst of `burst`; times are the caller's
    (monotonic seconds), so it is tested without a clock."""

    def __init__(self, *, rate: float, burst: int, now: float) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("a token bucket needs a positive rate and a burst of at least 1")
        self.rate = rate
        self.burst = burst
        self._tokens = float(burst)
        self._at = now

    def _fill(self, now: float) -> None:
        if now > self._at:
            self._tokens = min(float(self.burst), self._tokens + (now - self._at) * self.rate)
            self._at = now

    def wait_seconds(self, now: float) -> float:
        """How long until a token is there (0: one is there now)."""
        self._fill(now)
        return 0.0 if self._tokens >= 1 else (1 - self._tokens) / self.rate

    def take(self, now: float) -> bool:
        """Take a token if one is there."""
        self._fill(now)
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True


class PendingRefreshes:
    """Cases waiting to be read, first come first served, each at most once, at most
    `capacity` of them."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("the queue needs room for at least one case")
        self.capacity = capacity
        self._waiting: dict[int, None] = {}

    def offer(self, claim_id: int) -> Outcome:
        if claim_id in self._waiting:
            return Outcome.COALESCED
        if len(self._waiting) >= self.capacity:
            return Outcome.DROPPED
        self._waiting[claim_id] = None
        return Outcome.QUEUED

    def pop(self) -> int | None:
        """The case waiting longest, or None."""
        if not self._waiting:
            return None
        claim_id = next(iter(self._waiting))
        del self._waiting[claim_id]
        return claim_id

    def __len__(self) -> int:
        return len(self._waiting)


class LogThrottle:
    """At most one log line per `interval` seconds for a kind of event a flood repeats; the
    line says how many were left unlogged since the last."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._last: float | None = None
        self._suppressed = 0

    def allow(self, now: float) -> int | None:
        """None: stay quiet; else log, saying this many were not logged before it."""
        if self._last is not None and now - self._last < self.interval:
            self._suppressed += 1
            return None
        self._last = now
        suppressed, self._suppressed = self._suppressed, 0
        return suppressed


def _top_level_members(text: str) -> dict[str, tuple[object, str]]:
    """The members of the JSON object `text`, by lower-cased name: (value, its exact text)."""
    try:
        parsed = json.loads(
            text, object_pairs_hook=_without_duplicates, parse_constant=_no_constant
        )
    except (ValueError, RecursionError) as exc:  # MalformedWebhookError is a ValueError
        if isinstance(exc, MalformedWebhookError):
            raise
        raise MalformedWebhookError("the body is not valid JSON") from None
    if not isinstance(parsed, dict):
        raise MalformedWebhookError("the body is not a JSON object")
    # Valid JSON from here on: walk its top level for the exact text of each value.
    decoder = json.JSONDecoder()
    members: dict[str, tuple[object, str]] = {}
    position = _skip_space(text, _skip_space(text, 0) + 1)
    while position < len(text) and text[position] == '"':
        name, position = decoder.raw_decode(text, position)
        start = _skip_space(text, _skip_space(text, position) + 1)  # past the colon
        value, end = decoder.raw_decode(text, start)
        members[str(name).lower()] = (value, text[start:end])
        position = _skip_space(text, end)
        if text.startswith(",", position):
            position = _skip_space(text, position + 1)
    return members


def _no_constant(name: str) -> object:
    raise MalformedWebhookError(f"{name} is not JSON")


def _without_duplicates(pairs: list[tuple[str, object]]) -> dict[str, object]:
    names = [name.lower() for name, _ in pairs]
    if len(set(names)) != len(names):
        raise MalformedWebhookError("a name is given twice")
    return dict(pairs)


def _skip_space(text: str, position: int) -> int:
    while position < len(text) and text[position] in " \t\r\n":
        position += 1
    return position


def _get_ci(item: Mapping[str, object], name: str) -> object:
    if name in item:
        return item[name]
    lowered = name.lower()
    return next((value for key, value in item.items() if key.lower() == lowered), None)


def _claim_id(value: object) -> int:
    if isinstance(value, str) and value.isascii() and value.isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= MAX_CLAIM_ID:
        raise MalformedWebhookError("`data.claimId` is not a Kravia invoice id")
    return value


def _unix_time(value: object) -> datetime | None:
    """Kravia's timestamp (Unix seconds) as an aware time; None when missing or unreadable
    (only ever shown, never acted on)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        return datetime.fromtimestamp(value, UTC)
    except (OverflowError, OSError, ValueError):
        return None
