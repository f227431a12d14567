"""HTTP for the REST connector: a rate limit, bounded retries, and errors without secrets.

Policy lives here, I/O in httpx. `Throttle` spaces the starts of requests `1/rate` apart and
caps how many are in flight; it is shared by everything one connector sends (the pages, the
customers and, later, the documents), from any thread. `Session` sends GET requests through
it: 429 waits for `Retry-After` (clamped; a missing, zero or nonsensical value counts as no
hint), 5xx and connection failures (refused, reset, dropped mid-answer, timed out) are
retried with exponential backoff and jitter, a bounded number of times. Reads are GET
requests, so repeating one is always safe. Credentials go only to the API's own origin.

An API that announces its budget in headers (Tripletex's `X-Rate-Limit-Remaining` and
`X-Rate-Limit-Reset`, the seconds left of the period) is obeyed before it refuses: when an
answer says nothing remains, no request starts until the period is over; a 429 without
`Retry-After` waits for that reset too (`RateLimitSettings.remaining_header`/`reset_header`).
"""

from __future__ import annotations

import contextlib
import email.utils
import json
import math
import random
import ssl
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Final, Literal, Self

import certifi
import httpx
from pydantic import BaseModel, ConfigDict, Field, model_validator

from connectors.rest._auth import Authenticator, TokenResponse
from kravia_sync import ConnectorError, get_logger

__all__ = [
    "BodyTooLargeError",
    "HttpError",
    "HttpSource",
    "RateLimitSettings",
    "RetrySettings",
    "Session",
    "Throttle",
    "same_origin",
]

log = get_logger(__name__)

RETRYABLE_STATUS: Final = frozenset({429, 500, 502, 503, 504})
MAX_BODY_BYTES: Final = 64 * 1024 * 1024
_HIDDEN: Final = "***"


class RateLimitSettings(BaseModel):
    """How hard the connector may use the API."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    requests_per_second: float | None = Field(default=None, gt=0)
    """Starts of requests at most this often (None: no limit)."""
    max_in_flight: int = Field(default=1, ge=1, le=64)
    """Requests at the same time (a page read is sequential; documents may overlap)."""
    remaining_header: str | None = None
    """A header with the requests left in the API's current period (`X-Rate-Limit-Remaining`):
    at 0 (or `reserve`), no request starts until the period ends (`reset_header`)."""
    reset_header: str | None = None
    """A header with the seconds left of the current period (`X-Rate-Limit-Reset`)."""
    reserve: int = Field(default=0, ge=0)
    """Requests of each period left unused (for other programs using the same budget)."""
    max_reset_seconds: float = Field(default=3600.0, gt=0)
    """A longer announced reset is clamped to this."""

    @model_validator(mode="after")
    def _headers_together(self) -> RateLimitSettings:
        if (self.remaining_header is None) != (self.reset_header is None):
            raise ValueError("give remaining_header and reset_header together, or neither")
        for name in (self.remaining_header, self.reset_header):
            if name is not None and (not name.strip() or any(c in name for c in " :\r\n")):
                raise ValueError(f"{name!r} is not an HTTP header name")
        return self


class RetrySettings(BaseModel):
    """Retries of transient failures (429, 5xx, connection errors) per request."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    attempts: int = Field(default=5, ge=1, le=20)
    """Tries per request, the first included."""
    backoff_seconds: float = Field(default=0.5, gt=0)
    """The first wait; doubled after each failure, with jitter."""
    max_backoff_seconds: float = Field(default=30.0, gt=0)
    max_retry_after_seconds: float = Field(default=120.0, gt=0)
    """A longer `Retry-After` is clamped to this."""


class HttpError(ConnectorError):
    """A request failed for good. `status` is the HTTP status (None: no answer at all)."""

    def __init__(self, message: str, status: int | None) -> None:
        super().__init__(message)
        self.status = status


class BodyTooLargeError(HttpError):
    """An answer bigger than the caller's limit: refused when its announced length or the bytes
    received pass `limit`, without reading the rest. Retrying does not make it smaller."""

    def __init__(self, message: str, status: int, *, limit: int, announced: int | None) -> None:
        super().__init__(message, status)
        self.limit = limit
        self.announced = announced  # the Content-Length, when the server gave one


def same_origin(url: httpx.URL, base: httpx.URL) -> bool:
    return (url.scheme, url.host, url.port) == (base.scheme, base.host, base.port)


class Throttle:
    """Starts requests at most `requests_per_second` apart, at most `max_in_flight` at once."""

    def __init__(
        self,
        settings: RateLimitSettings,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        rate = settings.requests_per_second
        self.settings = settings
        self.interval = 1.0 / rate if rate else 0.0
        self._slots = threading.BoundedSemaphore(settings.max_in_flight)
        self._lock = threading.Lock()
        self._next = 0.0
        self._clock = clock
        self._sleep = sleep

    @contextlib.contextmanager
    def budget_turn(self) -> Iterator[None]:
        """Wait out a hold-off (an exhausted budget, a 429) without taking a rate slot."""
        with self._lock:
            wait = self._next - self._clock()
        if wait > 0:
            self._sleep(wait)
        yield

    @contextlib.contextmanager
    def slot(self) -> Iterator[None]:
        """Hold a slot for one request: waits for a free slot, then for the request's turn."""
        with self._slots:
            with self._lock:
                now = self._clock()
                start = max(now, self._next)
                self._next = start + self.interval
            if start > now:
                self._sleep(start - now)
            yield

    def hold_off(self, seconds: float) -> None:
        """No request starts in the next `seconds` (after a 429)."""
        with self._lock:
            self._next = max(self._next, self._clock() + seconds)

    def observe(self, headers: Mapping[str, str]) -> float | None:
        """Read the budget an answer announces: when no request remains of the period, hold
        off until it resets. Returns the seconds to the reset, when announced."""
        s = self.settings
        if s.remaining_header is None or s.reset_header is None:
            return None
        reset = _seconds(headers.get(s.reset_header))
        if reset is not None:
            reset = min(reset, s.max_reset_seconds)
        remaining = _seconds(headers.get(s.remaining_header))
        if remaining is not None and remaining <= s.reserve and reset:
            self.hold_off(reset)
        return reset


class HttpSource:
    """Everything one connector's requests share: base URL, credentials, throttle, retries."""

    def __init__(
        self,
        *,
        base_url: str,
        authenticator: Authenticator,
        rate_limit: RateLimitSettings,
        retry: RetrySettings,
        timeout_seconds: float,
        headers: Mapping[str, str],
        secrets: Callable[[], list[str]],
        sleep: Callable[[float], None] = time.sleep,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = httpx.URL(base_url)
        self.authenticator = authenticator
        self.retry = retry
        self.timeout = httpx.Timeout(timeout_seconds)
        self.headers = dict(headers)
        self.throttle = Throttle(rate_limit, sleep=self._sleep)
        self.secrets = secrets
        self.sleep = sleep
        self.transport = transport  # None: the network (tests give an httpx.MockTransport)
        self._tls: ssl.SSLContext | None = None
        self.requests = 0  # every request sent, retries and token requests included
        self._count_lock = threading.Lock()

    @contextlib.contextmanager
    def session(self) -> Iterator[Session]:
        """An HTTP client for one read (or one document); closed on exit."""
        client = httpx.Client(
            base_url=self.base_url,
            timeout=self.timeout,
            headers={"User-Agent": "kravia-sync", **self.headers},
            follow_redirects=False,
            transport=self.transport,
            verify=self._tls_context(),
        )
        try:
            yield Session(self, client)
        finally:
            client.close()

    def _tls_context(self) -> ssl.SSLContext:
        """One TLS context for every session (building one costs ~30 ms: a document each)."""
        if self._tls is None:
            self._tls = ssl.create_default_context(cafile=certifi.where())
        return self._tls

    def _sleep(self, seconds: float) -> None:
        self.sleep(seconds)  # looked up on each call: tests replace `sleep`

    def redact(self, text: str) -> str:
        for secret in sorted(self.secrets(), key=len, reverse=True):
            if secret:
                text = text.replace(secret, _HIDDEN)
        return text

    def probe(self, url: str, what: str, params: Mapping[str, str] | None = None) -> list[str]:
        """`GET url` with the credentials (a source's `check`): no problem when it answers
        2xx, else what failed, redacted."""
        try:
            with self.session() as session:
                session.get(url, what=what, params=params)
        except ConnectorError as exc:  # HttpError, and a token endpoint that refused
            return [self.redact(str(exc))]
        return []

    def counted(self) -> None:
        with self._count_lock:
            self.requests += 1


class Session:
    """Sends GET requests of one read with the source's policy."""

    def __init__(self, source: HttpSource, client: httpx.Client) -> None:
        self.source = source
        self.client = client

    def __enter__(self) -> Self:  # pragma: no cover - HttpSource.session manages it
        return self

    def __exit__(self, *_: object) -> None:  # pragma: no cover
        self.client.close()

    def get(
        self,
        url: str,
        *,
        what: str,
        params: Mapping[str, str] | None = None,
        accept: str = "application/json",
        credentials: bool = True,
        max_bytes: int = MAX_BODY_BYTES,
    ) -> httpx.Response:
        """A 2xx answer to `GET url` (relative to the base URL, or absolute), its body read.

        Raises `HttpError` when the answer is an error that retrying does not fix, or when the
        attempts run out; its message names `what` and the URL, never a credential. A body
        bigger than `max_bytes` raises `BodyTooLargeError` after at most `max_bytes` plus one
        chunk were received.
        """
        source = self.source
        try:
            target = self.client.base_url.join(url) if "://" not in url else httpx.URL(url)
        except (httpx.InvalidURL, ValueError, TypeError):
            raise HttpError(source.redact(f"{what}: {url!r} is not a URL"), None) from None
        if credentials and not same_origin(target, source.base_url):
            raise HttpError(
                f"{what}: {_display(target)} is not on the API's host "
                f"{source.base_url.host}; credentials are only sent there",
                None,
            )
        refreshed = False
        attempt = 0
        while True:
            attempt += 1
            outcome = self._attempt(
                target, params, accept=accept, credentials=credentials, max_bytes=max_bytes
            )
            if isinstance(outcome, httpx.Response):
                return outcome
            failure, status, wait = outcome
            if status == 401 and credentials and not refreshed:
                refreshed = True
                if source.authenticator.refresh():
                    attempt -= 1
                    continue
            if status is not None and status not in RETRYABLE_STATUS:
                raise HttpError(source.redact(f"{what}: GET {_display(target)} {failure}"), status)
            if attempt >= source.retry.attempts:
                plural = "s" if attempt > 1 else ""
                message = f"{what}: GET {_display(target)} {failure} ({attempt} attempt{plural})"
                raise HttpError(source.redact(message), status)
            if wait is None:
                wait = _backoff(source.retry, attempt)
            log.warning(
                "retrying a request to the source",
                request=what,
                url=source.redact(_display(target)),
                failure=source.redact(failure),
                attempt=attempt,
                wait_seconds=round(wait, 3),
            )
            source.sleep(wait)

    def _attempt(
        self,
        target: httpx.URL,
        params: Mapping[str, str] | None,
        *,
        accept: str,
        credentials: bool,
        max_bytes: int,
    ) -> httpx.Response | tuple[str, int | None, float | None]:
        """One try: the 2xx response, or (what went wrong, the status, how long to wait)."""
        source = self.source
        headers = {"Accept": accept}
        if credentials:
            headers.update(source.authenticator.headers(self._token_request))
        try:
            with source.throttle.slot():
                source.counted()
                response = self._send(target, params, headers, max_bytes)
        except httpx.TransportError as exc:
            return _transport_failure(exc), None, None
        except (httpx.RequestError, httpx.InvalidURL) as exc:  # not transient: a bad answer
            message = f"GET {_display(target)} failed ({type(exc).__name__}: {exc})"
            raise HttpError(source.redact(message), None) from None
        status = response.status_code
        reset = source.throttle.observe(response.headers)
        if 200 <= status < 300:
            return response
        failure = f"answered {status} {response.reason_phrase}".rstrip() + _detail(response)
        wait = None
        if status in RETRYABLE_STATUS:
            wait = _retry_after(response, source.retry.max_retry_after_seconds)
            if status == 429 and wait is None and reset:
                wait = reset  # refused for the rest of the period: wait for its end
            if status == 429 and wait is not None:
                source.throttle.hold_off(wait)
        return failure, status, wait

    def get_json(
        self, url: str, *, what: str, params: Mapping[str, str] | None = None
    ) -> tuple[httpx.Response, object]:
        """`get`, and the body parsed as JSON (numbers with a fraction as `Decimal`)."""
        response = self.get(url, what=what, params=params)
        try:
            body = json.loads(response.content, parse_float=Decimal)
        except (ValueError, UnicodeError) as exc:
            raise HttpError(
                self.source.redact(
                    f"{what}: GET {_display(response.url)} answered {response.status_code} "
                    f"with a body that is not JSON ({exc})"
                ),
                response.status_code,
            ) from None
        return response, body

    def _send(
        self,
        target: httpx.URL,
        params: Mapping[str, str] | None,
        headers: Mapping[str, str],
        max_bytes: int,
    ) -> httpx.Response:
        if params:  # merged into the URL's own query (httpx's params= would replace it)
            target = target.copy_merge_params(dict(params))
        request = self.client.build_request("GET", target, headers=headers)
        response = self.client.send(request, stream=True)
        try:
            _refuse_announced_size(response, target, max_bytes, self.source.redact)
            chunks: list[bytes] = []
            size = 0
            for chunk in response.iter_bytes():
                size += len(chunk)
                if size > max_bytes:  # no announced length, or a wrong one: stop reading here
                    raise _too_large(response, target, max_bytes, None, self.source.redact)
                chunks.append(chunk)
        finally:
            response.close()
        response._content = b"".join(chunks)  # noqa: SLF001 - the body, read under a size cap
        return response

    def _token_request(
        self,
        url: str,
        form: Mapping[str, str],
        headers: Mapping[str, str],
        /,
        *,
        method: Literal["POST", "PUT"] = "POST",
    ) -> TokenResponse:
        """Send a token request: `form` as the body of a POST, or as the query of a PUT. Not
        throttled by the request rate (it may go to an identity provider), but an announced
        budget of the API is obeyed."""
        source = self.source
        attempt = 0
        while True:
            attempt += 1
            try:
                source.counted()
                with source.throttle.budget_turn():
                    response = self._send_token_request(url, form, headers, method)
            except httpx.TransportError as exc:
                if attempt >= source.retry.attempts:
                    failure = _transport_failure(exc)
                    message = f"the token endpoint {_plain(url)}: {failure}"
                    raise HttpError(source.redact(message), None) from None
                source.sleep(_backoff(source.retry, attempt))
                continue
            reset = source.throttle.observe(response.headers)
            if response.status_code in RETRYABLE_STATUS and attempt < source.retry.attempts:
                wait = _retry_after(response, source.retry.max_retry_after_seconds)
                if wait is None and response.status_code == 429 and reset:
                    wait = reset
                source.sleep(wait if wait is not None else _backoff(source.retry, attempt))
                continue
            try:
                body: object = json.loads(response.content, parse_float=Decimal)
            except (ValueError, UnicodeError):
                body = None
            return response.status_code, body

    def _send_token_request(
        self, url: str, form: Mapping[str, str], headers: Mapping[str, str], method: str
    ) -> httpx.Response:
        merged = {**headers, "Accept": "application/json"}
        if method == "PUT":
            return self.client.put(url, params=dict(form), headers=merged)
        return self.client.post(url, data=dict(form), headers=merged)


def _plain(url: str) -> str:
    """A token endpoint's URL for messages: without its query (it may hold credentials)."""
    return url.split("?", 1)[0]


def _seconds(raw: str | None) -> float | None:
    """A header's non-negative number (`12`, `0.5`), or None when absent or not a number."""
    if raw is None:
        return None
    try:
        value = float(raw.strip())
    except ValueError:
        return None
    if not math.isfinite(value) or value < 0:
        return None
    return value


def _refuse_announced_size(
    response: httpx.Response, target: httpx.URL, limit: int, redact: Callable[[str], str]
) -> None:
    """Refuse an answer whose `Content-Length` is over `limit` before reading any of it."""
    announced = response.headers.get("content-length", "").strip()
    if announced.isdigit() and int(announced) > limit:
        raise _too_large(response, target, limit, int(announced), redact)


def _too_large(
    response: httpx.Response,
    target: httpx.URL,
    limit: int,
    announced: int | None,
    redact: Callable[[str], str],
) -> BodyTooLargeError:
    size = f" ({announced} bytes announced)" if announced is not None else ""
    message = f"GET {_display(target)}: the answer is larger than {_size(limit)}{size}"
    return BodyTooLargeError(
        redact(message), response.status_code, limit=limit, announced=announced
    )


def _size(limit: int) -> str:
    mib, rest = divmod(limit, 1024 * 1024)
    return f"{mib} MiB" if mib and not rest else f"{limit} bytes"


def _display(url: httpx.URL) -> str:
    """The URL for messages: no user info (none is ever configured, but never show one)."""
    return str(url.copy_with(username=None, password=None))


def _detail(response: httpx.Response) -> str:
    text = " ".join(response.content[:300].decode("utf-8", "replace").split())
    return f": {text}" if text else ""


def _transport_failure(exc: httpx.TransportError) -> str:
    if isinstance(exc, httpx.TimeoutException):
        return f"timed out ({type(exc).__name__})"
    if isinstance(exc, httpx.RemoteProtocolError):
        return f"the connection was dropped before a full answer ({exc})"
    if isinstance(exc, httpx.ConnectError):
        return f"cannot connect ({exc})"
    return f"failed ({type(exc).__name__}: {exc})"


def _backoff(retry: RetrySettings, attempt: int) -> float:
    base = min(retry.max_backoff_seconds, retry.backoff_seconds * float(2 ** (attempt - 1)))
    return base * random.uniform(0.5, 1.0)


def _retry_after(response: httpx.Response, cap: float) -> float | None:
    """`Retry-After` in seconds, clamped to `cap`; None when absent, zero or nonsensical."""
    raw = response.headers.get("retry-after")
    if raw is None:
        return None
    text = raw.strip()
    seconds: float | None = None
    if text.isdigit():
        seconds = float(text)
    else:
        try:
            moment = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError):
            return None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        seconds = (moment - datetime.now(UTC)).total_seconds()
    if seconds <= 0:
        return None
    return float(min(seconds, cap))
