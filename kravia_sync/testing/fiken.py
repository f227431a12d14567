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
* `GET /companies/{companySlug}/creditNotes` — `creditNoteResult` objects, filtered by
  `settled`, `issueDate` and `lastModified` (with `Le|Lt|Ge|Gt`) and `customerId`, paged like
  the invoices; `GET .../creditNotes/{creditNoteId}`. An invoice names its credit notes in
  `associatedCreditNotes`, a credit note its invoice in `associatedInvoiceId`.
* Payments: each sale's `salePayments` (`paymentId`, `date`, `account`, `amount` in cents,
  `amountInNok`, `currency`, `fee`), also at `GET .../sales/{saleId}/payments`.
* Bookkeeping a test does as a person would in Fiken: `pay`, `credit` (in full or in part),
  `settle`, `write_off`, `delete`, keeping `totalPaid`, `outstandingBalance` and `settled`
  consistent (see `kravia_sync.testing._fiken_company` for how a credit note counts).
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
import threading
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Any, Final, Literal

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from kravia_sync.testing._dropped import DroppedResponse
from kravia_sync.testing._fiken_company import FikenCompany, demo_company, oslo_today
from kravia_sync.testing._fiken_oauth import OAUTH_PREFIX, FikenOAuthServer
from kravia_sync.testing._fiken_query import (
    CREDIT_NOTE_PARAMETERS,
    INVOICE_PARAMETERS,
    credit_note_matches,
    invoice_matches,
    page_of,
    whole,
)
from kravia_sync.testing.running import RunningServer

__all__ = [
    "FikenCompany",
    "FikenOAuthServer",
    "FikenSimulator",
    "RunningFiken",
    "demo_company",
]

API_PREFIX: Final = "/api/v2"
Kind = Literal[
    "invoices",
    "invoice",
    "contact",
    "pdf",
    "credit_notes",
    "credit_note",
    "sale_payments",
    "company",
]
_PAGED: Final = frozenset({"invoices", "credit_notes"})
Fault = Literal["500", "502", "503", "504", "429", "drop"]


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
                Route(f"{prefix}/creditNotes", self._endpoint("credit_notes", self._credit_notes)),
                Route(
                    f"{prefix}/creditNotes/{{credit_note_id:int}}",
                    self._endpoint("credit_note", self._credit_note),
                ),
                Route(
                    f"{prefix}/sales/{{sale_id:int}}/payments",
                    self._endpoint("sale_payments", self._sale_payments),
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

    def settle(self, invoice_id: int, *, on: date | None = None) -> None:
        """The customer paid the rest of the invoice (a sale payment of its balance)."""
        with self._lock:
            sale = self.company.invoice(invoice_id)["sale"]
            if sale["outstandingBalance"] > 0:
                self.company.pay(invoice_id, sale["outstandingBalance"], on=on or oslo_today())
            sale["settled"] = True

    def pay(self, invoice_id: int, amount: int, *, on: date | None = None) -> dict[str, Any]:
        """The customer paid `amount` øre of the invoice (see `FikenCompany.pay`)."""
        with self._lock:
            return self.company.pay(invoice_id, amount, on=on or oslo_today())

    def credit(
        self, invoice_id: int, amount: int | None = None, *, on: date | None = None
    ) -> dict[str, Any]:
        """A credit note on the invoice, in full or of `amount` øre (`FikenCompany.credit`)."""
        with self._lock:
            return self.company.credit(invoice_id, amount, on=on or oslo_today())

    def write_off(self, invoice_id: int) -> None:
        """Register the invoice's outstanding balance as a loss (`sale.writeOff`)."""
        with self._lock:
            self.company.invoice(invoice_id)["sale"]["writeOff"] = True

    def delete(self, invoice_id: int) -> None:
        """Reverse the invoice's sale (`sale.deleted`); Fiken still lists the invoice."""
        with self._lock:
            self.company.invoice(invoice_id)["sale"]["deleted"] = True

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
        if kind in _PAGED:
            page = whole(request.query_params.get("page")) or 0
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

    async def _company(self, _request: Request) -> _Answer:
        company = self.company
        name = company.slug.replace("-", " ").title()
        number = company.organization_number
        body = {"name": name, "slug": company.slug, "organizationNumber": number}
        return _Answer(200, _json({**body, "hasApiAccess": True, "testCompany": True}))

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
        with self._lock:
            selected = [i for i in self.company.invoices if invoice_matches(i, query)]
            paged = page_of(query, INVOICE_PARAMETERS, len(selected))
            if isinstance(paged, str):
                return _Answer(400, _json({"error": paged}))
            window, headers = paged
            # only the page is shown (copied, with its PDF's URL), not every match
            body = [self._shown(invoice) for invoice in selected[window]]
        return _Answer(200, _json(body), headers)

    async def _credit_notes(self, request: Request) -> _Answer:
        query = request.query_params
        with self._lock:
            selected = [n for n in self.company.credit_notes if credit_note_matches(n, query)]
            paged = page_of(query, CREDIT_NOTE_PARAMETERS, len(selected))
            if isinstance(paged, str):
                return _Answer(400, _json({"error": paged}))
            window, headers = paged
            body = [self._with_customer(note) for note in selected[window]]
        return _Answer(200, _json(body), headers)

    async def _credit_note(self, request: Request) -> _Answer:
        credit_note_id = request.path_params["credit_note_id"]
        with self._lock:
            for note in self.company.credit_notes:
                if note["creditNoteId"] == credit_note_id:
                    return _Answer(200, _json(self._with_customer(note)))
        return _Answer(404, _json({"error": "Not found"}))

    async def _sale_payments(self, request: Request) -> _Answer:
        with self._lock:
            sale = self.company.sale(request.path_params["sale_id"])
            if sale is None:
                return _Answer(404, _json({"error": "Not found"}))
            return _Answer(200, _json(sale.get("salePayments", [])))

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

    def _with_customer(self, item: Mapping[str, Any]) -> dict[str, Any]:
        """An invoice or credit note with its customer as the full contact (the spec types
        both so)."""
        shown = dict(item)
        contact = self.company.contacts.get(item["customer"]["contactId"])
        if contact is not None:
            shown["customer"] = dict(contact)
        return shown

    def _shown(self, invoice: dict[str, Any]) -> dict[str, Any]:
        """The invoice as the API shows it: its customer as the full contact, and its PDF's
        download URL."""
        shown = self._with_customer(invoice)
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
