"""The Kravia simulator's answer shapes and clock: which shape of details, search and register
answers it serves and how it writes times (`Shape` and its enums), the helpers that shape an
answer, and the `Date` header from Kravia's clock."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from email.utils import format_datetime
from enum import StrEnum
from typing import Any, Final, TypeVar
from zoneinfo import ZoneInfo

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kravia_sync.testing._sim_constants import _ACTIONS

__all__ = [
    "MAX_CLOCK_OFFSET_SECONDS",
    "DetailsShape",
    "RegisterShape",
    "SearchShape",
    "Shape",
    "TimeZone",
]


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
