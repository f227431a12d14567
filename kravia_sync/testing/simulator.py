"""A strict local Kravia simulator: a real HTTP server with the same contract as the real API.

Used by tests, benchmarks and the demo (`kravia-sync simulate`). It implements the calls
kravia-sync makes, as documented in Kravia's API guide plus the assumptions the client makes
(see `kravia_sync.kravia.client`), and it is deliberately strict: what it accepts, the client may
send; what it refuses, a real ASP.NET service would very likely refuse too.

API (all under `/api/v2/`, header `Authorization: <token>`):

- `POST invoice/register` - JSON body; 200 `{"id", "invoiceNo", "accountingInvoiceId",
  "status"}`; 400 ASP.NET validation problem. NOT idempotent: the same body twice makes two
  cases (so tests can detect duplicates).
- `POST invoice/{id}/document?type=Invoice` - multipart part `file` (or JSON `{"file": b64}`).
- `POST invoice/{id}/action?action=Start|Pause|Resume` - JSON `{"Message": "..."}`. Start
  needs a registered case, Pause a started one, Resume a paused one (Pause and Resume are
  ASSUMED names). An action the status does not allow is 400 "Action <name> is not
  available for this invoice." (for Start on a started case, a stand-in: Kravia does not
  publish what it answers).
- `GET invoice/search?byAscending=&lastUpdatedTime=&orderBy=11&skip=&top=` - `{"totalCount",
  "items": [{"id", "invoiceNo", "accountingInvoiceId", "status", "currencyCode",
  "originalAmount", "remainingAmount", "outstandingAmount", "lastUpdatedTime"}]}`.
- `GET invoice/{id}/details` - the summary plus `debtorName`, `documents`, `payments`
  (`[{"id", "type": "Payment"|"CreditNote"|"Collected", "accountingPaymentId", "date",
  "amount", "appliedAmount", "settlementId", "registeredTime"}]`, credit notes negative),
  `availableActions` and `timeline`.
- `POST invoice/payment` - `{"date", "description", "AccountingPaymentId", "amount",
  "invoices": [{"invoiceId", "amount"}]}`, amounts > 0 and the lines summing to `amount`.
- `POST invoice/creditnote` - `{"Date", "Amount", "AccountingPaymentId", "Description",
  "Invoices": [{"InvoiceId", "Amount"}]}`, amounts < 0.
  Both take each line off its case's capital, at most what remains (the excess is ignored);
  a case whose capital reaches 0 is `Closed`. Neither is de-duplicated by
  AccountingPaymentId: the same payment sent twice counts twice.
- `GET settlements?ExcludeClosed=true` - `{"totalCount", "items": [{"id", "settlementDate",
  "amount", "currencyCode", "isBooked", "internalAccountingId", "invoices": [{"invoiceId",
  "invoiceNo", "accountingInvoiceId", "amount"}]}]}`; ExcludeClosed leaves out booked ones.
- `PATCH settlements/{id}/bookkeep?internalAccountingId=...` - marks a settlement booked
  (again under the same id: no change; under another id: 400).
- `PUT creditor/{id}/webhook` - `{"secret", "enabled", "url"}`: the creditor's webhook (one;
  kept in memory only). While it is enabled, every change to a case (registered, a document,
  an action, money, a payout) sends a webhook to the URL, signed by the simulator's choice of
  recipe (see `kravia_sync.testing._sim_webhooks`).

Status names (ASSUMED): Registered -> CollectionStarted (<-> Paused) and Closed once nothing
remains of the capital. No fees or interest are simulated: outstanding = remaining capital.

Kravia publishes no reference, so the shapes above are the defaults among several plausible
ones (`Shape`, set by keyword arguments, the `shape` property or `/_sim/shape`):

- `details_shape`: "list" (above); "object" - `availableActions` is `{"Start": true, "Pause":
  false, "Resume": false}` (every action known) and there is no `documents` key; "named" -
  `availableActions` is `[{"name": "Start"}]` and each document has `documentType` for `type`.
- `search_shape`: "items" (above); "list" - a bare JSON list; "data" - `{"data": [...]}`;
  "value" - `{"value": [...], "count": n}`. With `search_without_aid` the search items carry
  no `accountingInvoiceId` key (the details still do).
- `clock_offset_seconds`: Kravia's clock is the host's plus this; every time handed out (and
  the search's `lastUpdatedTime` filter, which compares with them) is on Kravia's clock.
- `register_shape`: "id" (above); "bare" - the id alone; "invoice_id" - `invoiceId` for `id`;
  "no_id" - the object without any id (an answer the engine cannot read).
- `time_zone`: "utc" (above); "local" - `lastUpdatedTime` of search items and details as
  Oslo's wall-clock time without a zone; "offset" - the same with its offset (`+01:00`). The
  search's `lastUpdatedTime` filter is still read as UTC.

Every answer, API or control, has a `Date` header (RFC 7231) from Kravia's clock, set by the
app itself, so it is there in process too (`httpx.ASGITransport(app=simulator.app)`). In
process, every endpoint works, but two faults cannot be what they are over HTTP: a dropped
answer raises `kravia_sync.testing._dropped.ConnectionDroppedError` out of the transport (or, with
`raise_app_exceptions=False`, gives the status and half the body), and a `timeout` only
delays the answer (the transport enforces no client timeout).

Control endpoints (no auth) under `/_sim/`: `GET cases`, `GET cases/{id}/documents/{n}`
(n is the 0-based position in the case's document list), `GET calls`, `GET faults`,
`PUT faults`, `GET shape`, `PUT shape` (`{"details_shape", "search_shape",
"search_without_aid", "clock_offset_seconds", "register_shape", "time_zone"}`; keys left out
take their defaults, unknown keys or values answer 400 `{"error"}`), `POST reset` (forgets
cases, calls and faults; keeps the shape), and for money:

- `GET payments` - every payment, credit note and payout accepted, in order:
  `[{"seq", "type", "accountingPaymentId", "date", "description", "amount", "invoices":
  [{"invoiceId", "amount", "appliedAmount"}], "settlementId", "received"}]`.
- `POST payout` - `{"invoiceId", "amount"}` or `{"invoices": [{"invoiceId", "amount"}]}`,
  optional `"date"`: the debtor paid Kravia and Kravia paid the creditor out. Each amount
  comes off the case's capital as a `Collected` payment and one unbooked settlement covers
  them; answers the settlement. 400 `{"error"}` for an unknown or closed case or an amount
  not in (0, remaining capital].
- `GET settlements` - every settlement, booked or not.
- `GET webhook` - the webhook's URL and whether it is enabled (never its secret), and every
  delivery: `{"url", "enabled", "secretSet", "deliveries": [{"claimId", "timestamp",
  "signing", "status", "error"}]}`.
- `POST webhook` - `{"claimId", "signing": "good"|"bad"|"none", "duplicate", "outOfOrder"}`:
  send one now (also for a case that does not exist); answers each delivery's result.

`calls()` / `GET /_sim/calls` answers::

    {"total": 7,
     "register": {"200": 3, "0": 1}, "document": {...}, "action": {...},
     "search": {...}, "details": {...}, "payment": {...}, "creditnote": {...},
     "settlements": {...}, "bookkeep": {...},    # counts by HTTP status (0: dropped)
     "processed": {"register": 4, "document": 0, ...}}   # calls whose effect was applied
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import copy
import hashlib
import json
import math
import random
import re
import secrets
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from email.utils import format_datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, Final, TypeVar
from zoneinfo import ZoneInfo

import uvicorn
from starlette.applications import Starlette
from starlette.datastructures import MutableHeaders, UploadFile
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kravia_sync.testing._dropped import DroppedResponse, quiet_dropped_connections
from kravia_sync.testing._sim_webhooks import (
    MAX_DELIVERIES_KEPT,
    Signing,
    WebhookSender,
    WebhookSetting,
    deliveries_for,
    validate_setting,
)
from kravia_sync.testing.running import RunningServer

__all__ = [
    "MUTATING_OPERATIONS",
    "OPERATIONS",
    "DetailsShape",
    "Faults",
    "RegisterShape",
    "RunningSimulator",
    "SearchShape",
    "Shape",
    "Simulator",
    "TimeZone",
    "serve",
]

OPERATIONS: Final[tuple[str, ...]] = (
    "register",
    "document",
    "action",
    "search",
    "details",
    "payment",
    "creditnote",
    "settlements",
    "bookkeep",
    "webhook",
)
MUTATING_OPERATIONS: Final[frozenset[str]] = frozenset(
    {"register", "document", "action", "payment", "creditnote", "bookkeep", "webhook"}
)

FIRST_CASE_ID: Final = 1_000_001
FIRST_DOCUMENT_ID: Final = 500_001
FIRST_PAYMENT_ID: Final = 700_001
FIRST_SETTLEMENT_ID: Final = 90_001
CLAIM_TYPE: Final = "CollectionCase"
DOCUMENT_TYPES: Final = frozenset({"Invoice"})
ACTION_START: Final = "Start"
# ASSUMED (unpublished in Kravia's guides): the names of the pause and resume actions.
ACTION_PAUSE: Final = "Pause"
ACTION_RESUME: Final = "Resume"
# ASSUMED: how a payment is typed in a case's details.
PAYMENT_TYPE: Final = "Payment"  # the debtor paid the creditor directly (invoice/payment)
CREDIT_NOTE_TYPE: Final = "CreditNote"  # the creditor credited the claim (invoice/creditnote)
COLLECTED_TYPE: Final = "Collected"  # the debtor paid Kravia, which paid the creditor out
ORDER_BY_LAST_UPDATED: Final = 11
DEFAULT_TOP: Final = 20
MAX_TOP: Final = 100
MAX_BODY_BYTES: Final = 25 * 1024 * 1024
# ASSUMED: case status names. Registered until Start; Closed once the capital reaches 0.
STATUS_REGISTERED: Final = "Registered"
STATUS_STARTED: Final = "CollectionStarted"
STATUS_PAUSED: Final = "Paused"
STATUS_CLOSED: Final = "Closed"
# action -> (the status it needs, the status it leads to)
_ACTIONS: Final[Mapping[str, tuple[str, str]]] = {
    ACTION_START: (STATUS_REGISTERED, STATUS_STARTED),
    ACTION_PAUSE: (STATUS_STARTED, STATUS_PAUSED),
    ACTION_RESUME: (STATUS_PAUSED, STATUS_STARTED),
}
DATA_FILE_FORMAT: Final = "kravia-sync-simulator/2"
_OLDER_DATA_FILE_FORMATS: Final = frozenset({"kravia-sync-simulator/1"})

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_TICKS_PER_SECOND: Final = 10_000_000
_MAX_DECIMAL: Final = Decimal(79228162514264337593543950335)  # System.Decimal.MaxValue
_INT32_MIN: Final = -(2**31)
_INT32_MAX: Final = 2**31 - 1
_CONVERT: Final = "The JSON value could not be converted to {}."

_DATE_RE: Final = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})(?:T([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.[0-9]{1,7})?)?"
)
_DOTNET_TIME_RE: Final = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})"
    r"(?:[T ]([0-9]{2}):([0-9]{2})(?::([0-9]{2})(?:\.([0-9]{1,7}))?)?)?"
    r"(Z|[+-][0-9]{2}:[0-9]{2})?"
)
_CURRENCY_RE: Final = re.compile(r"[A-Z]{3}")
_COUNTRY_RE: Final = re.compile(r"[A-Z]{2}")
_ORGNR_RE: Final = re.compile(r"[0-9]{9}")
_INT_RE: Final = re.compile(r"[+-]?[0-9]{1,18}")

_PROBLEM_TYPES: Final[Mapping[int, tuple[str, str]]] = {
    400: ("https://tools.ietf.org/html/rfc9110#section-15.5.1", "Bad Request"),
    401: ("https://tools.ietf.org/html/rfc9110#section-15.5.2", "Unauthorized"),
    404: ("https://tools.ietf.org/html/rfc9110#section-15.5.5", "Not Found"),
    413: ("https://tools.ietf.org/html/rfc9110#section-15.5.14", "Content Too Large"),
    415: ("https://tools.ietf.org/html/rfc9110#section-15.5.16", "Unsupported Media Type"),
    429: ("https://tools.ietf.org/html/rfc6585#section-4", "Too Many Requests"),
    500: (
        "https://tools.ietf.org/html/rfc9110#section-15.6.1",
        "An error occurred while processing your request.",
    ),
}
_VALIDATION_TITLE: Final = "One or more validation errors occurred."
_JSON_TYPE: Final = "application/json; charset=utf-8"
_PROBLEM_TYPE: Final = "application/problem+json; charset=utf-8"

_ABSENT: Final = object()


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


# --- answer shapes and clock -----------------------------------------------------------------


class DetailsShape(StrEnum):
    """How `GET invoice/{id}/details` lists the available actions and the documents (ASSUMED:
    Kravia publishes no reference, so the simulator offers each plausible shape)."""

    LIST = "list"  # "availableActions": ["Start"], "documents": [{"type": "Invoice", ...}]
    OBJECT = "object"  # "availableActions": {"Start": true, ...}, no "documents" key
    NAMED = "named"  # "availableActions": [{"name": "Start"}], "documentType" for "type"


class SearchShape(StrEnum):
    """The envelope of `GET invoice/search` (ASSUMED, like the details' shape)."""

    ITEMS = "items"  # {"totalCount": n, "items": [...]}
    LIST = "list"  # [...]
    DATA = "data"  # {"data": [...]}
    VALUE = "value"  # {"value": [...], "count": n}


class RegisterShape(StrEnum):
    """What `POST invoice/register` answers (ASSUMED: the guide shows no answer)."""

    ID = "id"  # {"id": n, "invoiceNo", "accountingInvoiceId", "status"}
    BARE = "bare"  # n
    INVOICE_ID = "invoice_id"  # {"invoiceId": n, ...}
    NO_ID = "no_id"  # {"invoiceNo", "accountingInvoiceId", "status"}: no id at all


class TimeZone(StrEnum):
    """How `lastUpdatedTime` is written in search items and details (ASSUMED: UTC)."""

    UTC = "utc"  # 2026-11-27T06:24:01.1234567 (UTC, no zone, as the guide shows)
    LOCAL = "local"  # Oslo's wall-clock time, no zone
    OFFSET = "offset"  # Oslo's wall-clock time with its offset: ...1234567+01:00


_LOCAL_ZONE: Final = ZoneInfo("Europe/Oslo")

# A bound far beyond any real clock skew that keeps every shifted time a valid datetime.
MAX_CLOCK_OFFSET_SECONDS: Final = 10 * 366 * 86_400.0


@dataclass(frozen=True)
class Shape:
    """How the simulated Kravia answers: which shape of details and search it serves, whether
    search items carry `accountingInvoiceId`, and how far Kravia's clock is from the host's.

    These are configuration (which Kravia is being simulated), not faults: `reset()` keeps
    them. Shapes may be given as their names (`Shape(details_shape="object")`).
    """

    details_shape: DetailsShape = DetailsShape.LIST
    search_shape: SearchShape = SearchShape.ITEMS
    search_without_aid: bool = False
    clock_offset_seconds: float = 0.0
    register_shape: RegisterShape = RegisterShape.ID
    time_zone: TimeZone = TimeZone.UTC

    def __post_init__(self) -> None:
        # frozen: the coerced values are set through object.__setattr__, once, here
        object.__setattr__(
            self, "details_shape", _shape_name(DetailsShape, "details_shape", self.details_shape)
        )
        object.__setattr__(
            self, "search_shape", _shape_name(SearchShape, "search_shape", self.search_shape)
        )
        _flag("search_without_aid", self.search_without_aid)
        object.__setattr__(self, "clock_offset_seconds", _clock_offset(self.clock_offset_seconds))
        object.__setattr__(
            self,
            "register_shape",
            _shape_name(RegisterShape, "register_shape", self.register_shape),
        )
        object.__setattr__(self, "time_zone", _shape_name(TimeZone, "time_zone", self.time_zone))

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> Shape:
        """A Shape from a JSON-like mapping; keys left out take their defaults.

        Unknown keys and values raise ValueError; wrong types raise TypeError.
        """
        known = [item.name for item in fields(cls)]
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise ValueError(
                f"unknown shape settings: {', '.join(unknown)} (known: {', '.join(known)})"
            )
        default = cls()
        return cls(
            details_shape=_shape_name(
                DetailsShape, "details_shape", data.get("details_shape", default.details_shape)
            ),
            search_shape=_shape_name(
                SearchShape, "search_shape", data.get("search_shape", default.search_shape)
            ),
            search_without_aid=_flag(
                "search_without_aid", data.get("search_without_aid", default.search_without_aid)
            ),
            clock_offset_seconds=_clock_offset(
                data.get("clock_offset_seconds", default.clock_offset_seconds)
            ),
            register_shape=_shape_name(
                RegisterShape, "register_shape", data.get("register_shape", default.register_shape)
            ),
            time_zone=_shape_name(TimeZone, "time_zone", data.get("time_zone", default.time_zone)),
        )

    def to_dict(self) -> dict[str, Any]:
        """The settings as a JSON-ready dict (the inverse of from_dict)."""
        return {
            "details_shape": self.details_shape.value,
            "search_shape": self.search_shape.value,
            "search_without_aid": self.search_without_aid,
            "clock_offset_seconds": self.clock_offset_seconds,
            "register_shape": self.register_shape.value,
            "time_zone": self.time_zone.value,
        }


_E = TypeVar("_E", bound=StrEnum)


def _shape_name(kind: type[_E], name: str, value: object) -> _E:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a string, not {value!r}")
    try:
        return kind(value)
    except ValueError:
        known = ", ".join(member.value for member in kind)
        raise ValueError(f"{name}: unknown {value!r} (known: {known})") from None


def _flag(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be true or false, not {value!r}")
    return value


def _clock_offset(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"clock_offset_seconds must be a number, not {value!r}")
    not_finite = isinstance(value, float) and not math.isfinite(value)
    # compared before float(): a huge JSON integer would overflow the conversion
    if not_finite or abs(value) > MAX_CLOCK_OFFSET_SECONDS:
        raise ValueError(
            f"clock_offset_seconds must be a number of seconds within "
            f"±{MAX_CLOCK_OFFSET_SECONDS:.0f}, not {value!r}"
        )
    return float(value)


def _actions_as_object(available: Sequence[str]) -> dict[str, bool]:
    """Every action the simulator knows, true where it is available now."""
    return {name: name in available for name in _ACTIONS}


def _with_document_type(document: Mapping[str, Any]) -> dict[str, Any]:
    """A document view with `documentType` in place of `type` (same position)."""
    return {("documentType" if key == "type" else key): value for key, value in document.items()}


def _details_as_object(view: Mapping[str, Any]) -> dict[str, Any]:
    shaped = {key: value for key, value in view.items() if key != "documents"}
    shaped["availableActions"] = _actions_as_object(view["availableActions"])
    return shaped


def _details_as_named(view: Mapping[str, Any]) -> dict[str, Any]:
    return {
        **view,
        "availableActions": [{"name": name} for name in view["availableActions"]],
        "documents": [_with_document_type(document) for document in view["documents"]],
    }


# Each shape from the "list" view the case builds (key order kept, so answers read alike).
_DETAILS_SHAPERS: Final[Mapping[DetailsShape, Callable[[Mapping[str, Any]], dict[str, Any]]]] = {
    DetailsShape.LIST: dict,
    DetailsShape.OBJECT: _details_as_object,
    DetailsShape.NAMED: _details_as_named,
}


def _shaped_details(view: Mapping[str, Any], shape: Shape) -> dict[str, Any]:
    """A case's details (in the "list" shape) as `shape` answers them."""
    return _zoned(_DETAILS_SHAPERS[shape.details_shape](view), shape.time_zone)


def _zoned(view: Mapping[str, Any], zone: TimeZone) -> dict[str, Any]:
    """The view with its `lastUpdatedTime` (written in UTC) written as `zone` says."""
    shaped = dict(view)
    text = shaped.get("lastUpdatedTime")
    if zone is TimeZone.UTC or not isinstance(text, str):
        return shaped
    head, _, fraction = text.partition(".")
    local = datetime.fromisoformat(head).replace(tzinfo=UTC).astimezone(_LOCAL_ZONE)
    written = local.strftime("%Y-%m-%dT%H:%M:%S.") + fraction
    if zone is TimeZone.OFFSET:
        written += local.isoformat()[-6:]
    shaped["lastUpdatedTime"] = written
    return shaped


def _register_answer(payload: Mapping[str, Any], shape: RegisterShape) -> object:
    """The register answer (`{"id", ...}`) as `shape` gives it."""
    match shape:
        case RegisterShape.ID:
            return dict(payload)
        case RegisterShape.BARE:
            return payload["id"]
        case RegisterShape.INVOICE_ID:
            return {("invoiceId" if key == "id" else key): value for key, value in payload.items()}
        case RegisterShape.NO_ID:
            return {key: value for key, value in payload.items() if key != "id"}


def _shaped_search(
    items: Sequence[Mapping[str, Any]], total: int, shape: Shape
) -> dict[str, Any] | list[dict[str, Any]]:
    """One page of search items (`total` matching in all) in the configured envelope."""
    page = [
        _zoned(
            {key: value for key, value in item.items() if key != "accountingInvoiceId"}
            if shape.search_without_aid
            else item,
            shape.time_zone,
        )
        for item in items
    ]
    match shape.search_shape:
        case SearchShape.ITEMS:
            return {"totalCount": total, "items": page}
        case SearchShape.LIST:
            return page
        case SearchShape.DATA:
            return {"data": page}
        case SearchShape.VALUE:
            return {"value": page, "count": total}


class _DateHeader:
    """Adds a `Date` header (RFC 7231) from the simulator's clock to every answer.

    uvicorn would add the host's time; this one shows Kravia's (with the clock offset) and is
    also there when the app is driven in process (httpx.ASGITransport), where no server adds
    one. uvicorn's own is switched off where the simulator is served, so there is only one.
    """

    def __init__(self, app: ASGIApp, now: Callable[[], datetime]) -> None:
        self._app = app
        self._now = now

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return

        async def send_dated(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message)["date"] = format_datetime(self._now(), usegmt=True)
            await send(message)

        await self._app(scope, receive, send_dated)


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


# --- validation -------------------------------------------------------------------------------


class _Errors:
    def __init__(self) -> None:
        self.items: dict[str, list[str]] = {}

    def add(self, key: str, message: str) -> None:
        self.items.setdefault(key, []).append(message)


def _leaf(key: str) -> str:
    return key.rsplit(".", 1)[-1]


def _required_string(errors: _Errors, key: str, value: object) -> str | None:
    if value is _ABSENT or value is None:
        errors.add(key, f"The {_leaf(key)} field is required.")
        return None
    if not isinstance(value, str):
        errors.add(key, _CONVERT.format("System.String"))
        return None
    if not value.strip():
        errors.add(key, f"The {_leaf(key)} field is required.")
        return None
    return value


def _optional_string(errors: _Errors, key: str, value: object) -> str | None:
    if value is _ABSENT or value is None:
        return None
    if not isinstance(value, str):
        errors.add(key, _CONVERT.format("System.String"))
        return None
    return value


def _date_field(errors: _Errors, key: str, value: object) -> date | None:
    text = _required_string(errors, key, value)
    if text is None:
        return None
    match = _DATE_RE.fullmatch(text)
    parsed: date | None = None
    if match is not None:
        year, month, day, hour, minute, second = match.groups()
        with contextlib.suppress(ValueError):
            parsed = datetime(  # validates the calendar date and the time of day
                int(year),
                int(month),
                int(day),
                int(hour or 0),
                int(minute or 0),
                int(second or 0),
                tzinfo=UTC,
            ).date()
    if parsed is None:
        errors.add(key, _CONVERT.format("System.DateTime"))
    return parsed


def _amount_field(errors: _Errors, key: str, value: object) -> Decimal | None:
    if value is _ABSENT:
        errors.add(key, f"The {_leaf(key)} field is required.")
        return None
    if isinstance(value, bool) or not isinstance(value, int | Decimal):
        errors.add(key, _CONVERT.format("System.Decimal"))
        return None
    amount = Decimal(value)
    if not amount.is_finite() or abs(amount) > _MAX_DECIMAL:
        errors.add(key, _CONVERT.format("System.Decimal"))
        return None
    if amount <= 0:
        errors.add(key, f"The field {_leaf(key)} must be greater than 0.")
        return None
    return amount


def _bool_field(errors: _Errors, key: str, value: object) -> bool | None:
    if value is _ABSENT or value is None:
        errors.add(key, f"The {_leaf(key)} field is required.")
        return None
    if isinstance(value, bool):
        return value
    if value in {"true", "false"}:  # the guide sends the flag as a lower-case string
        return value == "true"
    errors.add(key, _CONVERT.format("System.Boolean"))
    return None


def _creditor_field(errors: _Errors, value: object, expected: int | None) -> None:
    key = "CreditorId"
    if value is _ABSENT:
        errors.add(key, "The CreditorId field is required.")
    elif (
        isinstance(value, bool)
        or not isinstance(value, int)
        or not _INT32_MIN <= value <= _INT32_MAX
    ):
        errors.add(key, _CONVERT.format("System.Int32"))
    elif expected is not None and value != expected:
        errors.add(key, f"Creditor {value} is not accessible with this token.")


def _address_field(errors: _Errors, value: object) -> None:
    key = "PostalAddress"
    if value is _ABSENT or value is None:
        errors.add(key, "The PostalAddress field is required.")
        return
    if not isinstance(value, dict):
        errors.add(key, _CONVERT.format("PostalAddress"))
        return
    address = _ci(value)
    for name in ("AddressAddressLine1", "AddressPostalCode", "AddressCity"):
        _required_string(errors, f"{key}.{name}", address.get(name.lower(), _ABSENT))
    _optional_string(
        errors, f"{key}.AddressAddressLine2", address.get("addressaddressline2", _ABSENT)
    )
    country_key = f"{key}.AddressCountryCode"
    country = _required_string(errors, country_key, address.get("addresscountrycode", _ABSENT))
    if country is not None and not _COUNTRY_RE.fullmatch(country):
        errors.add(
            country_key,
            "The field AddressCountryCode must be a two-letter ISO 3166-1 code (e.g. NO).",
        )


@dataclass(frozen=True)
class _Registration:
    invoice_no: str
    accounting_invoice_id: str | None
    original_amount: Decimal
    currency_code: str
    debtor_name: str


def validate_register(
    body: object, creditor_id: int | None = None
) -> tuple[dict[str, list[str]], _Registration | None]:
    """ASP.NET-style validation of an `invoice/register` body: (errors by field, registration)."""
    errors = _Errors()
    if not isinstance(body, dict):
        errors.add("$", _CONVERT.format("the register request (a JSON object)"))
        return errors.items, None
    data = _ci(body)

    claim = _required_string(errors, "ClaimType", data.get("claimtype", _ABSENT))
    if claim is not None and claim != CLAIM_TYPE:
        errors.add("ClaimType", f"The value '{claim}' is not valid for ClaimType.")
    _creditor_field(errors, data.get("creditorid", _ABSENT), creditor_id)
    invoice_no = _required_string(errors, "InvoiceNo", data.get("invoiceno", _ABSENT))
    invoice_date = _date_field(errors, "InvoiceDate", data.get("invoicedate", _ABSENT))
    due_date = _date_field(errors, "DueDate", data.get("duedate", _ABSENT))
    if invoice_date is not None and due_date is not None and due_date < invoice_date:
        errors.add("DueDate", "The DueDate must not be before the InvoiceDate.")
    amount = _amount_field(errors, "OriginalAmount", data.get("originalamount", _ABSENT))
    currency = _required_string(errors, "CurrencyCode", data.get("currencycode", _ABSENT))
    if currency is not None and not _CURRENCY_RE.fullmatch(currency):
        errors.add(
            "CurrencyCode",
            "The field CurrencyCode must be a three-letter ISO 4217 code (e.g. NOK).",
        )
    debtor_name = _required_string(errors, "DebtorName", data.get("debtorname", _ABSENT))
    private = _bool_field(errors, "IsPrivateIndividual", data.get("isprivateindividual", _ABSENT))
    _address_field(errors, data.get("postaladdress", _ABSENT))
    org = _optional_string(errors, "OrganizationNumber", data.get("organizationnumber", _ABSENT))
    if private is False and (org is None or not org.strip()):
        if "OrganizationNumber" not in errors.items:
            errors.add(
                "OrganizationNumber", "The OrganizationNumber field is required for B2B claims."
            )
    elif org and not _ORGNR_RE.fullmatch(org):
        errors.add("OrganizationNumber", "The field OrganizationNumber must be 9 digits.")
    for name in ("Email", "Ssn", "DebtorNumber", "Description"):
        _optional_string(errors, name, data.get(name.lower(), _ABSENT))
    accounting_id = _optional_string(
        errors, "AccountingInvoiceId", data.get("accountinginvoiceid", _ABSENT)
    )

    if (
        errors.items
        or invoice_no is None
        or amount is None
        or currency is None
        or debtor_name is None
    ):
        return errors.items, None
    return errors.items, _Registration(
        invoice_no=invoice_no,
        accounting_invoice_id=accounting_id,
        original_amount=amount,
        currency_code=currency,
        debtor_name=debtor_name,
    )


def _int32_field(errors: _Errors, key: str, value: object) -> int | None:
    if value is _ABSENT or value is None:
        errors.add(key, f"The {_leaf(key)} field is required.")
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or not _INT32_MIN <= value <= _INT32_MAX
    ):
        errors.add(key, _CONVERT.format("System.Int32"))
        return None
    return value


def _signed_amount(errors: _Errors, key: str, value: object, *, negative: bool) -> Decimal | None:
    """A decimal amount that must be below 0 (`negative`) or above 0."""
    if value is _ABSENT or value is None:
        errors.add(key, f"The {_leaf(key)} field is required.")
        return None
    if isinstance(value, bool) or not isinstance(value, int | Decimal):
        errors.add(key, _CONVERT.format("System.Decimal"))
        return None
    amount = Decimal(value)
    if not amount.is_finite() or abs(amount) > _MAX_DECIMAL:
        errors.add(key, _CONVERT.format("System.Decimal"))
        return None
    if negative and amount >= 0:
        errors.add(key, f"The field {_leaf(key)} must be less than 0.")
        return None
    if not negative and amount <= 0:
        errors.add(key, f"The field {_leaf(key)} must be greater than 0.")
        return None
    return amount


@dataclass(frozen=True)
class _MoneyLine:
    invoice_id: int
    amount: Decimal  # as sent: negative on a credit note


@dataclass(frozen=True)
class _MoneyRequest:
    """A validated `invoice/payment` or `invoice/creditnote` body."""

    type: str  # PAYMENT_TYPE or CREDIT_NOTE_TYPE
    accounting_payment_id: str
    on: date
    description: str | None
    amount: Decimal
    lines: tuple[_MoneyLine, ...]


def _money_lines(errors: _Errors, value: object, *, negative: bool) -> list[_MoneyLine] | None:
    key = "Invoices"
    if value is _ABSENT or value is None:
        errors.add(key, "The Invoices field is required.")
        return None
    if not isinstance(value, list):
        errors.add(key, _CONVERT.format("System.Collections.Generic.List`1[InvoiceAmount]"))
        return None
    if not value:
        errors.add(key, "The Invoices field must list at least one invoice.")
        return None
    lines: list[_MoneyLine] = []
    seen: set[int] = set()
    for index, item in enumerate(value):
        prefix = f"{key}[{index}]"
        if not isinstance(item, dict):
            errors.add(prefix, _CONVERT.format("InvoiceAmount"))
            continue
        line = _ci(item)
        invoice_id = _int32_field(errors, f"{prefix}.InvoiceId", line.get("invoiceid", _ABSENT))
        amount = _signed_amount(
            errors, f"{prefix}.Amount", line.get("amount", _ABSENT), negative=negative
        )
        if invoice_id is not None and invoice_id in seen:
            errors.add(f"{prefix}.InvoiceId", f"Invoice {invoice_id} is listed more than once.")
            continue
        if invoice_id is not None:
            seen.add(invoice_id)
        if invoice_id is not None and amount is not None:
            lines.append(_MoneyLine(invoice_id, amount))
    return lines


def validate_money(
    body: object, *, credit_note: bool
) -> tuple[dict[str, list[str]], _MoneyRequest | None]:
    """ASP.NET-style validation of an `invoice/payment` (or, with `credit_note`, an
    `invoice/creditnote`) body: (errors by field, the request). Whether the invoices exist is
    checked by the caller, against the cases held."""
    errors = _Errors()
    what = "credit note" if credit_note else "payment"
    if not isinstance(body, dict):
        errors.add("$", _CONVERT.format(f"the {what} request (a JSON object)"))
        return errors.items, None
    data = _ci(body)
    accounting_id = _required_string(
        errors, "AccountingPaymentId", data.get("accountingpaymentid", _ABSENT)
    )
    on = _date_field(errors, "Date", data.get("date", _ABSENT))
    description = _optional_string(errors, "Description", data.get("description", _ABSENT))
    amount = _signed_amount(errors, "Amount", data.get("amount", _ABSENT), negative=credit_note)
    lines = _money_lines(errors, data.get("invoices", _ABSENT), negative=credit_note)
    if amount is not None and lines is not None and not errors.items:
        total = sum((line.amount for line in lines), Decimal(0))
        if total != amount:
            errors.add(
                "Amount",
                f"The field Amount ({amount}) must equal the sum of the Invoices ({total}).",
            )
    if errors.items or accounting_id is None or on is None or amount is None or not lines:
        return errors.items, None
    return errors.items, _MoneyRequest(
        type=CREDIT_NOTE_TYPE if credit_note else PAYMENT_TYPE,
        accounting_payment_id=accounting_id,
        on=on,
        description=description,
        amount=amount,
        lines=tuple(lines),
    )


# --- state ------------------------------------------------------------------------------------


@dataclass
class _Document:
    id: int
    type: str
    file_name: str
    content: bytes
    created: datetime

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.content).hexdigest()


@dataclass
class _Payment:
    """Money recorded against one case: a payment, a credit note or a Kravia payout."""

    id: int
    type: str
    accounting_payment_id: str | None
    on: date
    amount: Decimal  # as received: negative for a credit note
    applied: Decimal  # what reduced the capital, with the same sign
    registered: datetime
    settlement_id: int | None = None

    def view(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": self.type,
            "accountingPaymentId": self.accounting_payment_id,
            "date": self.on.isoformat(),
            "amount": self.amount,
            "appliedAmount": self.applied,
            "settlementId": self.settlement_id,
            "registeredTime": format_dotnet_time(self.registered),
        }

    def to_record(self) -> dict[str, Any]:
        return self.view() | {"registeredTime": _iso(self.registered)}

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> _Payment:
        settlement = record.get("settlementId")
        return cls(
            id=int(record["id"]),
            type=str(record["type"]),
            accounting_payment_id=record["accountingPaymentId"],
            on=date.fromisoformat(record["date"]),
            amount=Decimal(record["amount"]),
            applied=Decimal(record["appliedAmount"]),
            registered=datetime.fromisoformat(record["registeredTime"]),
            settlement_id=None if settlement is None else int(settlement),
        )


@dataclass
class _Settlement:
    """A payout from Kravia to the creditor, covering money collected on one or more cases."""

    id: int
    on: date
    lines: list[tuple[int, Decimal]]  # (case id, amount)
    created: datetime
    internal_accounting_id: str | None = None

    @property
    def amount(self) -> Decimal:
        return sum((amount for _, amount in self.lines), Decimal(0))

    @property
    def booked(self) -> bool:
        return self.internal_accounting_id is not None

    def view(self, cases: Mapping[int, _Case]) -> dict[str, Any]:
        """The ASSUMED wire shape of one item of `GET settlements`."""
        return {
            "id": self.id,
            "settlementDate": self.on.isoformat(),
            "amount": self.amount,
            "currencyCode": next(
                (cases[case_id].currency_code for case_id, _ in self.lines if case_id in cases),
                "NOK",
            ),
            "isBooked": self.booked,
            "internalAccountingId": self.internal_accounting_id,
            "invoices": [
                {
                    "invoiceId": case_id,
                    "invoiceNo": cases[case_id].invoice_no if case_id in cases else None,
                    "accountingInvoiceId": (
                        cases[case_id].accounting_invoice_id if case_id in cases else None
                    ),
                    "amount": amount,
                }
                for case_id, amount in self.lines
            ],
        }

    def to_record(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "date": self.on.isoformat(),
            "lines": [{"invoiceId": case_id, "amount": amount} for case_id, amount in self.lines],
            "created": _iso(self.created),
            "internalAccountingId": self.internal_accounting_id,
        }

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> _Settlement:
        return cls(
            id=int(record["id"]),
            on=date.fromisoformat(record["date"]),
            lines=[(int(line["invoiceId"]), Decimal(line["amount"])) for line in record["lines"]],
            created=datetime.fromisoformat(record["created"]),
            internal_accounting_id=record["internalAccountingId"],
        )


@dataclass
class _Case:
    id: int
    invoice_no: str
    accounting_invoice_id: str | None
    status: str
    currency_code: str
    original_amount: Decimal
    remaining_amount: Decimal
    debtor_name: str
    body: dict[str, Any]
    created: datetime
    updated: datetime
    documents: list[_Document] = field(default_factory=list)
    timeline: list[tuple[datetime, str]] = field(default_factory=list)
    payments: list[_Payment] = field(default_factory=list)
    started: datetime | None = None  # when collection was started, whatever came after

    @property
    def available_actions(self) -> list[str]:
        return [name for name, (needs, _) in _ACTIONS.items() if self.status == needs]

    @property
    def outstanding_amount(self) -> Decimal:
        """What the debtor still owes. The simulator charges no fees or interest, so this is
        the remaining capital; in Kravia it also holds fees and interest."""
        return self.remaining_amount

    def touch(self, now: datetime, event: str) -> None:
        self.updated = now
        self.timeline.append((now, event))

    def record(self, payment: _Payment, event: str) -> None:
        """Book money against the capital: `payment.applied` is already clamped (see
        `Simulator._apply_money`). A case whose capital reaches 0 is closed."""
        self.remaining_amount -= abs(payment.applied)
        self.payments.append(payment)
        self.touch(payment.registered, event)
        if self.remaining_amount == 0 and self.status != STATUS_CLOSED:
            self.status = STATUS_CLOSED
            self.touch(payment.registered, "Closed: nothing remains of the capital")

    def summary(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "invoiceNo": self.invoice_no,
            "accountingInvoiceId": self.accounting_invoice_id,
            "status": self.status,
            "currencyCode": self.currency_code,
            "originalAmount": self.original_amount,
            "remainingAmount": self.remaining_amount,
            "outstandingAmount": self.outstanding_amount,
            "lastUpdatedTime": format_dotnet_time(self.updated),
        }

    def details(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "invoiceNo": self.invoice_no,
            "accountingInvoiceId": self.accounting_invoice_id,
            "status": self.status,
            "originalAmount": self.original_amount,
            "remainingAmount": self.remaining_amount,
            "outstandingAmount": self.outstanding_amount,
            "currencyCode": self.currency_code,
            "debtorName": self.debtor_name,
            "documents": [
                {"id": d.id, "type": d.type, "fileName": d.file_name, "size": len(d.content)}
                for d in self.documents
            ],
            "payments": [payment.view() for payment in self.payments],
            "availableActions": self.available_actions,
            "lastUpdatedTime": format_dotnet_time(self.updated),
            "timeline": [
                {"time": format_dotnet_time(moment), "event": event}
                for moment, event in self.timeline
            ],
        }

    def control_view(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "invoiceNo": self.invoice_no,
            "accountingInvoiceId": self.accounting_invoice_id,
            "status": self.status,
            "started": self.started is not None,
            "currencyCode": self.currency_code,
            "originalAmount": self.original_amount,
            "remainingAmount": self.remaining_amount,
            "outstandingAmount": self.outstanding_amount,
            "debtorName": self.debtor_name,
            "body": copy.deepcopy(self.body),
            "payments": [payment.view() for payment in self.payments],
            "documents": [
                {
                    "id": d.id,
                    "type": d.type,
                    "fileName": d.file_name,
                    "size": len(d.content),
                    "sha256": d.sha256,
                    "created": _iso(d.created),
                }
                for d in self.documents
            ],
            "created": _iso(self.created),
            "updated": _iso(self.updated),
            "lastUpdatedTime": format_dotnet_time(self.updated),
        }

    def to_record(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "invoiceNo": self.invoice_no,
            "accountingInvoiceId": self.accounting_invoice_id,
            "status": self.status,
            "currencyCode": self.currency_code,
            "originalAmount": self.original_amount,
            "remainingAmount": self.remaining_amount,
            "debtorName": self.debtor_name,
            "body": self.body,
            "created": _iso(self.created),
            "updated": _iso(self.updated),
            "documents": [
                {
                    "id": d.id,
                    "type": d.type,
                    "fileName": d.file_name,
                    "created": _iso(d.created),
                    "content": base64.b64encode(d.content).decode("ascii"),
                }
                for d in self.documents
            ],
            "timeline": [{"time": _iso(moment), "event": event} for moment, event in self.timeline],
            "payments": [payment.to_record() for payment in self.payments],
            "started": None if self.started is None else _iso(self.started),
        }

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> _Case:
        return cls(
            id=int(record["id"]),
            invoice_no=str(record["invoiceNo"]),
            accounting_invoice_id=record["accountingInvoiceId"],
            status=str(record["status"]),
            currency_code=str(record["currencyCode"]),
            original_amount=Decimal(record["originalAmount"]),
            remaining_amount=Decimal(record["remainingAmount"]),
            debtor_name=str(record["debtorName"]),
            body=dict(record["body"]),
            created=datetime.fromisoformat(record["created"]),
            updated=datetime.fromisoformat(record["updated"]),
            documents=[
                _Document(
                    id=int(d["id"]),
                    type=str(d["type"]),
                    file_name=str(d["fileName"]),
                    created=datetime.fromisoformat(d["created"]),
                    content=base64.b64decode(d["content"], validate=True),
                )
                for d in record["documents"]
            ],
            timeline=[
                (datetime.fromisoformat(item["time"]), str(item["event"]))
                for item in record["timeline"]
            ],
            payments=[_Payment.from_record(item) for item in record.get("payments", [])],
            started=_started_from_record(record),
        )


def _started_from_record(record: Mapping[str, Any]) -> datetime | None:
    """When collection started; older data files only tell it by the status."""
    if "started" in record:
        return None if record["started"] is None else datetime.fromisoformat(record["started"])
    return datetime.fromisoformat(record["updated"]) if record["status"] == STATUS_STARTED else None


@dataclass
class _Outcome:
    status: int
    payload: object
    processed: bool = False
    headers: dict[str, str] = field(default_factory=dict)
    media_type: str = _JSON_TYPE


def _trace_id() -> str:
    return f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-00"


def _problem(status: int, errors: Mapping[str, list[str]] | None = None) -> _Outcome:
    problem_type, title = _PROBLEM_TYPES.get(status, _PROBLEM_TYPES[400])
    body: dict[str, Any] = {"type": problem_type, "title": title, "status": status}
    if errors:
        body["title"] = _VALIDATION_TITLE
        body["errors"] = {key: list(messages) for key, messages in errors.items()}
    body["traceId"] = _trace_id()
    return _Outcome(status, body, media_type=_PROBLEM_TYPE)


def _query(request: Request, name: str) -> str | None:
    """A query parameter by name, case-insensitively (ASP.NET binding); the first one wins."""
    wanted = name.lower()
    return next(
        (value for key, value in request.query_params.multi_items() if key.lower() == wanted),
        None,
    )


def _parse_bool(text: str) -> bool | None:
    lowered = text.strip().lower()
    return {"true": True, "false": False}.get(lowered)


def _parse_int(text: str) -> int | None:
    stripped = text.strip()
    return int(stripped) if _INT_RE.fullmatch(stripped) else None


def _body_error(body: bytes) -> dict[str, list[str]]:
    if not body.strip():
        return {"$": ["A non-empty request body is required."]}
    return {"$": ["The request body is not valid JSON."]}


# --- the simulator ----------------------------------------------------------------------------


_Handler = Callable[[Request, bytes], Awaitable[_Outcome]]


class Simulator:
    """The simulated Kravia API with its state, call counters and fault injection."""

    def __init__(
        self,
        *,
        token: str,
        creditor_id: int | None = None,
        faults: Faults | None = None,
        data_file: Path | None = None,
        details_shape: DetailsShape | str = DetailsShape.LIST,
        search_shape: SearchShape | str = SearchShape.ITEMS,
        search_without_aid: bool = False,
        clock_offset_seconds: float = 0.0,
        register_shape: RegisterShape | str = RegisterShape.ID,
        time_zone: TimeZone | str = TimeZone.UTC,
    ) -> None:
        if not token:
            raise ValueError("the simulator needs a non-empty token")
        self._token = token
        self._creditor_id = creditor_id
        self._data_file = data_file
        self._lock = threading.Lock()
        self._faults = faults if faults is not None else Faults()
        self._bucket_faults: Faults | None = None  # the faults the rate-limit bucket is for
        self._bucket_tokens = 0.0
        self._bucket_at = 0.0
        self._rng = random.Random(self._faults.seed)
        self._rng_key: tuple[int, int | None] = (id(self._faults), self._faults.seed)
        self._shape = Shape.from_dict(
            {
                "details_shape": details_shape,
                "search_shape": search_shape,
                "search_without_aid": search_without_aid,
                "clock_offset_seconds": clock_offset_seconds,
                "register_shape": register_shape,
                "time_zone": time_zone,
            }
        )
        self._cases: dict[int, _Case] = {}
        self._ledger: list[dict[str, Any]] = []  # every payment, credit note and payout, in order
        self._settlements: dict[int, _Settlement] = {}
        self._next_id = FIRST_CASE_ID
        self._next_document_id = FIRST_DOCUMENT_ID
        self._next_payment_id = FIRST_PAYMENT_ID
        self._next_settlement_id = FIRST_SETTLEMENT_ID
        self._last_time = datetime.fromtimestamp(0, UTC)
        self._total_calls = 0
        self._statuses: dict[str, dict[int, int]] = {name: {} for name in OPERATIONS}
        self._processed: dict[str, int] = dict.fromkeys(OPERATIONS, 0)
        self._webhook: WebhookSetting | None = None
        self._deliveries: list[dict[str, Any]] = []
        self._sender = WebhookSender(self._delivered)
        if data_file is not None:
            self._load(data_file)
        quiet_dropped_connections()
        api = "/api/v2/invoice"
        self.app = Starlette(
            routes=[
                Route(
                    f"{api}/register", self._endpoint("register", self._register), methods=["POST"]
                ),
                Route(f"{api}/search", self._endpoint("search", self._search), methods=["GET"]),
                Route(f"{api}/payment", self._endpoint("payment", self._payment), methods=["POST"]),
                Route(
                    f"{api}/creditnote",
                    self._endpoint("creditnote", self._credit_note),
                    methods=["POST"],
                ),
                Route(
                    "/api/v2/settlements",
                    self._endpoint("settlements", self._list_settlements),
                    methods=["GET"],
                ),
                Route(
                    "/api/v2/settlements/{id:int}/bookkeep",
                    self._endpoint("bookkeep", self._bookkeep),
                    methods=["PATCH"],
                ),
                Route(
                    f"{api}/{{id:int}}/document",
                    self._endpoint("document", self._document),
                    methods=["POST"],
                ),
                Route(
                    f"{api}/{{id:int}}/action",
                    self._endpoint("action", self._action),
                    methods=["POST"],
                ),
                Route(
                    f"{api}/{{id:int}}/details",
                    self._endpoint("details", self._details),
                    methods=["GET"],
                ),
                Route(
                    "/api/v2/creditor/{id:int}/webhook",
                    self._endpoint("webhook", self._configure_webhook),
                    methods=["PUT"],
                ),
                Route("/_sim/cases", self._control_cases, methods=["GET"]),
                Route(
                    "/_sim/cases/{id:int}/documents/{n:int}",
                    self._control_document,
                    methods=["GET"],
                ),
                Route("/_sim/calls", self._control_calls, methods=["GET"]),
                Route("/_sim/payments", self._control_payments, methods=["GET"]),
                Route("/_sim/payout", self._control_payout, methods=["POST"]),
                Route("/_sim/settlements", self._control_settlements, methods=["GET"]),
                Route("/_sim/faults", self._control_faults, methods=["GET", "PUT"]),
                Route("/_sim/shape", self._control_shape, methods=["GET", "PUT"]),
                Route("/_sim/reset", self._control_reset, methods=["POST"]),
                Route("/_sim/webhook", self._control_webhook, methods=["GET", "POST"]),
            ],
            middleware=[Middleware(_DateHeader, now=self._now)],
        )

    # --- public accessors (thread-safe) ---

    @property
    def faults(self) -> Faults:
        return self._faults

    @faults.setter
    def faults(self, value: Faults) -> None:
        with self._lock:
            self._faults = value
            self._reseed()

    @property
    def shape(self) -> Shape:
        """How the simulator answers (details and search shapes, Kravia's clock offset)."""
        return self._shape

    @shape.setter
    def shape(self, value: Shape) -> None:
        with self._lock:
            self._shape = value

    def cases(self) -> list[dict[str, Any]]:
        """Every case held, in id order (the same as `GET /_sim/cases`)."""
        with self._lock:
            return [self._cases[key].control_view() for key in sorted(self._cases)]

    def document_bytes(self, case_id: int, index: int) -> bytes:
        """The raw bytes of a case's document by 0-based position; KeyError if there is none."""
        with self._lock:
            case = self._cases.get(case_id)
            if case is None or not 0 <= index < len(case.documents):
                raise KeyError((case_id, index))
            return case.documents[index].content

    def payments(self) -> list[dict[str, Any]]:
        """Every payment, credit note and payout accepted, in order (`GET /_sim/payments`).

        Nothing is de-duplicated: the same AccountingPaymentId sent twice is listed twice.
        """
        with self._lock:
            return copy.deepcopy(self._ledger)

    def settlements(self) -> list[dict[str, Any]]:
        """Every settlement, booked or not, in id order (`GET /_sim/settlements`)."""
        with self._lock:
            return [self._settlements[key].view(self._cases) for key in sorted(self._settlements)]

    def payout(
        self, lines: Sequence[tuple[int, Decimal]], *, on: date | None = None
    ) -> dict[str, Any]:
        """The debtor paid Kravia and Kravia paid the creditor out: each (case id, amount)
        comes off that case's capital as a `Collected` payment, and one settlement covers them
        all. ValueError when a case is unknown or closed or an amount is not in (0, capital].
        """
        for _, amount in lines:
            if isinstance(amount, bool) or not isinstance(amount, int | Decimal):
                raise TypeError(f"a payout amount is a Decimal, not {amount!r}")
        lines = [(case_id, Decimal(amount)) for case_id, amount in lines]
        with self._lock:
            problems = self._payout_problems(lines)
            if problems:
                raise ValueError("; ".join(problems))
            now = self._tick()
            settlement = _Settlement(
                id=self._next_settlement_id,
                on=on or now.date(),
                lines=[(case_id, amount) for case_id, amount in lines],
                created=now,
            )
            self._next_settlement_id += 1
            self._settlements[settlement.id] = settlement
            applied_lines = []
            for case_id, amount in lines:
                payment = self._new_payment(
                    COLLECTED_TYPE,
                    None,
                    on=settlement.on,
                    amount=amount,
                    applied=amount,
                    now=now,
                    settlement_id=settlement.id,
                )
                self._cases[case_id].record(payment, f"Payment collected by Kravia: {amount}")
                applied_lines.append((case_id, amount, amount))
                self._changed(case_id)
            self._log_money(
                COLLECTED_TYPE,
                None,
                on=settlement.on,
                description=None,
                lines=applied_lines,
                now=now,
                settlement_id=settlement.id,
            )
            self._save()
            return settlement.view(self._cases)

    def _payout_problems(self, lines: Sequence[tuple[int, Decimal]]) -> list[str]:
        problems: list[str] = []
        if not lines:
            problems.append("a payout needs at least one invoice")
        if len({case_id for case_id, _ in lines}) != len(lines):
            problems.append("an invoice is listed more than once")
        for case_id, amount in lines:
            case = self._cases.get(case_id)
            if case is None:
                problems.append(f"invoice {case_id} does not exist")
            elif case.status == STATUS_CLOSED:
                problems.append(f"invoice {case_id} is closed")
            elif not 0 < amount <= case.remaining_amount:
                problems.append(
                    f"invoice {case_id}: the amount {amount} is not in (0, {case.remaining_amount}]"
                )
        return problems

    def calls(self) -> dict[str, Any]:
        """Counts of API calls received (the same as `GET /_sim/calls`)."""
        with self._lock:
            result: dict[str, Any] = {"total": self._total_calls}
            for name in OPERATIONS:
                result[name] = {
                    str(status): n for status, n in sorted(self._statuses[name].items())
                }
            result["processed"] = dict(self._processed)
            return result

    def webhook(self) -> dict[str, Any]:
        """The creditor's webhook setting (never its secret) and every delivery so far, in
        order (the same as `GET /_sim/webhook`)."""
        with self._lock:
            setting = self._webhook
            return {
                "url": None if setting is None else setting.url,
                "enabled": setting is not None and setting.enabled,
                "secretSet": setting is not None,
                "deliveries": copy.deepcopy(self._deliveries),
            }

    def webhook_secret(self) -> str | None:
        """The secret the webhook was set with (for tests that sign as Kravia would)."""
        with self._lock:
            return None if self._webhook is None else self._webhook.secret

    def send_webhook(
        self,
        claim_id: int,
        *,
        signing: Signing | str = Signing.GOOD,
        duplicate: bool = False,
        out_of_order: bool = False,
    ) -> list[dict[str, Any]]:
        """Send a webhook for `claim_id` to the configured URL now, whether or not the case
        exists or the webhook is enabled (blocking); what came back from each delivery.
        ValueError when no webhook URL is set."""
        with self._lock:
            setting = self._webhook
            timestamp = int(self._now().timestamp())
        if setting is None:
            raise ValueError("no webhook is set (PUT /api/v2/creditor/{id}/webhook)")
        deliveries = deliveries_for(
            setting,
            claim_id,
            timestamp,
            signing=Signing(signing),
            duplicate=duplicate,
            out_of_order=out_of_order,
        )
        return self._sender.send_now(deliveries)

    def reset(self) -> None:
        """Forget every case, call count and fault (ids keep increasing: they are never reused).

        The shape stays: it says which Kravia is simulated, not what went wrong in one test.
        """
        with self._lock:
            self._cases.clear()
            self._ledger.clear()
            self._settlements.clear()
            self._total_calls = 0
            self._statuses = {name: {} for name in OPERATIONS}
            self._processed = dict.fromkeys(OPERATIONS, 0)
            self._faults = Faults()
            self._webhook = None
            self._deliveries.clear()
            self._reseed()
            self._save()

    # --- internals: state (call with the lock held) ---

    def _reseed(self) -> None:
        self._rng = random.Random(self._faults.seed)
        self._rng_key = (id(self._faults), self._faults.seed)

    def _now(self) -> datetime:
        """Kravia's now: the host's clock plus the configured offset (no lock needed: the
        shape is replaced whole, never changed in place)."""
        return datetime.now(UTC) + timedelta(seconds=self._shape.clock_offset_seconds)

    def _tick(self) -> datetime:
        """Kravia's now, strictly later than any time handed out before (microsecond
        resolution); an offset made smaller never moves the times handed out backwards."""
        now = self._now()
        if now <= self._last_time:
            now = self._last_time + timedelta(microseconds=1)
        self._last_time = now
        return now

    def _changed(self, case_id: int) -> None:
        """A case changed: Kravia sends its webhook, when one is set and enabled (call with
        the lock held; the delivery goes from the sender's thread)."""
        setting = self._webhook
        if setting is not None and setting.enabled:
            timestamp = int(self._now().timestamp())
            self._sender.send_later(deliveries_for(setting, case_id, timestamp))

    def _delivered(self, result: Mapping[str, Any]) -> None:
        with self._lock:
            self._deliveries.append(dict(result))
            del self._deliveries[:-MAX_DELIVERIES_KEPT]

    def _new_payment(
        self,
        kind: str,
        accounting_payment_id: str | None,
        *,
        on: date,
        amount: Decimal,
        applied: Decimal,
        now: datetime,
        settlement_id: int | None = None,
    ) -> _Payment:
        payment = _Payment(
            id=self._next_payment_id,
            type=kind,
            accounting_payment_id=accounting_payment_id,
            on=on,
            amount=amount,
            applied=applied,
            registered=now,
            settlement_id=settlement_id,
        )
        self._next_payment_id += 1
        return payment

    def _log_money(
        self,
        kind: str,
        accounting_payment_id: str | None,
        *,
        on: date,
        description: str | None,
        lines: Sequence[tuple[int, Decimal, Decimal]],
        now: datetime,
        settlement_id: int | None = None,
    ) -> None:
        """Append to the ledger `GET /_sim/payments` shows: (case id, amount, applied) lines."""
        self._ledger.append(
            {
                "seq": len(self._ledger) + 1,
                "type": kind,
                "accountingPaymentId": accounting_payment_id,
                "date": on.isoformat(),
                "description": description,
                "amount": sum((amount for _, amount, _ in lines), Decimal(0)),
                "invoices": [
                    {"invoiceId": case_id, "amount": amount, "appliedAmount": applied}
                    for case_id, amount, applied in lines
                ],
                "settlementId": settlement_id,
                "received": _iso(now),
            }
        )

    def _record(self, operation: str, status: int, *, processed: bool) -> None:
        with self._lock:
            self._total_calls += 1
            counts = self._statuses[operation]
            counts[status] = counts.get(status, 0) + 1
            if processed:
                self._processed[operation] += 1

    def _take_token(self, faults: Faults) -> float | None:
        """Spend a token of the rate limit's bucket: None when there was one (or there is no
        rate limit), else the seconds until the next."""
        rate = faults.rate_limit
        if rate is None:
            return None
        burst = faults.rate_limit_burst or max(1.0, rate)
        with self._lock:
            now = time.monotonic()
            if self._bucket_faults is not faults:  # a new limit starts with a full bucket
                self._bucket_faults, self._bucket_tokens, self._bucket_at = faults, burst, now
            tokens = min(burst, self._bucket_tokens + (now - self._bucket_at) * rate)
            self._bucket_at = now
            if tokens >= 1:
                self._bucket_tokens = tokens - 1
                return None
            self._bucket_tokens = tokens
            return (1 - tokens) / rate

    def _roll(self, operation: str) -> tuple[Faults, _Roll]:
        with self._lock:
            faults = self._faults
            if operation not in faults.operations:
                return faults, _Roll()
            if self._rng_key != (id(faults), faults.seed):
                self._reseed()
            rng = self._rng
            rate_limited = rng.random() < faults.rate_limit_429
            server_error = rng.random() < faults.error_5xx
            timeout = rng.random() < faults.timeout
            drop = rng.random() < faults.drop_after_commit
            retry_after: str | None = None
            if rate_limited:
                choice = rng.choice(["1", "0", "-3", "soon", "date", "none"])
                if choice == "date":
                    retry_after = format_datetime(self._now() + timedelta(seconds=1), usegmt=True)
                elif choice != "none":
                    retry_after = choice
            error_status = rng.choice([500, 502, 503]) if server_error else 500
            return faults, _Roll(
                rate_limited=rate_limited,
                server_error=server_error,
                timeout=timeout,
                drop=drop,
                retry_after=retry_after,
                error_status=error_status,
            )

    def _snapshot(self) -> dict[str, Any]:
        return {
            "format": DATA_FILE_FORMAT,
            "nextId": self._next_id,
            "nextDocumentId": self._next_document_id,
            "nextPaymentId": self._next_payment_id,
            "nextSettlementId": self._next_settlement_id,
            "cases": [self._cases[key].to_record() for key in sorted(self._cases)],
            "ledger": self._ledger,
            "settlements": [
                self._settlements[key].to_record() for key in sorted(self._settlements)
            ],
        }

    def _save(self) -> None:
        """Write the state to the data file atomically (temp file + replace), if there is one."""
        if self._data_file is None:
            return
        target = self._data_file
        target.parent.mkdir(parents=True, exist_ok=True)
        data = _dump(self._snapshot()).encode("utf-8")
        handle = tempfile.NamedTemporaryFile(  # noqa: SIM115 - closed before the replace
            mode="wb", dir=target.parent, prefix=f".{target.name}.", suffix=".tmp", delete=False
        )
        temp = Path(handle.name)
        try:
            with handle:
                handle.write(data)
            temp.replace(target)
        except BaseException:
            temp.unlink(missing_ok=True)
            raise

    def _load(self, path: Path) -> None:
        try:
            raw = json.loads(path.read_text(encoding="utf-8"), parse_float=Decimal)
        except FileNotFoundError:
            return
        except ValueError as exc:
            raise ValueError(f"{path}: not a simulator data file ({exc})") from exc
        known = {DATA_FILE_FORMAT, *_OLDER_DATA_FILE_FORMATS}
        if not isinstance(raw, dict) or raw.get("format") not in known:
            raise ValueError(
                f"{path}: not a simulator data file (format is not {DATA_FILE_FORMAT})"
            )
        try:
            cases = [_Case.from_record(record) for record in raw["cases"]]
            next_id = int(raw["nextId"])
            next_document_id = int(raw["nextDocumentId"])
            next_payment_id = int(raw.get("nextPaymentId", FIRST_PAYMENT_ID))
            next_settlement_id = int(raw.get("nextSettlementId", FIRST_SETTLEMENT_ID))
            ledger = [dict(entry) for entry in raw.get("ledger", [])]
            settlements = [_Settlement.from_record(item) for item in raw.get("settlements", [])]
        except (KeyError, TypeError, ValueError, binascii.Error) as exc:
            raise ValueError(f"{path}: not a simulator data file ({exc})") from exc
        self._cases = {case.id: case for case in cases}
        self._ledger = ledger
        self._settlements = {settlement.id: settlement for settlement in settlements}
        self._next_id = max([next_id, *(case.id + 1 for case in cases)])
        self._next_document_id = max(
            [next_document_id, *(d.id + 1 for case in cases for d in case.documents)]
        )
        self._next_payment_id = max(
            [next_payment_id, *(pay.id + 1 for case in cases for pay in case.payments)]
        )
        self._next_settlement_id = max([next_settlement_id, *(item.id + 1 for item in settlements)])
        times = [case.updated for case in cases]
        if times:
            self._last_time = max(times)

    # --- internals: the API call pipeline ---

    def _endpoint(
        self, operation: str, handler: _Handler
    ) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            return await self._api_call(request, operation, handler)

        return endpoint

    async def _api_call(self, request: Request, operation: str, handler: _Handler) -> Response:
        try:
            body = await request.body()
        except ClientDisconnect:
            self._record(operation, 0, processed=False)
            return Response(status_code=400)
        faults, roll = self._roll(operation)
        bucket_wait = self._take_token(faults)
        if operation in faults.operations and faults.latency_ms > 0:
            await asyncio.sleep(faults.latency_ms / 1000)
        throttled = _throttled(bucket_wait, roll)
        if throttled is not None:
            outcome = throttled
        elif roll.server_error:
            outcome = _server_error(roll.error_status)
        else:
            if roll.timeout:
                await asyncio.sleep(faults.timeout_delay_s)
            if request.headers.get("authorization") != self._token:
                outcome = _problem(401)
            elif len(body) > MAX_BODY_BYTES:
                outcome = _problem(413)
            else:
                outcome = await handler(request, body)
            if roll.drop and operation in MUTATING_OPERATIONS and outcome.processed:
                self._record(operation, 0, processed=True)
                return DroppedResponse(
                    content=_dump(outcome.payload).encode("utf-8"),
                    status_code=outcome.status,
                    media_type=outcome.media_type,
                )
        return self._answer(operation, outcome)

    def _answer(self, operation: str, outcome: _Outcome) -> Response:
        self._record(operation, outcome.status, processed=outcome.processed)
        content = (
            outcome.payload
            if isinstance(outcome.payload, bytes)
            else _dump(outcome.payload).encode("utf-8")
        )
        return Response(
            content=content,
            status_code=outcome.status,
            headers=outcome.headers,
            media_type=outcome.media_type,
        )

    # --- internals: the operations ---

    async def _register(self, request: Request, body: bytes) -> _Outcome:
        parsed = _json_body(request, body)
        if isinstance(parsed, _Outcome):
            return parsed
        errors, registration = validate_register(parsed, self._creditor_id)
        if registration is None or not isinstance(parsed, dict):
            return _problem(400, errors)
        with self._lock:
            now = self._tick()
            case = _Case(
                id=self._next_id,
                invoice_no=registration.invoice_no,
                accounting_invoice_id=registration.accounting_invoice_id,
                status=STATUS_REGISTERED,
                currency_code=registration.currency_code,
                original_amount=registration.original_amount,
                remaining_amount=registration.original_amount,
                debtor_name=registration.debtor_name,
                body=parsed,
                created=now,
                updated=now,
                timeline=[(now, "Registered")],
            )
            self._next_id += 1
            self._cases[case.id] = case
            self._changed(case.id)
            self._save()
        payload = {
            "id": case.id,
            "invoiceNo": case.invoice_no,
            "accountingInvoiceId": case.accounting_invoice_id,
            "status": case.status,
        }
        return _Outcome(200, _register_answer(payload, self._shape.register_shape), processed=True)

    async def _document(self, request: Request, body: bytes) -> _Outcome:
        case_id: int = request.path_params["id"]
        errors = _Errors()
        doc_type = _query(request, "type")
        if doc_type is None:
            errors.add("Type", "The Type field is required.")
        elif doc_type not in DOCUMENT_TYPES:
            errors.add("Type", f"The value '{doc_type}' is not valid for Type.")
        content, file_name, problem = await _read_document(request, body)
        if problem is not None:
            errors.add("File", problem)
        elif not content.startswith(b"%PDF-"):
            errors.add("File", "The file is not a PDF document.")
        if errors.items or doc_type is None:
            return _problem(400, errors.items)
        with self._lock:
            case = self._cases.get(case_id)
            if case is None:
                return _problem(404)
            now = self._tick()
            document = _Document(
                id=self._next_document_id,
                type=doc_type,
                file_name=file_name or f"{doc_type.lower()}-{case_id}.pdf",
                content=content,
                created=now,
            )
            self._next_document_id += 1
            case.documents.append(document)
            case.updated = now
            case.timeline.append((now, f"Document added ({doc_type})"))
            self._changed(case_id)
            self._save()
        return _Outcome(200, {"id": document.id}, processed=True)

    async def _action(self, request: Request, body: bytes) -> _Outcome:
        case_id: int = request.path_params["id"]
        errors = _Errors()
        action = _query(request, "action")
        if action is None:
            errors.add("Action", "The Action field is required.")
        elif action not in _ACTIONS:
            errors.add("Action", f"The value '{action}' is not valid for Action.")
        message: str | None = None
        if body.strip():
            try:
                parsed = _loads(body)
            except ValueError:
                return _problem(400, _body_error(body))
            if not isinstance(parsed, dict):
                errors.add("$", _CONVERT.format("the action request (a JSON object)"))
            else:
                message = _optional_string(errors, "Message", _ci(parsed).get("message", _ABSENT))
        if errors.items or action is None:
            return _problem(400, errors.items)
        with self._lock:
            case = self._cases.get(case_id)
            if case is None:
                return _problem(404)
            if action not in case.available_actions:
                # Kravia does not publish what Start on an already started case answers; this
                # 400 is the simulator's stand-in for that answer (and for any action the
                # case's status does not allow).
                return _problem(
                    400, {"Action": [f"Action {action} is not available for this invoice."]}
                )
            now = self._tick()
            _, case.status = _ACTIONS[action]
            if action == ACTION_START:
                case.started = now
            event = _ACTION_EVENTS[action] + (f": {message}" if message else "")
            case.touch(now, event)
            self._changed(case_id)
            self._save()
        return _Outcome(200, {"success": True}, processed=True)

    async def _payment(self, request: Request, body: bytes) -> _Outcome:
        return await self._money(request, body, credit_note=False)

    async def _credit_note(self, request: Request, body: bytes) -> _Outcome:
        return await self._money(request, body, credit_note=True)

    async def _money(self, request: Request, body: bytes, *, credit_note: bool) -> _Outcome:
        """`invoice/payment` and `invoice/creditnote`: validate, then take each line off its
        case's capital (at most what remains). NOT de-duplicated by AccountingPaymentId."""
        parsed = _json_body(request, body)
        if isinstance(parsed, _Outcome):
            return parsed
        errors, money = validate_money(parsed, credit_note=credit_note)
        if money is None:
            return _problem(400, errors)
        with self._lock:
            unknown = {
                f"Invoices[{index}].InvoiceId": [f"Invoice {line.invoice_id} was not found."]
                for index, line in enumerate(money.lines)
                if line.invoice_id not in self._cases
            }
            if unknown:
                return _problem(400, unknown)
            self._apply_money(money)
            self._save()
        return _Outcome(200, {"success": True}, processed=True)

    def _apply_money(self, money: _MoneyRequest) -> None:
        now = self._tick()
        sign = Decimal(-1) if money.type == CREDIT_NOTE_TYPE else Decimal(1)
        label = "Credit note" if money.type == CREDIT_NOTE_TYPE else "Direct payment"
        applied_lines: list[tuple[int, Decimal, Decimal]] = []
        for line in money.lines:
            case = self._cases[line.invoice_id]
            applied = sign * min(abs(line.amount), case.remaining_amount)
            payment = self._new_payment(
                money.type,
                money.accounting_payment_id,
                on=money.on,
                amount=line.amount,
                applied=applied,
                now=now,
            )
            case.record(
                payment,
                f"{label} {money.accounting_payment_id}: {line.amount} (applied {applied})",
            )
            applied_lines.append((line.invoice_id, line.amount, applied))
            self._changed(line.invoice_id)
        self._log_money(
            money.type,
            money.accounting_payment_id,
            on=money.on,
            description=money.description,
            lines=applied_lines,
            now=now,
        )

    async def _list_settlements(self, request: Request, _body: bytes) -> _Outcome:
        """`GET settlements?ExcludeClosed=true`: payouts, without the booked ones if asked."""
        exclude_closed = False
        text = _query(request, "ExcludeClosed")
        if text is not None:
            parsed = _parse_bool(text)
            if parsed is None:
                return _problem(
                    400, {"ExcludeClosed": [f"The value '{text}' is not valid for ExcludeClosed."]}
                )
            exclude_closed = parsed
        with self._lock:
            items = [
                self._settlements[key].view(self._cases)
                for key in sorted(self._settlements)
                if not (exclude_closed and self._settlements[key].booked)
            ]
        return _Outcome(200, {"totalCount": len(items), "items": items}, processed=True)

    async def _bookkeep(self, request: Request, _body: bytes) -> _Outcome:
        """`PATCH settlements/{id}/bookkeep?internalAccountingId=`: mark a settlement booked.
        Booking it again under the same id is a no-op; under another id it is refused."""
        settlement_id: int = request.path_params["id"]
        accounting_id = _query(request, "internalAccountingId")
        if accounting_id is None or not accounting_id.strip():
            return _problem(
                400, {"InternalAccountingId": ["The InternalAccountingId field is required."]}
            )
        with self._lock:
            settlement = self._settlements.get(settlement_id)
            if settlement is None:
                return _problem(404)
            if settlement.booked and settlement.internal_accounting_id != accounting_id:
                booked_as = settlement.internal_accounting_id
                message = f"Settlement {settlement_id} is already booked as {booked_as}."
                return _problem(400, {"InternalAccountingId": [message]})
            settlement.internal_accounting_id = accounting_id
            self._save()
        return _Outcome(200, {"success": True}, processed=True)

    async def _search(self, request: Request, _body: bytes) -> _Outcome:
        errors = _Errors()
        ascending = True
        text = _query(request, "byAscending")
        if text is not None:
            parsed_bool = _parse_bool(text)
            if parsed_bool is None:
                errors.add("ByAscending", f"The value '{text}' is not valid for ByAscending.")
            else:
                ascending = parsed_bool
        since: int | None = None
        text = _query(request, "lastUpdatedTime")
        if text is not None and text.strip():
            since = parse_dotnet_time(text)
            if since is None:
                errors.add(
                    "LastUpdatedTime", f"The value '{text}' is not valid for LastUpdatedTime."
                )
        text = _query(request, "orderBy")
        if text is not None:
            order_by = _parse_int(text)
            if order_by is None:
                errors.add("OrderBy", f"The value '{text}' is not valid for OrderBy.")
            elif order_by != ORDER_BY_LAST_UPDATED:
                errors.add(
                    "OrderBy",
                    f"The simulator only implements orderBy={ORDER_BY_LAST_UPDATED} "
                    "(last-updated time).",
                )
        skip = self._paging(errors, request, "skip", 0, minimum=0)
        top = min(self._paging(errors, request, "top", DEFAULT_TOP, minimum=1), MAX_TOP)
        if errors.items:
            return _problem(400, errors.items)
        with self._lock:
            matching = [
                case
                for case in self._cases.values()
                if since is None or _ticks(case.updated) >= since
            ]
            matching.sort(key=lambda case: (case.updated, case.id), reverse=not ascending)
            items = [case.summary() for case in matching[skip : skip + top]]
            payload = _shaped_search(items, len(matching), self._shape)
        return _Outcome(200, payload, processed=True)

    @staticmethod
    def _paging(errors: _Errors, request: Request, name: str, default: int, *, minimum: int) -> int:
        text = _query(request, name)
        if text is None:
            return default
        value = _parse_int(text)
        key = name[0].upper() + name[1:]
        if value is None:
            errors.add(key, f"The value '{text}' is not valid for {key}.")
            return default
        if value < minimum:
            errors.add(key, f"The field {key} must be at least {minimum}.")
            return default
        return value

    async def _details(self, request: Request, _body: bytes) -> _Outcome:
        case_id: int = request.path_params["id"]
        with self._lock:
            case = self._cases.get(case_id)
            if case is None:
                return _problem(404)
            view = _shaped_details(case.details(), self._shape)
            return _Outcome(200, view, processed=True)

    async def _configure_webhook(self, request: Request, body: bytes) -> _Outcome:
        """`PUT creditor/{id}/webhook` {"secret", "enabled", "url"}: one per creditor."""
        parsed = _json_body(request, body)
        if isinstance(parsed, _Outcome):
            return parsed
        creditor_id: int = request.path_params["id"]
        if self._creditor_id is not None and creditor_id != self._creditor_id:
            return _problem(404)
        errors, setting = validate_setting(parsed)
        if setting is None:
            return _problem(400, errors)
        with self._lock:
            self._webhook = setting
        return _Outcome(200, {"success": True}, processed=True)

    # --- control endpoints ---

    async def _control_cases(self, _request: Request) -> Response:
        return Response(_dump(self.cases()).encode("utf-8"), media_type=_JSON_TYPE)

    async def _control_document(self, request: Request) -> Response:
        try:
            content = self.document_bytes(request.path_params["id"], request.path_params["n"])
        except KeyError:
            return Response(b'{"error": "no such document"}', 404, media_type=_JSON_TYPE)
        return Response(content, media_type="application/pdf")

    async def _control_calls(self, _request: Request) -> Response:
        return Response(_dump(self.calls()).encode("utf-8"), media_type=_JSON_TYPE)

    async def _control_faults(self, request: Request) -> Response:
        if request.method == "PUT":
            try:
                data = json.loads(await request.body())
                self.faults = Faults.from_dict(_require_object(data, "the faults"))
            except (TypeError, ValueError) as exc:
                error = _dump({"error": str(exc)}).encode("utf-8")
                return Response(error, 400, media_type=_JSON_TYPE)
        return Response(_dump(self.faults.to_dict()).encode("utf-8"), media_type=_JSON_TYPE)

    async def _control_shape(self, request: Request) -> Response:
        if request.method == "PUT":
            try:
                data = json.loads(await request.body())
                self.shape = Shape.from_dict(_require_object(data, "the shape"))
            except (TypeError, ValueError) as exc:
                error = _dump({"error": str(exc)}).encode("utf-8")
                return Response(error, 400, media_type=_JSON_TYPE)
        return Response(_dump(self.shape.to_dict()).encode("utf-8"), media_type=_JSON_TYPE)

    async def _control_payments(self, _request: Request) -> Response:
        return Response(_dump(self.payments()).encode("utf-8"), media_type=_JSON_TYPE)

    async def _control_settlements(self, _request: Request) -> Response:
        return Response(_dump(self.settlements()).encode("utf-8"), media_type=_JSON_TYPE)

    async def _control_payout(self, request: Request) -> Response:
        """`POST /_sim/payout` {"invoiceId", "amount"} or {"invoices": [...]}, optional "date"."""
        try:
            data = _require_object(_loads(await request.body()), "the payout")
            lines, on = _payout_request(data)
            settlement = self.payout(lines, on=on)
        except (TypeError, ValueError) as exc:
            error = _dump({"error": str(exc)}).encode("utf-8")
            return Response(error, 400, media_type=_JSON_TYPE)
        return Response(_dump(settlement).encode("utf-8"), media_type=_JSON_TYPE)

    async def _control_webhook(self, request: Request) -> Response:
        """`GET /_sim/webhook`: the setting and deliveries. `POST /_sim/webhook` {"claimId",
        "signing": "good"|"bad"|"none", "duplicate", "outOfOrder"}: send one now; answers what
        came back from each delivery."""
        if request.method == "GET":
            return Response(_dump(self.webhook()).encode("utf-8"), media_type=_JSON_TYPE)
        try:
            data = _require_object(_loads(await request.body()), "the webhook to send")
            results = await asyncio.to_thread(
                self.send_webhook,
                _claim_id(data.get("claimId")),
                signing=str(data.get("signing", "good")),
                duplicate=_flag("duplicate", data.get("duplicate", False)),
                out_of_order=_flag("outOfOrder", data.get("outOfOrder", False)),
            )
        except (TypeError, ValueError) as exc:
            error = _dump({"error": str(exc)}).encode("utf-8")
            return Response(error, 400, media_type=_JSON_TYPE)
        return Response(_dump(results).encode("utf-8"), media_type=_JSON_TYPE)

    async def _control_reset(self, _request: Request) -> Response:
        self.reset()
        return Response(b'{"reset": true}', media_type=_JSON_TYPE)


_ACTION_EVENTS: Final[Mapping[str, str]] = {
    ACTION_START: "Collection started",
    ACTION_PAUSE: "Collection paused",
    ACTION_RESUME: "Collection resumed",
}


def _claim_id(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError("claimId: an integer is required")
    return value


def _json_body(request: Request, body: bytes) -> object:
    """The parsed JSON body, or the problem to answer (415 for another media type, 400)."""
    media_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media_type != "application/json" and not media_type.endswith("+json"):
        return _problem(415)
    try:
        return _loads(body)
    except ValueError:
        return _problem(400, _body_error(body))


def _payout_request(data: Mapping[str, object]) -> tuple[list[tuple[int, Decimal]], date | None]:
    """The lines and date of a `/_sim/payout` body (keys case-insensitive)."""
    folded = _ci(data)
    items = folded.get("invoices")
    if items is None:
        items = [{"invoiceId": folded.get("invoiceid"), "amount": folded.get("amount")}]
    if not isinstance(items, list):
        raise TypeError("invoices must be a list of {invoiceId, amount}")
    lines: list[tuple[int, Decimal]] = []
    for item in items:
        line = _ci(_require_object(item, "each payout line"))
        case_id, amount = line.get("invoiceid"), line.get("amount")
        if isinstance(case_id, bool) or not isinstance(case_id, int):
            raise TypeError(f"invoiceId must be an integer, not {case_id!r}")
        if isinstance(amount, bool) or not isinstance(amount, int | Decimal):
            raise TypeError(f"amount must be a number, not {amount!r}")
        lines.append((case_id, Decimal(amount)))
    raw_date = folded.get("date")
    if raw_date is None:
        return lines, None
    if not isinstance(raw_date, str):
        raise TypeError("date must be a YYYY-MM-DD string")
    return lines, date.fromisoformat(raw_date)


def _server_error(status: int) -> _Outcome:
    """A 5xx the way different layers answer it: ASP.NET JSON, a proxy's HTML, plain text."""
    if status == 502:
        html = b"<html><head><title>502 Bad Gateway</title></head><body>Bad Gateway</body></html>"
        return _Outcome(502, html, media_type="text/html; charset=utf-8")
    if status == 503:
        return _Outcome(503, b"Service Unavailable", media_type="text/plain; charset=utf-8")
    return _problem(500)


def _require_object(value: object, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise TypeError(f"{what} must be a JSON object")
    return value


_Read = tuple[bytes, str | None, str | None]  # content, file name, problem


async def _read_document(request: Request, body: bytes) -> _Read:
    """The `file` part of a multipart body or, leniently, base64 in a JSON body (the guide)."""
    lowered = request.headers.get("content-type", "").lower()
    if lowered.startswith("multipart/form-data") and "boundary=" in lowered:
        return await _read_multipart(request)
    return _read_json_document(body)


async def _read_multipart(request: Request) -> _Read:
    try:
        async with request.form(max_part_size=MAX_BODY_BYTES) as form:
            for key, value in form.multi_items():
                if key.lower() != "file":
                    continue
                if isinstance(value, UploadFile):
                    return await value.read(), value.filename, None
                return _decode_base64(str(value), None)
    except (HTTPException, ValueError):
        return b"", None, "The multipart body could not be read."
    return b"", None, "The File field is required."


def _read_json_document(body: bytes) -> _Read:
    try:
        parsed = _loads(body)
    except ValueError:
        parsed = None
    data = _ci(parsed) if isinstance(parsed, dict) else {}
    value = data.get("file")
    name = data.get("filename")
    if not isinstance(value, str) or not value:
        return b"", None, "The File field is required (a multipart part named 'file')."
    return _decode_base64(value, name if isinstance(name, str) and name else None)


def _decode_base64(value: str, name: str | None) -> tuple[bytes, str | None, str | None]:
    try:
        return base64.b64decode(value.strip(), validate=True), name, None
    except (binascii.Error, ValueError):
        return b"", None, "The File field is not valid base64."


# --- serving ----------------------------------------------------------------------------------


class RunningSimulator(RunningServer):
    """Serves a Simulator on 127.0.0.1 (a free port) in a background thread."""

    def __init__(self, simulator: Simulator) -> None:
        # The app sets Date from Kravia's clock (see _DateHeader).
        super().__init__(simulator.app, name="Kravia simulator", date_header=False)
        self.simulator = simulator

    @property
    def base_url(self) -> str:
        return f"{self.root_url}/api/v2/" if self.root_url else ""


def serve(
    *,
    host: str,
    port: int,
    token: str,
    creditor_id: int | None,
    faults: Faults,
    data_file: Path | None,
    shape: Shape | None = None,
) -> None:
    """Serve a simulator until interrupted (blocking; for `kravia-sync simulate`).

    Ctrl-C (SIGINT) shuts the server down gracefully and returns normally.
    """
    simulator = Simulator(token=token, creditor_id=creditor_id, faults=faults, data_file=data_file)
    if shape is not None:
        simulator.shape = shape
    config = uvicorn.Config(
        simulator.app,
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        lifespan="off",
        date_header=False,  # the app sets Date from Kravia's clock (see _DateHeader)
        timeout_graceful_shutdown=5,
    )
    quiet_dropped_connections()
    with contextlib.suppress(KeyboardInterrupt):  # uvicorn re-raises SIGINT after shutdown
        uvicorn.Server(config).run()
