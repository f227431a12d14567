"""A local Fiken API v2 for tests and benchmarks: invoices, contacts and invoice PDFs over HTTP.

It follows Fiken's published description (api.fiken.no/api/v2, OpenAPI 2.0.0):

* `GET /companies/{companySlug}/invoices` — `InvoiceResult` objects in creation order, filtered
  by `settled` ("false returns all invoices that have not been fully settled"),
  `issueDate`, `dueDate` and `lastModified` (each also with `Le|Lt|Ge|Gt`), `customerId` and
  `invoiceNumber`; any other query parameter is a 400 rather than ignored. Paged with `page`
  (from 0, default 0) and `pageSize` (default 25, at most 100: more is a 400), and the headers
  `Fiken-Api-Page`, `Fiken-Api-Page-Size`, `Fiken-Api-Page-Count`, `Fiken-Api-Result-Count`.
  Amounts are in cents (øre). Each invoice's `customer` is the full contact, as the spec types
  it (whether Fiken's list embeds it in full is not documented; the connector reads the
  contacts endpoint either way). A sale may be settled, written off (`writeOff`) or deleted.
* `GET /companies/{companySlug}/invoices/{invoiceId}` and
  `GET /companies/{companySlug}/contacts/{contactId}` (`Contact` with its `Address`; the
  write-only `phoneNumber` and `currency` are never in a read; `country` in the three forms
  users meet: the spec example's English name `Norway`, `Norge`, and `NO`).
* The invoice PDF at `invoicePdf.downloadUrl`. Fiken does not document the form of that URL;
  here it is `/companies/{slug}/invoices/{invoiceId}/invoicePdf` on the same host.
* `GET /companies/{companySlug}`: the company (`name`, `slug`, `organizationNumber`).
* `Authorization: Bearer <token>` on every request (401 otherwise): the personal API token, or
  an access token of the OAuth2 endpoints (`_fiken_oauth`, `/oauth/…` on the same server; an
  expired or revoked one is a 401 too).
* Rate limits: Fiken allows a single concurrent request per user ("may result in a 429") and
  says calls "may be slowed" beyond 4 per second. The simulator is strict about both: a request
  while another is in flight gets 429, and so does one beyond a token bucket of
  `requests_per_second` (burst `burst`), with `Retry-After: 1`.

Faults are scripted per endpoint and page: `fail("invoices", page=2, faults=["503", "drop"])`
makes the next two requests for that page answer 503, then drop the connection half-way
through the answer.
"""

from __future__ import annotations

import asyncio
import json
import math
import operator
import random
import threading
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any, Final, Literal
from zoneinfo import ZoneInfo

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from stdnum.no import orgnr

from kravia_sync.testing import minimal_pdf
from kravia_sync.testing._dropped import DroppedResponse
from kravia_sync.testing._fiken_oauth import OAUTH_PREFIX, FikenOAuthServer
from kravia_sync.testing.running import RunningServer

__all__ = [
    "FikenCompany",
    "FikenOAuthServer",
    "FikenSimulator",
    "RunningFiken",
    "demo_company",
]

API_PREFIX: Final = "/api/v2"
MAX_PAGE_SIZE: Final = 100
DEFAULT_PAGE_SIZE: Final = 25
Kind = Literal["invoices", "invoice", "contact", "pdf", "company"]
Fault = Literal["500", "502", "503", "504", "429", "drop"]


# -- data ------------------------------------------------------------------------------------


@dataclass
class FikenCompany:
    """One company's data in Fiken's shapes (amounts in øre)."""

    slug: str
    invoices: list[dict[str, Any]]
    contacts: dict[int, dict[str, Any]]
    pdfs: dict[int, bytes] = field(default_factory=dict)
    organization_number: str = "921234566"

    def unpaid_overdue(self, today: date, min_days: int = 14) -> list[dict[str, Any]]:
        """The invoices a pass must send to collection: unsettled, neither written off nor
        deleted, due `min_days` ago or more."""
        return [
            invoice
            for invoice in self.invoices
            if not invoice["sale"]["settled"]
            and not invoice["sale"]["writeOff"]
            and not invoice["sale"]["deleted"]
            and invoice["sale"]["outstandingBalance"] > 0
            and (today - date.fromisoformat(invoice["dueDate"])).days >= min_days
        ]


def _org_number(seed: int) -> str:
    candidate = 910_000_000 + seed * 97
    while not orgnr.is_valid(str(candidate)):
        candidate += 1
    return str(candidate)


def demo_company(
    *,
    invoices: int = 300,
    customers: int = 60,
    slug: str = "fiken-demo-as",
    today: date | None = None,
    seed: int = 7,
    pdf_every: int = 1,
    with_settled: bool = True,
) -> FikenCompany:
    """`invoices` invoices of `customers` customers, every tenth one of each kind:

    settled (paid); not due yet; 5 days overdue (too young for collection); and 20 to 140 days
    overdue, some partly paid. Every other customer is a business (a valid organisation
    number); countries are written as Fiken users do, as names ("Norge") or codes ("NO").
    Every `pdf_every`-th invoice has a PDF (0: none). Without `with_settled`, the tenth that
    would be settled is overdue and unpaid like most.
    """
    rng = random.Random(seed)
    today = today or _oslo_today()
    contacts: dict[int, dict[str, Any]] = {}
    for index in range(customers):
        contact_id = 5_000_000 + index
        business = index % 2 == 0
        contacts[contact_id] = {
            "contactId": contact_id,
            "createdDate": (today - timedelta(days=400)).isoformat(),
            "lastModifiedDate": (today - timedelta(days=30)).isoformat(),
            "name": f"Kunde {index + 1} {'AS' if business else 'Ødegård'}",
            "email": f"kunde{index + 1}@example.no",
            "organizationNumber": _org_number(index) if business else None,
            "customerNumber": 10_001 + index,
            "customerAccountCode": f"1500:{10_001 + index}",
            "customer": True,
            "supplier": False,
            "language": "NORWEGIAN",
            "inactive": False,
            "daysUntilInvoicingDueDate": 14,
            "address": {
                "streetAddress": f"Storgata {index % 90 + 1}",
                "streetAddressLine2": "",
                "city": "Oslo",
                "postCode": f"{150 + index % 40:04d}",
                # The spec's example writes the English name; Norwegian users type "Norge".
                "country": ("Norway", "Norge", "NO")[index % 3],
            },
            "groups": [],
        }
    contact_ids = sorted(contacts)
    company = FikenCompany(slug=slug, invoices=[], contacts=contacts)
    for index in range(invoices):
        invoice_id = 1_000_000 + index
        number = 10_001 + index
        kind = index % 10
        if kind == 1:
            due = today + timedelta(days=10)
        elif kind == 2:
            due = today - timedelta(days=5)
        else:
            due = today - timedelta(days=20 + rng.randrange(120))
        issue = due - timedelta(days=14)
        net = rng.randrange(50_000, 5_000_000)
        vat = net // 4
        gross = net + vat
        settled = kind == 0 and with_settled
        paid = gross if settled else (gross // 3 if kind == 5 else 0)
        contact = contacts[contact_ids[index % len(contact_ids)]]
        invoice: dict[str, Any] = {
            "invoiceId": invoice_id,
            "createdDate": issue.isoformat(),
            "lastModifiedDate": issue.isoformat(),
            "invoiceNumber": number,
            "kid": f"{number}{index % 10}",
            "issueDate": issue.isoformat(),
            "dueDate": due.isoformat(),
            "originalDueDate": due.isoformat(),
            "net": net,
            "vat": vat,
            "gross": gross,
            "netInNok": net,
            "vatInNok": vat,
            "grossInNok": gross,
            "cash": False,
            "invoiceText": f"Faktura {number}",
            "yourReference": "",
            "ourReference": "",
            "orderReference": "",
            "address": dict(contact["address"]),
            "lines": [
                {
                    "net": net,
                    "vat": vat,
                    "vatType": "HIGH",
                    "gross": gross,
                    "vatInPercent": 25,
                    "quantity": 1,
                    "description": "Konsulenttimer",
                }
            ],
            "currency": "NOK",
            "bankAccountNumber": "15032080119",
            "sentManually": False,
            "associatedCreditNotes": [],
            "attachments": [],
            "customer": {"contactId": contact["contactId"], "name": contact["name"]},
            "sale": {
                "saleId": 2_000_000 + index,
                "lastModifiedDate": issue.isoformat(),
                "saleNumber": str(number),
                "date": issue.isoformat(),
                "kind": "invoice",
                "netAmount": net,
                "vatAmount": vat,
                "settled": settled,
                "settledDate": due.isoformat() if settled else None,
                "writeOff": False,
                "totalPaid": paid,
                "totalPaidInCurrency": paid,
                "outstandingBalance": gross - paid,
                "currency": "NOK",
                "dueDate": due.isoformat(),
                "kid": f"{number}{index % 10}",
                "deleted": False,
            },
        }
        if pdf_every and index % pdf_every == 0:
            company.pdfs[invoice_id] = minimal_pdf(f"Faktura {number}")
        company.invoices.append(invoice)
    return company


def _oslo_today() -> date:
    from datetime import datetime  # noqa: PLC0415 - only here

    return datetime.now(ZoneInfo("Europe/Oslo")).date()


# -- the simulator ---------------------------------------------------------------------------


class _Bucket:
    """A token bucket: `rate` tokens a second, at most `burst` saved up."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.at = time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


@dataclass
class _Answer:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    media_type: str = "application/json"


class FikenSimulator:
    """The simulated Fiken API for one company, one personal API token and, with `oauth`, one
    OAuth2 app."""

    def __init__(
        self,
        company: FikenCompany,
        *,
        token: str | None = None,
        oauth: FikenOAuthServer | None = None,
        requests_per_second: float = 4.0,
        burst: float | None = None,
        max_in_flight: int = 1,
        latency_ms: float = 0.0,
    ) -> None:
        self.company = company
        self._token = token
        self.oauth = oauth
        self.latency_s = latency_ms / 1000
        self.max_in_flight = max_in_flight
        self._bucket = _Bucket(requests_per_second, burst or max(1.0, requests_per_second))
        self._lock = threading.Lock()
        self._faults: dict[tuple[str, int | None], deque[Fault]] = {}
        self._in_flight = 0
        self.counts: Counter[str] = Counter()
        self.statuses: Counter[int] = Counter()
        self.most_in_flight = 0
        self.base_url = ""  # set when served: the downloadUrl of PDFs points here
        prefix = f"{API_PREFIX}/companies/{{slug}}"
        self.app = Starlette(
            routes=[
                *(oauth.routes() if oauth is not None else []),
                Route(prefix, self._endpoint("company", self._company)),
                Route(f"{prefix}/invoices", self._endpoint("invoices", self._invoices)),
                Route(
                    f"{prefix}/invoices/{{invoice_id:int}}",
                    self._endpoint("invoice", self._invoice),
                ),
                Route(
                    f"{prefix}/invoices/{{invoice_id:int}}/invoicePdf",
                    self._endpoint("pdf", self._pdf),
                ),
                Route(
                    f"{prefix}/contacts/{{contact_id:int}}",
                    self._endpoint("contact", self._contact),
                ),
            ]
        )

    # -- test controls ---

    def fail(self, kind: Kind, *, page: int | None = None, faults: list[Fault]) -> None:
        """The next requests of `kind` (for `invoices`, of that `page`) answer these faults."""
        with self._lock:
            self._faults.setdefault((kind, page), deque()).extend(faults)

    def calls(self) -> dict[str, Any]:
        """Requests by endpoint, rejected ones, statuses and the most seen in flight."""
        with self._lock:
            return {
                "total": sum(self.statuses.values()),
                **dict(self.counts),
                "statuses": dict(self.statuses),
                "most_in_flight": self.most_in_flight,
            }

    def settle(self, invoice_id: int) -> None:
        """Mark an invoice paid in full (as if the customer paid it)."""
        with self._lock:
            for invoice in self.company.invoices:
                if invoice["invoiceId"] == invoice_id:
                    sale = invoice["sale"]
                    sale["settled"] = True
                    sale["totalPaid"] = invoice["gross"]
                    sale["outstandingBalance"] = 0

    def write_off(self, invoice_id: int) -> None:
        """Register the invoice's outstanding balance as a loss (`sale.writeOff`)."""
        with self._lock:
            self._sale(invoice_id)["writeOff"] = True

    def delete(self, invoice_id: int) -> None:
        """Reverse the invoice's sale (`sale.deleted`); Fiken still lists the invoice."""
        with self._lock:
            self._sale(invoice_id)["deleted"] = True

    def _sale(self, invoice_id: int) -> dict[str, Any]:
        for invoice in self.company.invoices:
            if invoice["invoiceId"] == invoice_id:
                sale: dict[str, Any] = invoice["sale"]
                return sale
        raise KeyError(f"no invoice {invoice_id}")

    # -- serving ---

    def _endpoint(
        self, kind: Kind, handler: Callable[[Request], Awaitable[_Answer]]
    ) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            with self._lock:
                busy = self._in_flight >= self.max_in_flight
                if busy:
                    self.counts["rejected_concurrent"] += 1
                elif not self._bucket.take():
                    self.counts["rejected_rate"] += 1
                    busy = True
                else:
                    self._in_flight += 1
                    self.most_in_flight = max(self.most_in_flight, self._in_flight)
            if busy:
                return self._respond(
                    _Answer(429, _json({"error": "Too many requests"}), {"Retry-After": "1"})
                )
            try:
                if self.latency_s:
                    await asyncio.sleep(self.latency_s)
                return await self._serve(kind, handler, request)
            finally:
                with self._lock:
                    self._in_flight -= 1

        return endpoint

    async def _serve(
        self, kind: Kind, handler: Callable[[Request], Awaitable[_Answer]], request: Request
    ) -> Response:
        if not self._authorized(request.headers.get("authorization", "")):
            return self._respond(_Answer(401, _json({"error": "Unauthorized"})))
        if request.path_params.get("slug") != self.company.slug:
            return self._respond(_Answer(403, _json({"error": "No access to this company"})))
        page = None
        if kind == "invoices":
            page = _int(request.query_params.get("page")) or 0
        fault = self._next_fault(kind, page)
        with self._lock:
            self.counts[kind] += 1
        if fault == "drop":
            answer = await handler(request)
            with self._lock:
                self.statuses[0] += 1
            return DroppedResponse(content=answer.body, status_code=answer.status)
        if fault is not None:
            headers = {"Retry-After": "1"} if fault == "429" else {}
            return self._respond(_Answer(int(fault), _json({"error": "Simulated fault"}), headers))
        return self._respond(await handler(request))

    def _authorized(self, header: str) -> bool:
        token = header.removeprefix("Bearer ")
        if not header.startswith("Bearer ") or not token:
            return False
        return token == self._token or (self.oauth is not None and self.oauth.access_valid(token))

    def _next_fault(self, kind: Kind, page: int | None) -> Fault | None:
        with self._lock:
            queue = self._faults.get((kind, page))
            return queue.popleft() if queue else None

    def _respond(self, answer: _Answer) -> Response:
        with self._lock:
            self.statuses[answer.status] += 1
        return Response(
            content=answer.body,
            status_code=answer.status,
            headers=answer.headers,
            media_type=answer.media_type,
        )

    # -- the endpoints ---

    async def _invoices(self, request: Request) -> _Answer:
        query = request.query_params
        page = _int(query.get("page"))
        size = _int(query.get("pageSize"))
        if ("page" in query and page is None) or ("pageSize" in query and size is None):
            return _Answer(400, _json({"error": "page and pageSize must be whole numbers"}))
        unknown = sorted(set(query) - INVOICE_PARAMETERS)
        if unknown:
            return _Answer(400, _json({"error": f"unsupported query parameter: {unknown[0]}"}))
        page = page or 0
        size = DEFAULT_PAGE_SIZE if size is None else size
        if size < 1 or size > MAX_PAGE_SIZE or page < 0:
            return _Answer(400, _json({"error": f"pageSize must be 1 to {MAX_PAGE_SIZE}"}))
        with self._lock:
            selected = [invoice for invoice in self.company.invoices if _matches(invoice, query)]
            # only the page is shown (copied, with its PDF's URL), not every match
            body = [self._shown(invoice) for invoice in selected[page * size : (page + 1) * size]]
        total = len(selected)
        headers = {
            "Fiken-Api-Page": str(page),
            "Fiken-Api-Page-Size": str(size),
            "Fiken-Api-Page-Count": str(math.ceil(total / size)),
            "Fiken-Api-Result-Count": str(total),
        }
        return _Answer(200, _json(body), headers)

    async def _company(self, _request: Request) -> _Answer:
        company = self.company
        name = company.slug.replace("-", " ").title()
        number = company.organization_number
        body = {"name": name, "slug": company.slug, "organizationNumber": number}
        return _Answer(200, _json({**body, "hasApiAccess": True, "testCompany": True}))

    async def _invoice(self, request: Request) -> _Answer:
        invoice_id = request.path_params["invoice_id"]
        with self._lock:
            for invoice in self.company.invoices:
                if invoice["invoiceId"] == invoice_id:
                    return _Answer(200, _json(self._shown(invoice)))
        return _Answer(404, _json({"error": "Not found"}))

    async def _contact(self, request: Request) -> _Answer:
        contact = self.company.contacts.get(request.path_params["contact_id"])
        if contact is None:
            return _Answer(404, _json({"error": "Not found"}))
        return _Answer(200, _json(contact))

    async def _pdf(self, request: Request) -> _Answer:
        content = self.company.pdfs.get(request.path_params["invoice_id"])
        if content is None:
            return _Answer(404, _json({"error": "Not found"}))
        return _Answer(200, content, media_type="application/pdf")

    def _shown(self, invoice: dict[str, Any]) -> dict[str, Any]:
        """The invoice as the API shows it: its customer as the full contact (the spec types
        it so), and its PDF's download URL."""
        shown = dict(invoice)
        contact = self.company.contacts.get(invoice["customer"]["contactId"])
        if contact is not None:
            shown["customer"] = dict(contact)
        if invoice["invoiceId"] in self.company.pdfs:
            url = (
                f"{self.base_url}companies/{self.company.slug}/invoices/"
                f"{invoice['invoiceId']}/invoicePdf"
            )
            shown["invoicePdf"] = {
                "identifier": str(invoice["invoiceNumber"]),
                "downloadUrl": url,
                "downloadUrlWithFikenNormalUserCredentials": url.replace("/api/v2/", "/"),
                "type": "invoice",
            }
        return shown


# The filters of GET /companies/{slug}/invoices in Fiken's spec that this simulator applies;
# any other query parameter is answered 400, so a filter is never ignored in silence.
_DATE_FILTERS = {"issueDate": "issueDate", "dueDate": "dueDate", "lastModified": "lastModified"}
_COMPARISONS = (
    ("", operator.eq),
    ("Le", operator.le),
    ("Lt", operator.lt),
    ("Ge", operator.ge),
    ("Gt", operator.gt),
)
INVOICE_PARAMETERS = frozenset(
    {"page", "pageSize", "settled", "customerId", "invoiceNumber"}
    | {f"{name}{suffix}" for name in _DATE_FILTERS for suffix, _ in _COMPARISONS}
)


def _date_of(invoice: dict[str, Any], name: str) -> str:
    if name == "lastModified":
        return str(invoice["sale"]["lastModifiedDate"])
    return str(invoice[name])


def _matches(invoice: dict[str, Any], query: Any) -> bool:  # noqa: ANN401 - starlette's QueryParams
    settled = query.get("settled")
    if settled is not None and (settled.lower() == "true") != invoice["sale"]["settled"]:
        return False
    for name in _DATE_FILTERS:
        for suffix, test in _COMPARISONS:
            bound = query.get(f"{name}{suffix}")
            if bound is not None and not test(_date_of(invoice, name), bound):
                return False
    customer = query.get("customerId")
    if customer is not None and str(invoice["customer"]["contactId"]) != customer:
        return False
    number = query.get("invoiceNumber")
    return number is None or str(invoice["invoiceNumber"]) == number


def _int(text: str | None) -> int | None:
    if text is None or not text.strip().lstrip("-").isdigit():
        return None
    return int(text)


def _json(value: object) -> bytes:
    return json.dumps(value, ensure_ascii=False).encode("utf-8")


# -- running it -------------------------------------------------------------------------------


class RunningFiken(RunningServer):
    """Serves a `FikenSimulator` on 127.0.0.1 (a free port) in a background thread."""

    def __init__(self, simulator: FikenSimulator) -> None:
        super().__init__(simulator.app, name="Fiken simulator")
        self.simulator = simulator

    @property
    def base_url(self) -> str:
        return f"{self.root_url}{API_PREFIX}/" if self.root_url else ""

    @property
    def oauth_url(self) -> str:
        """Where the OAuth2 endpoints are (Fiken's `https://fiken.no/oauth/`)."""
        return f"{self.root_url}{OAUTH_PREFIX}/" if self.root_url else ""

    def start(self) -> None:
        super().start()
        self.simulator.base_url = self.base_url
