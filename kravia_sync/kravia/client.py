"""The Kravia API client: calls, their pace and their errors, and the readers of Kravia's answers.

What Kravia's API looks like (paths, keys, statuses, each ASSUMED one with its reason) is in
`kravia_sync.kravia.assumptions`; this module writes requests and reads answers through those
names only, so changing an assumption touches that module."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import random
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from email.utils import parsedate_to_datetime
from enum import StrEnum
from typing import Any, Literal, Self

import httpx

from kravia_sync.errors import KraviaSyncError
from kravia_sync.kravia.assumptions import (
    ACTION_NAME_KEYS,
    ACTION_PATH,
    ACTION_START,
    ALREADY_STARTED_STATUSES,
    ALREADY_STARTED_WORDS,
    AUTH_HEADER,
    BOOKKEEP_CREATES,
    BOOKKEEP_PATH,
    CLAIM_TYPE,
    CLOSED_STATUSES,
    CONFIG_STATUSES,
    CREDIT_NOTE_PATH,
    CREDIT_NOTE_TIME_SUFFIX,
    DATE_RESOLUTION,
    DETAILS_ACTIONS_KEY,
    DETAILS_DOCUMENTS_KEY,
    DETAILS_OUTSTANDING_KEY,
    DETAILS_PATH,
    DETAILS_PAYMENTS_KEY,
    DETAILS_REMAINING_CAPITAL_KEY,
    DETAILS_STATUS_KEY,
    DOCUMENT_FIELD,
    DOCUMENT_PATH,
    DOCUMENT_TYPE_INVOICE,
    DOCUMENT_TYPE_KEYS,
    MAX_RETRY_AFTER_SECONDS,
    NOT_APPLIED_STATUSES,
    OPEN_STATUSES,
    OVERLOAD_STATUSES,
    PAYMENT_AMOUNT_KEY,
    PAYMENT_APPLIED_KEY,
    PAYMENT_DATE_KEY,
    PAYMENT_ID_KEY,
    PAYMENT_PATH,
    PAYMENT_TYPE_KEY,
    PAYMENT_TYPES,
    REGISTER_ID_KEYS,
    REGISTER_PATH,
    SEARCH_ID_KEYS,
    SEARCH_ITEMS_KEYS,
    SEARCH_ORDER_BY_LAST_UPDATED,
    SEARCH_PAGE_OVERLAP,
    SEARCH_PAGE_SIZE,
    SEARCH_PATH,
    SEARCH_TOTAL_KEYS,
    SETTLEMENT_BOOKED_KEY,
    SETTLEMENT_DATE_KEY,
    SETTLEMENT_ITEMS_KEYS,
    SETTLEMENT_LINES_KEY,
    SETTLEMENTS_PATH,
    STARTED_STATUSES,
    WEBHOOK_PATH,
)
from kravia_sync.kravia.pacing import Pacing, PacingSnapshot, Signal
from kravia_sync.kravia.transport import SlotTransport
from kravia_sync.lifecycle import Details
from kravia_sync.logging import get_logger
from kravia_sync.model import DebtorKind, Invoice

__all__ = [
    "CallGate",
    "CaseStanding",
    "Failure",
    "KraviaAuthError",
    "KraviaClient",
    "KraviaError",
    "MoneyLine",
    "PaymentKind",
    "RawAnswer",
    "RecordedPayment",
    "Reservation",
    "SearchItem",
    "SearchResult",
    "Settlement",
    "build_credit_note_body",
    "build_payment_body",
    "build_register_body",
    "case_standing",
    "classify_response",
    "dotnet_time_zone",
    "field_of",
    "load_signal",
    "loads_exact",
    "parse_retry_after",
    "parse_search_items",
    "parse_settlements",
    "payment_recorded",
    "read_amount",
    "recorded_payments",
]

log = get_logger(__name__)


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


@dataclass(frozen=True, slots=True)
class SearchItem:
    kravia_id: int
    accounting_invoice_id: str | None
    invoice_number: str | None
    status: str | None
    updated: str | None
    remaining_capital: Decimal | None = None  # None when the item does not say
    outstanding: Decimal | None = None


@dataclass(frozen=True, slots=True)
class RawAnswer:
    """One answer as Kravia sent it, for checking its shape (`KraviaClient.look`, and the
    answers a watcher sees): the operation, the HTTP status, the `Date` header as sent, and
    the body parsed exactly (None when it is not JSON)."""

    operation: str
    status: int
    date: str | None
    body: object

    @classmethod
    def of(cls, operation: str, response: httpx.Response) -> RawAnswer:
        try:
            body = loads_exact(response.content) if response.content else None
        except ValueError:
            body = None
        return cls(operation, response.status_code, response.headers.get("Date"), body)


@dataclass(frozen=True, slots=True)
class MoneyLine:
    """An amount on one Kravia case. Positive in our model, whatever sign Kravia wants."""

    kravia_id: int
    amount: Decimal

    def __post_init__(self) -> None:
        if isinstance(self.kravia_id, bool) or not isinstance(self.kravia_id, int):
            raise TypeError(f"a Kravia id is an integer, not {self.kravia_id!r}")
        if not isinstance(self.amount, Decimal):
            raise TypeError(f"an amount is a Decimal, not {type(self.amount).__name__}")
        if not self.amount.is_finite() or self.amount <= 0:
            raise ValueError(f"an amount on case {self.kravia_id} must be above 0: {self.amount}")


class PaymentKind(StrEnum):
    """What kind of money a case's details record."""

    PAYMENT = "payment"  # the debtor paid the creditor directly (we sent it)
    CREDIT_NOTE = "credit_note"  # the creditor credited the claim (we sent it)
    COLLECTED = "collected"  # the debtor paid Kravia (Kravia's own; never ours to send)
    UNKNOWN = "unknown"  # a type we do not recognise


@dataclass(frozen=True, slots=True)
class RecordedPayment:
    """Money Kravia lists on a case. `amount` is positive (a credit note's sign is dropped);
    `applied` is the part that reduced the capital, None when the details do not say."""

    accounting_payment_id: str | None
    amount: Decimal
    paid_on: date | None
    kind: PaymentKind
    applied: Decimal | None = None


@dataclass(frozen=True, slots=True)
class CaseStanding:
    """Where a case stands, as its details say. Every field is None when they do not say."""

    status: str | None
    remaining_capital: Decimal | None
    outstanding: Decimal | None
    closed: bool | None
    payments: list[RecordedPayment] | None  # None: no readable list of payments


@dataclass(frozen=True, slots=True)
class Settlement:
    """A payout from Kravia to the creditor."""

    id: int
    settled_on: date | None
    amount: Decimal
    lines: list[MoneyLine]
    booked: bool | None


@dataclass(slots=True)
class CallStats:
    """Counts of calls by operation and outcome, for run summaries and benchmarks."""

    counts: dict[str, int] = field(default_factory=dict)

    def add(self, operation: str, outcome: str) -> None:
        key = f"{operation}:{outcome}"
        self.counts[key] = self.counts.get(key, 0) + 1

    def total(self) -> int:
        return sum(self.counts.values())


def build_register_body(invoice: Invoice, creditor_id: int) -> dict[str, Any]:
    """The `invoice/register` body, with the guide's field names and JSON types.

    ASSUMED from the guide's example: `isPrivateIndividual` is the *string* "true"/"false";
    `originalAmount` is a JSON number; dates are `YYYY-MM-DD`.
    """
    debtor = invoice.debtor
    address: dict[str, Any] = {
        "addressAddressLine1": debtor.address.line1,
        "addressPostalCode": debtor.address.postal_code,
        "addressCity": debtor.address.city,
        "addressCountryCode": debtor.address.country,
    }
    if debtor.address.line2:
        address["addressAddressLine2"] = debtor.address.line2
    return {
        "claimType": CLAIM_TYPE,
        "creditorId": creditor_id,
        "accountingInvoiceId": invoice.accounting_invoice_id,
        "debtorName": debtor.name,
        "debtorNumber": debtor.customer_number,
        "email": debtor.email,
        "ssn": debtor.ssn,
        "organizationNumber": debtor.organization_number,
        "isPrivateIndividual": "true" if debtor.kind is DebtorKind.PRIVATE else "false",
        "postalAddress": address,
        "invoiceNo": invoice.invoice_number,
        "invoiceDate": invoice.invoice_date.isoformat(),
        "dueDate": invoice.due_date.isoformat(),
        "originalAmount": invoice.amount,
        "currencyCode": invoice.currency,
        "description": invoice.description,
    }


def _checked_lines(accounting_payment_id: str, lines: Sequence[MoneyLine]) -> list[MoneyLine]:
    if not accounting_payment_id.strip():
        raise ValueError("a payment or credit note needs a non-blank accounting payment id")
    if not lines:
        raise ValueError(f"payment {accounting_payment_id} covers no case")
    ids = [line.kravia_id for line in lines]
    if len(set(ids)) != len(ids):
        raise ValueError(f"payment {accounting_payment_id} lists a case more than once: {ids}")
    return list(lines)


def build_payment_body(
    *, accounting_payment_id: str, paid_on: date, description: str, lines: Sequence[MoneyLine]
) -> dict[str, Any]:
    """The `invoice/payment` body, with the guide's mixed casing; `amount` is the lines' sum."""
    checked = _checked_lines(accounting_payment_id, lines)
    return {
        "date": paid_on.isoformat(),
        "description": description,
        "AccountingPaymentId": accounting_payment_id,
        "amount": sum((line.amount for line in checked), Decimal(0)),
        "invoices": [{"invoiceId": line.kravia_id, "amount": line.amount} for line in checked],
    }


def build_credit_note_body(
    *, accounting_payment_id: str, credited_on: date, description: str, lines: Sequence[MoneyLine]
) -> dict[str, Any]:
    """The `invoice/creditnote` body, PascalCase as in the guide, every amount negative."""
    checked = _checked_lines(accounting_payment_id, lines)
    return {
        "Date": credited_on.isoformat() + CREDIT_NOTE_TIME_SUFFIX,
        "Amount": -sum((line.amount for line in checked), Decimal(0)),
        "AccountingPaymentId": accounting_payment_id,
        "Description": description,
        "Invoices": [{"InvoiceId": line.kravia_id, "Amount": -line.amount} for line in checked],
    }


def dumps_exact(body: Mapping[str, Any]) -> bytes:
    """JSON with every `Decimal` written as an exact JSON number (never through a float)."""
    decimals: list[Decimal] = []

    def placeholder(value: object) -> str:
        if isinstance(value, Decimal):
            decimals.append(value)
            return f"\u0000decimal{len(decimals) - 1}\u0000"
        if isinstance(value, date):
            return value.isoformat()
        raise TypeError(f"{type(value).__name__} is not JSON serialisable")

    text = json.dumps(body, default=placeholder, ensure_ascii=False)
    for index, value in enumerate(decimals):
        number = str(int(value)) if value == value.to_integral_value() else format(value, "f")
        text = text.replace(f'"\\u0000decimal{index}\\u0000"', number)
    return text.encode()


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a `Retry-After` header, or None when there is no usable hint.

    `0`, negative numbers, dates in the past and garbage all mean "no hint" (a `Retry-After: 0`
    must not turn into a tight retry loop). Hints are clamped to MAX_RETRY_AFTER_SECONDS.
    """
    if value is None:
        return None
    text = value.strip()
    seconds: float | None
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    if math.isnan(seconds) or seconds <= 0:
        return None
    return min(seconds, MAX_RETRY_AFTER_SECONDS)


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
        retry_after = parse_retry_after(response.headers.get("Retry-After"))
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


def parse_register_id(body: object) -> int:
    """The new case's id from a register answer; ValueError when there is none, or when two
    keys give different ones (never a guess between them)."""
    if isinstance(body, int) and not isinstance(body, bool):
        return body
    ids: dict[str, int] = {}
    if isinstance(body, dict):
        for key, value in body.items():
            if key.lower() in {name.lower() for name in REGISTER_ID_KEYS}:
                parsed = _int_id(value)
                if parsed is None:
                    raise ValueError(f"Kravia's register answer has {key} = {str(value)[:50]!r}")
                ids[key] = parsed
    if len(set(ids.values())) > 1:
        named = ", ".join(f"{key} = {value}" for key, value in ids.items())
        raise ValueError(f"Kravia's register answer names two different ids: {named}")
    if ids:
        return next(iter(ids.values()))
    raise ValueError(f"no invoice id in Kravia's register answer: {str(body)[:200]}")


def format_dotnet_time(moment: datetime) -> str:
    """A UTC timestamp the way the guide shows it: 7 fractional digits, no zone (ASSUMED UTC)."""
    utc = moment.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond:06d}0"


def _reject_constant(name: str) -> object:
    raise ValueError(f"{name} is not a number Kravia can mean")


def loads_exact(content: bytes | str) -> Any:  # noqa: ANN401 - JSON value
    """Parse JSON with every fractional number as an exact Decimal (never through a float)."""
    return json.loads(content, parse_float=Decimal, parse_constant=_reject_constant)


def _json_exact(response: httpx.Response) -> Any:  # noqa: ANN401 - JSON value
    try:
        return loads_exact(response.content)
    except ValueError as exc:
        raise KraviaError(
            Failure.TRANSIENT, f"Kravia's answer is not JSON: {response.text[:200]}"
        ) from exc


def _listed(body: object, keys: Sequence[str], what: str) -> list[Any]:
    """The list an answer carries: the answer itself, or under one of `keys`."""
    if isinstance(body, list):
        items: object = body
    elif isinstance(body, dict):
        items = next((body[key] for key in keys if key in body), None)
    else:
        items = None
    if not isinstance(items, list):
        raise ValueError(f"unrecognised {what} answer: {str(body)[:200]}")
    return items


def _total_count(body: object) -> int | None:
    """How many cases match in all, where the search answer says (ASSUMED: `totalCount` or
    `count` beside the list); None otherwise."""
    if not isinstance(body, dict):
        return None
    value = _first_ci(body, SEARCH_TOTAL_KEYS)
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _search_items(body: object) -> list[dict[str, Any]]:
    items = _listed(body, SEARCH_ITEMS_KEYS, "search")
    for item in items:
        if not isinstance(item, dict):
            raise ValueError(f"Kravia's search answer has an item we cannot read: {item!r:.200}")
    return items


def _get_ci(item: Mapping[str, Any], name: str) -> Any:  # noqa: ANN401 - JSON value
    """A property by name, case-insensitively (ASP.NET serialisers vary)."""
    if name in item:
        return item[name]
    lowered = name.lower()
    return next((value for key, value in item.items() if key.lower() == lowered), None)


class CallGate:
    """Lets calls leave as `Pacing` allows: no more in flight than its limit, no sooner than its
    rate and any Retry-After pause. Waiting calls leave in the order they came."""

    def __init__(self, pacing: Pacing, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.pacing = pacing
        self.in_flight = 0
        self._clock = clock
        self._turn = asyncio.Lock()  # first come, first to leave
        self._freed = asyncio.Event()

    async def enter(self) -> float:
        """Wait for this call's turn; the monotonic time it leaves."""
        async with self._turn:
            while True:
                if self.in_flight >= self.pacing.limit:
                    self._freed.clear()
                    await self._freed.wait()
                    continue
                delay = self.pacing.delay(self._clock())
                if delay <= 0:
                    break
                await asyncio.sleep(delay)  # then look again: the pace may have changed
            now = self._clock()
            self.in_flight += 1
            self.pacing.sent(now, self.in_flight)
            return now

    def leave(self) -> None:
        self.in_flight -= 1
        self._freed.set()

    def snapshot(self) -> PacingSnapshot:
        return self.pacing.snapshot(self._clock())


def load_signal(error: KraviaError | None) -> Signal:
    """What an answer (None: a success; else the error it became) says of Kravia's load."""
    if error is None:
        return Signal.ANSWERED
    if error.status == 429:
        return Signal.THROTTLED
    if error.status in OVERLOAD_STATUSES or (error.status is None and error.timed_out):
        return Signal.OVERLOADED
    return Signal.ANSWERED


class Reservation:
    """A turn at the gate (`KraviaClient.reserve`), taken before a call's intent is journaled
    so the intent means "leaving now". Good for one call."""

    __slots__ = ("sent_at", "used")

    def __init__(self, sent_at: float) -> None:
        self.sent_at = sent_at
        self.used = False


@dataclass(frozen=True, slots=True)
class SearchResult:
    """Every case a search reported, and when (by Kravia's clock) its first page was served:
    every case updated before then is in `items`."""

    items: list[SearchItem]
    server_time: datetime | None  # None: Kravia's answers carried no readable Date header


class KraviaClient:
    """Async client for the calls kravia-sync makes. One attempt per call: retry policy lives
    with the engine, which journals every attempt."""

    def __init__(
        self,
        *,
        base_url: str,
        token: str,
        timeout: float = 30.0,
        max_in_flight: int = 16,
        requests_per_second: float | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        pacing: Pacing | None = None,
    ) -> None:
        """`pacing`: the adaptive limits to share (a daemon keeps one across its passes);
        by default a new one from `max_in_flight` and `requests_per_second` (a ceiling)."""
        # No httpx.AsyncClient: we need none of its cookies, redirects or auth flows, and its
        # per-request work costs a quarter of a call's CPU. Requests go straight to the
        # transport, which holds one kept-alive connection per slot.
        self._base_url = base_url if base_url.endswith("/") else base_url + "/"
        self._headers = {AUTH_HEADER: token, "Accept": "application/json"}
        self._timeout = httpx.Timeout(timeout).as_dict()
        if pacing is None:
            pacing = Pacing(max_in_flight=max_in_flight, ceiling=requests_per_second)
        self._transport = transport or SlotTransport(slots=pacing.max_in_flight)
        self._gate = CallGate(pacing)
        self.stats = CallStats()
        self._watchers: list[Callable[[RawAnswer], None]] = []
        # Kravia's clock as its last answer's Date header told it, and when (monotonic) we
        # read it.
        self.server_time: datetime | None = None
        self._server_time_read = 0.0

    @contextlib.asynccontextmanager
    async def reserve(self) -> AsyncIterator[Reservation]:
        """Wait for the gate and hold a place in flight for one call: the engine journals the
        call's intent inside this, then sends with the reservation."""
        sent_at = await self._gate.enter()
        try:
            yield Reservation(sent_at)
        finally:
            self._gate.leave()

    def pacing(self) -> PacingSnapshot:
        """The pace now: the limit in flight, the rate, what got through lately."""
        return self._gate.snapshot()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._transport.aclose()

    async def _call(
        self,
        operation: str,
        method: str,
        path: str,
        *,
        creates: bool,
        params: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        content: bytes | None = None,
        files: dict[str, tuple[str, bytes, str]] | None = None,
        per_case: bool = False,
        reservation: Reservation | None = None,
    ) -> httpx.Response:
        if reservation is None:
            async with self.reserve() as reserved:
                return await self._call(
                    operation,
                    method,
                    path,
                    creates=creates,
                    params=params,
                    headers=headers,
                    content=content,
                    files=files,
                    per_case=per_case,
                    reservation=reserved,
                )
        if reservation.used:
            raise RuntimeError("a reservation is good for one call")
        reservation.used = True
        request = httpx.Request(
            method,
            self._base_url + path,
            params=params,
            headers=self._headers if headers is None else self._headers | headers,
            content=content,
            files=files,
            extensions={"timeout": self._timeout},
        )
        leaving = time.monotonic()
        try:
            response = await self._transport.handle_async_request(request)
            try:
                await response.aread()
            finally:
                await response.aclose()
            response.request = request
        except httpx.HTTPError as exc:
            lost = classify_exception(exc, creates=creates)
            self._paced(reservation, lost, leaving)
            self.stats.add(operation, lost.failure.value)
            raise lost from None
        self._note_server_time(response)
        for watcher in list(self._watchers):
            watcher(RawAnswer.of(operation, response))
        refused = classify_response(response, creates=creates, per_case=per_case)
        self._paced(reservation, refused, leaving)
        if refused is not None:
            self.stats.add(operation, refused.failure.value)
            raise refused
        self.stats.add(operation, "ok")
        return response

    def _paced(self, reservation: Reservation, error: KraviaError | None, leaving: float) -> None:
        """Tell the pace what this answer says of Kravia's load (and the log, when the pace
        came down)."""
        now = time.monotonic()
        pacing = self._gate.pacing
        before = (pacing.limit, pacing.rate)
        pacing.answered(
            load_signal(error),
            sent_at=reservation.sent_at,
            now=now,
            latency=now - leaving,
            retry_after=None if error is None else error.retry_after,
        )
        limit, rate = pacing.limit, pacing.rate
        if limit < before[0] or (rate is not None and (before[1] is None or rate < before[1])):
            log.info(
                "pace lowered",
                answer=None if error is None else error.status or "no answer",
                in_flight_limit=limit,
                rate=None if rate is None else round(rate, 2),
            )

    @contextlib.contextmanager
    def watching(self, watcher: Callable[[RawAnswer], None]) -> Iterator[None]:
        """Show `watcher` every answer Kravia gives while this lasts (the first-contact
        canary reads the shape of the answers to the calls it makes)."""
        self._watchers.append(watcher)
        try:
            yield
        finally:
            self._watchers.remove(watcher)

    async def look(
        self,
        operation: Literal["search", "settlements", "details"],
        *,
        kravia_id: int | None = None,
        since: datetime | None = None,
        top: int = 1,
    ) -> RawAnswer:
        """One read-only call, its answer kept as sent (for `check --probe` and the canary):
        a search page (newest first; with `since`, oldest first from then), the unbooked
        settlements, or one case's details. KraviaError when Kravia does not answer 2xx."""
        params: dict[str, Any] | None
        if operation == "details":
            if kravia_id is None:
                raise ValueError("details need a Kravia id")
            path, params = DETAILS_PATH.format(id=kravia_id), None
        elif operation == "settlements":
            path, params = SETTLEMENTS_PATH, {"ExcludeClosed": "true"}
        else:
            path = SEARCH_PATH
            params = {
                "byAscending": "False" if since is None else "True",
                "orderBy": SEARCH_ORDER_BY_LAST_UPDATED,
                "skip": 0,
                "top": top,
            }
            if since is not None:
                params["lastUpdatedTime"] = format_dotnet_time(since)
        response = await self._call(
            operation,
            "GET",
            path,
            creates=False,
            params=params,
            per_case=operation == "details",
        )
        return RawAnswer.of(operation, response)

    def _note_server_time(self, response: httpx.Response) -> None:
        moment = parse_http_date(response.headers.get("Date"))
        if moment is not None:
            self.server_time = moment
            self._server_time_read = time.monotonic()

    def kravia_now(self) -> datetime | None:
        """Kravia's clock now, at the earliest it can be, as its last Date header and the time
        since tell (a Date is cut to the second); None before any answer carried one. Our
        own clock may be off by any amount: this is not."""
        if self.server_time is None:
            return None
        return self.server_time + timedelta(seconds=time.monotonic() - self._server_time_read)

    def kravia_latest(self) -> datetime | None:
        """Kravia's clock now, at the latest it can be (see `kravia_now`)."""
        earliest = self.kravia_now()
        return None if earliest is None else earliest + DATE_RESOLUTION

    async def register(
        self, invoice: Invoice, *, creditor_id: int, reservation: Reservation | None = None
    ) -> int:
        """Register the invoice for collection; the new Kravia invoice id."""
        body = dumps_exact(build_register_body(invoice, creditor_id))
        response = await self._call(
            "register",
            "POST",
            REGISTER_PATH,
            creates=True,
            content=body,
            headers={"Content-Type": "application/json"},
            reservation=reservation,
        )
        try:
            return parse_register_id(response.json())
        except ValueError as exc:
            # It was registered, but we cannot tell its id: look it up like an ambiguous call.
            raise KraviaError(Failure.AMBIGUOUS, str(exc), status=response.status_code) from None

    async def upload_document(
        self,
        kravia_id: int,
        *,
        name: str,
        content: bytes,
        reservation: Reservation | None = None,
    ) -> None:
        """Attach a copy of the original invoice (a PDF) to the case."""
        await self._call(
            "document",
            "POST",
            DOCUMENT_PATH.format(id=kravia_id),
            creates=True,
            params={"type": DOCUMENT_TYPE_INVOICE},
            files={DOCUMENT_FIELD: (name, content, "application/pdf")},
            per_case=True,
            reservation=reservation,
        )

    async def start(
        self, kravia_id: int, *, message: str, reservation: Reservation | None = None
    ) -> None:
        """Start the collection process for a registered case."""
        await self.send_action(kravia_id, ACTION_START, message=message, reservation=reservation)

    async def send_action(
        self,
        kravia_id: int,
        action: str,
        *,
        message: str,
        reservation: Reservation | None = None,
    ) -> None:
        """Send a case action by name (`Start`; others, such as a pause, are configured: their
        names are unpublished). Changes the case, so a lost answer is ambiguous."""
        await self._call(
            "action",
            "POST",
            ACTION_PATH.format(id=kravia_id),
            creates=True,
            params={"action": action},
            content=dumps_exact({"Message": message}),
            headers={"Content-Type": "application/json"},
            per_case=True,
            reservation=reservation,
        )

    async def register_payment(
        self,
        *,
        accounting_payment_id: str,
        paid_on: date,
        description: str,
        lines: Sequence[MoneyLine],
        reservation: Reservation | None = None,
    ) -> None:
        """Forward a payment the debtor made to the creditor. Kravia does not de-duplicate
        payments, so a lost answer is AMBIGUOUS: look (`payment_recorded`), never resend."""
        body = build_payment_body(
            accounting_payment_id=accounting_payment_id,
            paid_on=paid_on,
            description=description,
            lines=lines,
        )
        await self._call(
            "payment",
            "POST",
            PAYMENT_PATH,
            creates=True,
            content=dumps_exact(body),
            headers={"Content-Type": "application/json"},
            reservation=reservation,
        )

    async def register_credit_note(
        self,
        *,
        accounting_payment_id: str,
        credited_on: date,
        description: str,
        lines: Sequence[MoneyLine],
        reservation: Reservation | None = None,
    ) -> None:
        """Forward a credit note (sent with negative amounts). A lost answer is AMBIGUOUS."""
        body = build_credit_note_body(
            accounting_payment_id=accounting_payment_id,
            credited_on=credited_on,
            description=description,
            lines=lines,
        )
        await self._call(
            "creditnote",
            "POST",
            CREDIT_NOTE_PATH,
            creates=True,
            content=dumps_exact(body),
            headers={"Content-Type": "application/json"},
            reservation=reservation,
        )

    async def settlements(self, *, exclude_closed: bool = True) -> list[Settlement]:
        """Kravia's payouts to the creditor; with `exclude_closed`, only those not yet booked.
        An answer we cannot read in full fails (TRANSIENT): a payout we cannot see could be
        echoed back as a payment."""
        response = await self._call(
            "settlements",
            "GET",
            SETTLEMENTS_PATH,
            creates=False,
            params={"ExcludeClosed": "true" if exclude_closed else "false"},
        )
        try:
            return parse_settlements(_json_exact(response))
        except ValueError as exc:
            raise KraviaError(Failure.TRANSIENT, str(exc), status=response.status_code) from None

    async def bookkeep_settlement(self, settlement_id: int, *, internal_accounting_id: str) -> None:
        """Mark a settlement booked in the creditor's accounts under `internal_accounting_id`."""
        await self._call(
            "bookkeep",
            "PATCH",
            BOOKKEEP_PATH.format(id=settlement_id),
            creates=BOOKKEEP_CREATES,
            params={"internalAccountingId": internal_accounting_id},
            per_case=True,
        )

    async def details(self, kravia_id: int) -> dict[str, Any]:
        """The case's details, numbers parsed exactly (see `case_standing`)."""
        response = await self._call(
            "details", "GET", DETAILS_PATH.format(id=kravia_id), creates=False, per_case=True
        )
        body = _json_exact(response)
        if not isinstance(body, dict):
            raise KraviaError(Failure.TRANSIENT, f"unrecognised details answer: {str(body)[:200]}")
        return body

    async def search_updated_since(
        self, since: datetime, *, page_retries: int = 3, retry_base: float = 0.2
    ) -> SearchResult:
        """Every case updated at or after `since` (a time on Kravia's clock), following the
        offset paging to the end, with Kravia's time when the first page was served.

        Offset paging over a list ordered by update time shifts when a case is updated while
        we page (it moves to the end), which could carry an unseen case past a page edge. So
        consecutive pages overlap by SEARCH_PAGE_OVERLAP items, and the overlap must match:
        when it does not, the search starts again (up to `page_retries` times) and then fails
        as transient — never returning an incomplete list as if it were complete. The end is
        a page that brings nothing beyond the overlap, so a server that caps `top` lower than
        we ask still pages to the end. A page that fails transiently is read again. An item
        we cannot read fails the search (transient) for the same reason.
        """
        for _ in range(page_retries + 1):
            found = await self._search_once(since, page_retries=page_retries, base=retry_base)
            if found is not None:
                return found
        raise KraviaError(
            Failure.TRANSIENT, "cases kept moving while Kravia's search was paged; try later"
        )

    async def _search_once(
        self, since: datetime, *, page_retries: int, base: float
    ) -> SearchResult | None:
        """One full paging, or None when the pages shifted under us.

        Consecutive pages overlap (SEARCH_PAGE_OVERLAP items, at most half of what a page
        brought, so a server that serves fewer items than we ask still pages on), and the
        overlap must match. The end: the answer's total count reached, where it gives one, or
        a page that brings no case not seen already."""
        found: dict[int, SearchItem] = {}
        skip = 0
        tail: list[int] = []
        first_page_time: datetime | None = None
        while True:
            items, served_at, total = await self._search_page(
                since, skip, retries=page_retries, base=base
            )
            if skip == 0:
                first_page_time = served_at
            parsed_items = [_search_item(item) for item in items]
            ids = [parsed.kravia_id for parsed in parsed_items]
            if tail and ids and ids[: len(tail)] != tail:
                return None  # (an empty page is the end: cases only move later, never go)
            new = [kravia_id for kravia_id in ids if kravia_id not in found]
            for parsed in parsed_items:
                found[parsed.kravia_id] = parsed
            if not new or (total is not None and skip + len(ids) >= total):
                return SearchResult(list(found.values()), first_page_time)
            overlap = min(SEARCH_PAGE_OVERLAP, len(ids) // 2)
            tail = ids[len(ids) - overlap :] if overlap else []
            skip += len(ids) - overlap

    async def _search_page(
        self, since: datetime, skip: int, *, retries: int, base: float
    ) -> tuple[list[dict[str, Any]], datetime | None, int | None]:
        """One page of the search, Kravia's time when it served it (its Date header), and the
        total count of matching cases where the answer gives one."""
        attempt = 0
        while True:
            try:
                response = await self._call(
                    "search",
                    "GET",
                    SEARCH_PATH,
                    creates=False,
                    params={
                        "byAscending": "True",
                        "lastUpdatedTime": format_dotnet_time(since),
                        "orderBy": SEARCH_ORDER_BY_LAST_UPDATED,
                        "skip": skip,
                        "top": SEARCH_PAGE_SIZE,
                    },
                )
                served_at = parse_http_date(response.headers.get("Date"))
                body = _json_exact(response)
                return _search_items(body), served_at, _total_count(body)
            except (KraviaError, ValueError) as exc:
                failure = exc.failure if isinstance(exc, KraviaError) else Failure.TRANSIENT
                if failure is Failure.AUTH or attempt >= retries:
                    if isinstance(exc, KraviaError):
                        raise
                    raise KraviaError(Failure.TRANSIENT, str(exc)) from None
                hint = exc.retry_after if isinstance(exc, KraviaError) else None
                await asyncio.sleep(hint or backoff_delay(attempt, base=base, cap=5.0))
                attempt += 1

    async def configure_webhook(
        self, *, creditor_id: int, url: str, secret: str, enabled: bool
    ) -> None:
        """Set the creditor's webhook at Kravia (one per creditor): where Kravia sends its
        events, the secret it signs them with, and whether it sends them."""
        body = {"secret": secret, "enabled": enabled, "url": url}
        await self._call(
            "webhook",
            "PUT",
            WEBHOOK_PATH.format(id=creditor_id),
            creates=False,  # a PUT of the whole setting: sending it again does no harm
            content=dumps_exact(body),
            headers={"Content-Type": "application/json"},
        )

    async def check_token(self) -> None:
        """A cheap authenticated read; raises KraviaError(AUTH) for a bad token."""
        await self._call(
            "search",
            "GET",
            SEARCH_PATH,
            creates=False,
            params={
                "byAscending": "False",
                "orderBy": SEARCH_ORDER_BY_LAST_UPDATED,
                "skip": 0,
                "top": 1,
            },
        )


def details_summary(details: Mapping[str, Any]) -> SearchItem:
    """What a case's details say of the case the way a search item does (ASSUMED: the
    details carry the search item's fields); KraviaError (transient) when it cannot be
    identified."""
    return _search_item(details)


def _search_item(item: Mapping[str, Any]) -> SearchItem:
    """One search item; KraviaError (transient) when it has no readable Kravia id, or neither
    an accountingInvoiceId nor an invoice number: such a case could be any invoice."""
    raw_id = _first_ci(item, SEARCH_ID_KEYS)
    kravia_id = _int_id(raw_id)
    aid = _get_ci(item, "accountingInvoiceId")
    number = _get_ci(item, "invoiceNo")
    if kravia_id is None or (aid in {None, ""} and number in {None, ""}):
        raise KraviaError(
            Failure.TRANSIENT,
            f"Kravia's search answer has a case we cannot identify: {str(dict(item))[:200]}",
        )
    status = _get_ci(item, DETAILS_STATUS_KEY)
    updated = _get_ci(item, "lastUpdatedTime")
    return SearchItem(
        kravia_id=kravia_id,
        accounting_invoice_id=None if aid in {None, ""} else str(aid),
        invoice_number=None if number in {None, ""} else str(number),
        status=None if status is None else str(status),
        updated=None if updated is None else str(updated),
        remaining_capital=_decimal(_get_ci(item, DETAILS_REMAINING_CAPITAL_KEY)),
        outstanding=_decimal(_get_ci(item, DETAILS_OUTSTANDING_KEY)),
    )


def parse_search_items(body: object) -> list[SearchItem]:
    """Every item of one search answer (`search_updated_since` reads each page this way);
    ValueError or KraviaError (transient) when the answer or an item cannot be read."""
    return [_search_item(item) for item in _search_items(body)]


def parse_http_date(value: str | None) -> datetime | None:
    """An HTTP `Date` header as an aware UTC datetime, or None when missing or unreadable."""
    if not value:
        return None
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def parse_dotnet_time(text: str | None) -> datetime | None:
    """Kravia's `lastUpdatedTime` (a .NET timestamp, up to 7 digits of fraction) as an aware
    datetime: in the zone it names ("Z" or an offset such as "+01:00"), and where it names
    none (the guide's form), ASSUMED UTC. None when it cannot be read."""
    if not text:
        return None
    body = text.strip()
    zone = dotnet_time_zone(body)
    if zone is not None:
        body = body[: len(body) - len(zone)]
    head, _, fraction = body.partition(".")
    if fraction and not fraction.isdigit():
        return None
    try:
        moment = datetime.fromisoformat(head)
        offset = (
            UTC
            if zone in {None, "Z", "z"}
            else datetime.fromisoformat(f"2000-01-01T00:00{zone}").tzinfo
        )
    except ValueError:
        return None
    if moment.tzinfo is not None or offset is None:
        return None
    moment = moment.replace(tzinfo=offset, microsecond=int((fraction + "000000")[:6]))
    return moment.astimezone(UTC)


def dotnet_time_zone(text: str | None) -> str | None:
    """The zone a `lastUpdatedTime` text names: "Z", an offset such as "+01:00" (as written),
    or None when it names none (the guide's form, read as UTC)."""
    if not text:
        return None
    body = text.strip()
    if body.endswith(("Z", "z")):
        return body[-1]
    time_part = body.partition("T")[2]
    for sign in ("+", "-"):
        if sign in time_part:
            return sign + time_part.rpartition(sign)[2]
    return None


def field_of(item: Mapping[str, Any], name: str) -> Any:  # noqa: ANN401 - JSON value
    """A property of one of Kravia's answers by name, matched as the engine matches it
    (case-insensitively)."""
    return _get_ci(item, name)


# --- reading money back: pure parsers ---------------------------------------------------------


def _decimal(value: object) -> Decimal | None:
    """An exact amount from a JSON value; None when it is not one.

    A float means the answer was parsed lossily (use `loads_exact`): that is a bug, not data.
    """
    if isinstance(value, float):
        raise TypeError("amounts must be parsed exactly (json.loads(..., parse_float=Decimal))")
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, Decimal):
        return value if value.is_finite() else None
    if isinstance(value, str):
        try:
            parsed = Decimal(value.strip())
        except ArithmeticError:
            return None
        return parsed if parsed.is_finite() else None
    return None


def _date_of(value: object) -> date | None:
    """The calendar date of `2024-07-16` or `2024-07-16T00:00:00[...]`; None otherwise."""
    if not isinstance(value, str) or len(value) < 10 or value[10:11] not in {"", "T", " "}:
        return None
    try:
        return date.fromisoformat(value[:10])
    except ValueError:
        return None


def _int_id(value: object) -> int | None:
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return None


def _closed(status: str | None) -> bool | None:
    if status is None:
        return None
    lowered = status.lower()
    if lowered in CLOSED_STATUSES:
        return True
    return False if lowered in OPEN_STATUSES else None


def _recorded_payment(entry: object) -> RecordedPayment | None:
    """One entry of the details' payments; None when it cannot be read."""
    if not isinstance(entry, dict):
        return None
    raw_type = _get_ci(entry, PAYMENT_TYPE_KEY)
    kind = PaymentKind(PAYMENT_TYPES.get(str(raw_type).lower(), PaymentKind.UNKNOWN))
    amount = _decimal(_get_ci(entry, PAYMENT_AMOUNT_KEY))
    applied = _decimal(_get_ci(entry, PAYMENT_APPLIED_KEY))
    if amount is None:
        return None
    if kind is PaymentKind.CREDIT_NOTE:  # Kravia takes credit notes as negative amounts
        amount, applied = abs(amount), None if applied is None else abs(applied)
    elif amount < 0 or (applied is not None and applied < 0):
        return None  # a negative payment (a reversal?) is not something we can interpret
    raw_id = _get_ci(entry, PAYMENT_ID_KEY)
    return RecordedPayment(
        accounting_payment_id=None if raw_id is None or raw_id == "" else str(raw_id),
        amount=amount,
        paid_on=_date_of(_get_ci(entry, PAYMENT_DATE_KEY)),
        kind=kind,
        applied=applied,
    )


def read_amount(value: object) -> Decimal | None:
    """An amount as the engine reads it from Kravia's answers; None when it cannot be read."""
    return _decimal(value)


def recorded_payments(details: Mapping[str, Any]) -> list[RecordedPayment] | None:
    """The details' payments as the engine reads them (see `case_standing`)."""
    return _recorded_payments(_get_ci(details, DETAILS_PAYMENTS_KEY))


def _recorded_payments(value: object) -> list[RecordedPayment] | None:
    """The payments, or None when there is no list or any entry cannot be read: a partial
    list could hide the very payment someone is looking for."""
    if not isinstance(value, list):
        return None
    payments = [_recorded_payment(entry) for entry in value]
    return None if None in payments else [p for p in payments if p is not None]


def case_standing(details: Mapping[str, Any]) -> CaseStanding:
    """Where a case stands according to its details (`KraviaClient.details`). What the
    details do not say is None, never a guess."""
    raw_status = _get_ci(details, DETAILS_STATUS_KEY)
    status = None if raw_status is None else str(raw_status)
    return CaseStanding(
        status=status,
        remaining_capital=_decimal(_get_ci(details, DETAILS_REMAINING_CAPITAL_KEY)),
        outstanding=_decimal(_get_ci(details, DETAILS_OUTSTANDING_KEY)),
        closed=_closed(status),
        payments=_recorded_payments(_get_ci(details, DETAILS_PAYMENTS_KEY)),
    )


def payment_recorded(
    standing: CaseStanding, accounting_payment_id: str, *, kind: PaymentKind | None = None
) -> bool | None:
    """Whether Kravia lists our payment or credit note `accounting_payment_id` on the case.

    None when that cannot be told: the details list no payments, or an entry that could be
    ours carries no id (or, with `kind`, carries our id but no recognisable type). False only
    when every entry that could be ours is listed with another id. Give `kind` when payment
    and credit note ids may coincide in the source.
    """
    if standing.payments is None:
        return None
    could_be_ours = [
        p
        for p in standing.payments
        if p.kind is not PaymentKind.COLLECTED
        and (kind is None or p.kind in {kind, PaymentKind.UNKNOWN})
    ]
    same_id = [p for p in could_be_ours if p.accounting_payment_id == accounting_payment_id]
    if any(kind is None or p.kind is kind for p in same_id):
        return True
    if same_id or any(p.accounting_payment_id is None for p in could_be_ours):
        return None
    return False


def _settlement_line(item: object) -> MoneyLine:
    if not isinstance(item, dict):
        raise ValueError(f"unrecognised settlement line: {str(item)[:200]}")
    kravia_id = _int_id(_get_ci(item, "invoiceId"))
    amount = _decimal(_get_ci(item, "amount"))
    if kravia_id is None or amount is None or amount <= 0:
        raise ValueError(f"unrecognised settlement line: {str(item)[:200]}")
    return MoneyLine(kravia_id, amount)


def _settlement(item: object) -> Settlement:
    if not isinstance(item, dict):
        raise ValueError(f"unrecognised settlement: {str(item)[:200]}")
    settlement_id = _int_id(_get_ci(item, "id"))
    amount = _decimal(_get_ci(item, "amount"))
    lines = _get_ci(item, SETTLEMENT_LINES_KEY)
    if settlement_id is None or amount is None or not isinstance(lines, list):
        raise ValueError(f"unrecognised settlement: {str(item)[:200]}")
    booked = _get_ci(item, SETTLEMENT_BOOKED_KEY)
    return Settlement(
        id=settlement_id,
        settled_on=_date_of(_get_ci(item, SETTLEMENT_DATE_KEY)),
        amount=amount,
        lines=[_settlement_line(line) for line in lines],
        booked=booked if isinstance(booked, bool) else None,
    )


def parse_settlements(body: object) -> list[Settlement]:
    """Settlements from a `GET settlements` answer (parsed with `loads_exact`). ValueError
    when any of it cannot be read: a payout we cannot see must not pass unnoticed."""
    return [_settlement(item) for item in _listed(body, SETTLEMENT_ITEMS_KEYS, "settlements")]


def _first_ci(item: Mapping[str, Any], names: Sequence[str]) -> Any:  # noqa: ANN401 - JSON
    """The first of these properties the item has (case-insensitively), or None."""
    for name in names:
        value = _get_ci(item, name)
        if value is not None:
            return value
    return None


def has_invoice_document(details: Mapping[str, Any]) -> bool | None:
    """Whether the case has an invoice copy; None when the details do not say (no list of
    documents, or a document whose type cannot be read)."""
    documents = _get_ci(details, DETAILS_DOCUMENTS_KEY)
    if not isinstance(documents, list):
        return None
    types = [
        _first_ci(doc, DOCUMENT_TYPE_KEYS) if isinstance(doc, dict) else None for doc in documents
    ]
    if any(str(kind).lower() == DOCUMENT_TYPE_INVOICE.lower() for kind in types):
        return True
    return None if any(kind is None for kind in types) else False


def available_actions(details: Mapping[str, Any]) -> frozenset[str] | None:
    """The actions the case offers, lower-cased; None when the details do not say in a shape
    we know (see DETAILS_ACTIONS_KEY)."""
    actions = _get_ci(details, DETAILS_ACTIONS_KEY)
    if isinstance(actions, dict):
        if not all(isinstance(offered, bool) for offered in actions.values()):
            return None
        return frozenset(str(name).lower() for name, offered in actions.items() if offered)
    if not isinstance(actions, list):
        return None
    names: set[str] = set()
    for action in actions:
        name = _first_ci(action, ACTION_NAME_KEYS) if isinstance(action, dict) else action
        if not isinstance(name, str):
            return None  # an entry we cannot read could be Start
        names.add(name.lower())
    return frozenset(names)


def can_start(details: Mapping[str, Any]) -> bool | None:
    """Whether Start is still available; None when the details do not say."""
    actions = available_actions(details)
    if actions is None:
        return None
    if isinstance(_get_ci(details, DETAILS_ACTIONS_KEY), dict):
        listed = {str(name).lower() for name in _get_ci(details, DETAILS_ACTIONS_KEY)}
        if ACTION_START.lower() not in listed:
            return None  # an object of booleans that does not mention Start says nothing
    return ACTION_START.lower() in actions


def case_progress(details: Mapping[str, Any]) -> Details:
    """What a case's details tell of its copy and its start (each None when they do not)."""
    status = _get_ci(details, DETAILS_STATUS_KEY)
    started: bool | None = None
    if isinstance(status, str) and status.lower() in STARTED_STATUSES:
        started = True
    else:
        startable = can_start(details)
        if startable is not None:
            started = not startable
    return Details(documented=has_invoice_document(details), started=started)


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
