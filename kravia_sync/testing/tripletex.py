"""A local Tripletex API v2 for tests and benchmarks: sessions, outgoing invoices and their PDFs.

It follows Tripletex's published description (`openapi.json`) and official examples:

* `PUT /v2/token/session/:create?consumerToken=…&employeeToken=…&expirationDate=YYYY-MM-DD`
  needs no authentication header and answers `{"value": {…, "token": …}}`. Unknown tokens are
  refused (403); a missing or malformed expiration date is a 400.
* Every other call: HTTP Basic, the username `0` (or the company's id) and an issued session
  token as the password; 401 otherwise, and for a session whose expiration date has come (or
  that a test ended with `expire_sessions`).
* `GET /v2/invoice` needs `invoiceDateFrom` (inclusive) and `invoiceDateTo` (exclusive): 400
  when either is missing or not a date; any parameter the spec does not list is a 400 rather
  than ignored. Filters `id`, `invoiceNumber`, `kid`, `customerId`; paged with `from` and
  `count` (default 1000) in the list envelope `{fullResultSize, from, count, versionDigest,
  values}`, in id order. `fields` is honoured as the spec's Fields section says (see
  `_tripletex_fields`); without it, `*`.
* `GET /v2/invoice/{id}` (`{"value": …}`) and `GET /v2/invoice/{id}/pdf` (`application/pdf`).
* Rate limits, as the description's "Rate limiting" states them: `limit` requests in each
  period of `period_seconds`, announced in `X-Rate-Limit-Limit`, `X-Rate-Limit-Remaining` and
  `X-Rate-Limit-Reset` (seconds left of the period, rounded up) on every answer; past the limit
  every request is 429 for the rest of the period.

Faults are scripted per endpoint (and, for invoices, per window's `invoiceDateFrom`):
`fail("invoices", date_from="2024-01-01", faults=["503", "drop"])`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import json
import math
import secrets
import threading
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import Any, Final, Literal

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from kravia_sync.testing._dropped import DroppedResponse
from kravia_sync.testing._tripletex_data import TripletexCompany, demo_company, oslo_today
from kravia_sync.testing._tripletex_fields import FieldsError, Selection, parse_fields, shape
from kravia_sync.testing.running import RunningServer

__all__ = [
    "INVOICE_PARAMETERS",
    "RunningTripletex",
    "TripletexCompany",
    "TripletexSimulator",
    "demo_company",
]

API_PREFIX: Final = "/v2"
DEFAULT_COUNT: Final = 1000
# GET /invoice's query parameters in the spec; anything else is answered 400.
INVOICE_PARAMETERS: Final = frozenset(
    {
        "id",
        "invoiceDateFrom",
        "invoiceDateTo",
        "invoiceNumber",
        "kid",
        "voucherId",
        "customerId",
        "from",
        "count",
        "sorting",
        "fields",
    }
)
Kind = Literal["session", "invoices", "invoice", "pdf"]
Fault = Literal["500", "502", "503", "504", "429", "drop"]


@dataclass
class _Answer:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    media_type: str = "application/json"


class _Period:
    """`limit` requests per period of `seconds`; the period starts with its first request."""

    def __init__(self, limit: int, seconds: float) -> None:
        self.limit = limit
        self.seconds = seconds
        self.started = -math.inf
        self.used = 0

    def take(self) -> tuple[bool, dict[str, str]]:
        now = time.monotonic()
        if now - self.started >= self.seconds:
            self.started = now
            self.used = 0
        allowed = self.used < self.limit
        if allowed:
            self.used += 1
        left = max(0.0, self.started + self.seconds - now)
        return allowed, {
            "X-Rate-Limit-Limit": str(self.limit),
            "X-Rate-Limit-Remaining": str(self.limit - self.used),
            "X-Rate-Limit-Reset": str(math.ceil(left)),
        }


class TripletexSimulator:
    """The simulated Tripletex API for one company, one consumer and one employee token."""

    def __init__(
        self,
        company: TripletexCompany,
        *,
        consumer_token: str,
        employee_token: str,
        company_id: int = 0,
        limit: int = 1000,
        period_seconds: float = 60.0,
        latency_ms: float = 0.0,
        today: Callable[[], date] = oslo_today,
    ) -> None:
        self.company = company
        self._consumer = consumer_token
        self._employee = employee_token
        self.company_id = company_id
        self.latency_s = latency_ms / 1000
        self.today = today
        self.base_url = ""  # set when served
        self._period = _Period(limit, period_seconds)
        self._lock = threading.Lock()
        self._faults: dict[tuple[Kind, str | None], deque[Fault]] = {}
        self.sessions: dict[str, date] = {}  # token → expirationDate
        self.session_requests: list[dict[str, str]] = []  # what each create asked for
        self._expire_after: int | None = None
        self.counts: Counter[str] = Counter()
        self.statuses: Counter[int] = Counter()
        self.windows: Counter[tuple[str, str]] = Counter()  # invoice requests per window
        self.app = Starlette(
            routes=[
                Route(
                    f"{API_PREFIX}/token/session/:create",
                    self._endpoint("session", self._create_session, auth=False),
                    methods=["PUT"],
                ),
                Route(f"{API_PREFIX}/invoice", self._endpoint("invoices", self._invoices)),
                Route(
                    f"{API_PREFIX}/invoice/{{invoice_id:int}}",
                    self._endpoint("invoice", self._invoice),
                ),
                Route(
                    f"{API_PREFIX}/invoice/{{invoice_id:int}}/pdf",
                    self._endpoint("pdf", self._pdf),
                ),
            ]
        )

    # -- test controls ---

    def fail(self, kind: Kind, *, date_from: str | None = None, faults: list[Fault]) -> None:
        """The next requests of `kind` (for invoices: of the window from `date_from`) answer
        these faults in turn."""
        with self._lock:
            self._faults.setdefault((kind, date_from), deque()).extend(faults)

    def expire_sessions(self, *, after: int = 0) -> None:
        """End every session issued so far after `after` more authenticated requests."""
        with self._lock:
            self._expire_after = after

    def pay(self, invoice_id: int, amount: Decimal) -> None:
        """The customer paid `amount` of the invoice."""
        with self._lock:
            self.company.reduce(invoice_id, amount)

    def credit(self, invoice_id: int, amount: Decimal) -> dict[str, Any]:
        """A credit note of `amount` on the invoice, dated today."""
        with self._lock:
            original = self.company.invoice(invoice_id)
            return self.company.add_invoice(
                customer_id=original["customer"]["id"],
                invoice_date=self.today(),
                due_date=self.today(),
                amount=-amount,
                credited=invoice_id,
                pdf=False,
            )

    def calls(self) -> dict[str, Any]:
        """Requests by endpoint, statuses, refusals."""
        with self._lock:
            return {
                "total": sum(self.statuses.values()),
                **dict(self.counts),
                "statuses": dict(self.statuses),
            }

    # -- serving ---

    def _endpoint(
        self, kind: Kind, handler: Callable[[Request], Awaitable[_Answer]], *, auth: bool = True
    ) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            with self._lock:
                allowed, limits = self._period.take()
            if not allowed:
                with self._lock:
                    self.counts["rejected_rate"] += 1
                return self._respond(_error(429, 0, "Too many requests"), limits)
            if self.latency_s:
                await asyncio.sleep(self.latency_s)
            if auth and not self._authorized(request):
                return self._respond(_error(401, 3000, "Authorization required"), limits)
            date_from = request.query_params.get("invoiceDateFrom") if kind == "invoices" else None
            fault = self._next_fault(kind, date_from)
            with self._lock:
                self.counts[kind] += 1
            if fault == "drop":
                answer = await handler(request)
                with self._lock:
                    self.statuses[0] += 1
                return DroppedResponse(content=answer.body, status_code=answer.status)
            if fault is not None:
                return self._respond(_error(int(fault), 1000, "Simulated fault"), limits)
            return self._respond(await handler(request), limits)

        return endpoint

    def _authorized(self, request: Request) -> bool:
        header = request.headers.get("authorization", "")
        if not header.startswith("Basic "):
            return False
        try:
            user, _, token = base64.b64decode(header[6:], validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        with self._lock:
            if self._expire_after is not None:
                if self._expire_after <= 0:
                    self.sessions = dict.fromkeys(self.sessions, date.min)
                    self._expire_after = None
                else:
                    self._expire_after -= 1
            expires = self.sessions.get(token)
        if user.strip() not in {"", "0", str(self.company_id)}:
            return False
        return expires is not None and self.today() < expires

    def _next_fault(self, kind: Kind, date_from: str | None) -> Fault | None:
        with self._lock:
            queue = self._faults.get((kind, date_from)) or self._faults.get((kind, None))
            return queue.popleft() if queue else None

    def _respond(self, answer: _Answer, limits: dict[str, str]) -> Response:
        with self._lock:
            self.statuses[answer.status] += 1
        return Response(
            content=answer.body,
            status_code=answer.status,
            headers={**limits, **answer.headers},
            media_type=answer.media_type,
        )

    # -- the endpoints ---

    async def _create_session(self, request: Request) -> _Answer:
        query = request.query_params
        with self._lock:
            self.session_requests.append(
                {
                    "expirationDate": query.get("expirationDate", ""),
                    "authorization": request.headers.get("authorization", ""),
                }
            )
        try:
            expires = date.fromisoformat(query.get("expirationDate", ""))
        except ValueError:
            return _error(400, 4000, "expirationDate must be a date (YYYY-MM-DD)")
        if expires <= self.today():
            return _error(400, 4000, "expirationDate must be after today")
        if (
            query.get("consumerToken") != self._consumer
            or query.get("employeeToken") != self._employee
        ):
            return _error(403, 9000, "Invalid consumer or employee token")
        token = secrets.token_urlsafe(24)
        with self._lock:
            self.sessions[token] = expires
            self.counts["sessions_created"] += 1
        value = {
            "id": len(self.sessions),
            "version": 1,
            "url": f"tripletex.no/v2/token/session/{len(self.sessions)}",
            "consumerToken": {"id": 1, "url": "tripletex.no/v2/token/consumer/1"},
            "employeeToken": {"id": 1, "url": "tripletex.no/v2/token/employee/1"},
            "expirationDate": expires.isoformat(),
            "token": token,
        }
        return _Answer(200, _json({"value": value}))

    async def _invoices(self, request: Request) -> _Answer:
        query = request.query_params
        parsed = _invoice_query(query)
        if isinstance(parsed, _Answer):
            return parsed
        bounds, start, count, selection = parsed
        lower, upper = bounds[0].isoformat(), bounds[1].isoformat()
        with self._lock:
            self.windows[(lower, upper)] += 1
            selected = [
                invoice
                for invoice in self.company.invoices  # added in id order
                if lower <= invoice["invoiceDate"] < upper and _matches(invoice, query)
            ]
            digest = _digest(selected)
            try:
                values = [shape(invoice, selection) for invoice in selected[start : start + count]]
            except FieldsError as exc:
                return _error(400, 11000, f"Illegal fields expression: {exc}")
            body = _json(
                {
                    "fullResultSize": len(selected),
                    "from": start,
                    "count": len(values),
                    "versionDigest": digest,
                    "values": values,
                }
            )
        return _Answer(200, body)

    async def _invoice(self, request: Request) -> _Answer:
        try:
            selection = parse_fields(request.query_params.get("fields") or "*")
            with self._lock:
                invoice = self.company.invoice(request.path_params["invoice_id"])
                return _Answer(200, _json({"value": shape(invoice, selection)}))
        except KeyError:
            return _error(404, 6000, "Object not found")
        except FieldsError as exc:
            return _error(400, 11000, f"Illegal fields expression: {exc}")

    async def _pdf(self, request: Request) -> _Answer:
        content = self.company.pdfs.get(request.path_params["invoice_id"])
        if content is None:
            return _error(404, 6000, "Object not found")
        return _Answer(200, content, media_type="application/pdf")


def _invoice_query(
    query: Any,  # noqa: ANN401 - starlette's QueryParams
) -> tuple[list[date], int, int, Selection] | _Answer:
    """GET /invoice's parameters checked: the window, from, count and fields; or a 400."""
    unknown = sorted(set(query) - INVOICE_PARAMETERS)
    if unknown:
        return _error(400, 11000, f"Illegal filter: unknown query parameter {unknown[0]}")
    bounds: list[date] = []
    for name in ("invoiceDateFrom", "invoiceDateTo"):
        raw = query.get(name)
        if raw is None:
            return _error(400, 11000, f"{name} is required", field_name=name)
        try:
            bounds.append(date.fromisoformat(raw))
        except ValueError:
            return _error(400, 11000, f"{name} must be a date (YYYY-MM-DD)", field_name=name)
    start = _whole(query.get("from"), 0)
    count = _whole(query.get("count"), DEFAULT_COUNT)
    if start is None or count is None:
        return _error(400, 11000, "from and count must be whole numbers, 0 or more")
    try:
        selection = parse_fields(query.get("fields") or "*")
    except FieldsError as exc:
        return _error(400, 11000, f"Illegal fields expression: {exc}")
    return bounds, start, count, selection


def _matches(invoice: dict[str, Any], query: Any) -> bool:  # noqa: ANN401 - starlette's QueryParams
    for name, value in (
        ("id", invoice["id"]),
        ("invoiceNumber", invoice["invoiceNumber"]),
        ("kid", invoice["kid"]),
        ("voucherId", invoice["voucher"]["id"]),
        ("customerId", invoice["customer"]["id"]),
    ):
        wanted = query.get(name)
        if wanted is not None and str(value) not in {part.strip() for part in wanted.split(",")}:
            return False
    return True


def _digest(selected: list[dict[str, Any]]) -> str | None:
    """A hash of the full result ("null if no result"): it changes when the list does."""
    if not selected:
        return None
    text = repr([(i["id"], str(i["amountOutstanding"]), i["invoiceDueDate"]) for i in selected])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _whole(text: str | None, default: int) -> int | None:
    if text is None:
        return default
    return int(text) if text.strip().isdigit() else None


def _error(status: int, code: int, message: str, *, field_name: str | None = None) -> _Answer:
    """The spec's error envelope."""
    body = {
        "status": status,
        "code": code,
        "message": message,
        "link": "https://tripletex.no/v2-docs/",
        "developerMessage": message,
        "validationMessages": (
            [{"field": field_name, "message": message}] if field_name is not None else None
        ),
        "requestId": secrets.token_hex(8),
    }
    return _Answer(status, _json(body))


def _json(value: object) -> bytes:
    """JSON with amounts as numbers: a Decimal of cents is written as its shortest float, which
    reads back as the same decimal."""
    return json.dumps(value, ensure_ascii=False, default=_number).encode("utf-8")


def _number(value: object) -> object:
    if isinstance(value, Decimal):
        return float(value)
    raise TypeError(f"{type(value).__name__} is not JSON")


class RunningTripletex(RunningServer):
    """Serves a `TripletexSimulator` on 127.0.0.1 (a free port) in a background thread."""

    def __init__(self, simulator: TripletexSimulator) -> None:
        super().__init__(simulator.app, name="Tripletex simulator")
        self.simulator = simulator

    @property
    def base_url(self) -> str:
        return f"{self.root_url}{API_PREFIX}/" if self.root_url else ""

    def start(self) -> None:
        super().start()
        self.simulator.base_url = self.base_url
