"""How a call to Kravia is made: a place in flight and a turn at the pace, one request over
kravia-sync's own connections, its answer read as a success or an error, the pace told what the
answer says of Kravia's load, and Kravia's clock read from the answer's Date header.

`KraviaClient` (`kravia_sync.kravia.client`) adds Kravia's endpoints on top of this."""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal, Self

import httpx

from kravia_sync.kravia.answers import (
    RawAnswer,
    parse_http_date,
)
from kravia_sync.kravia.assumptions import (
    AUTH_HEADER,
    DATE_RESOLUTION,
    DETAILS_PATH,
    SEARCH_ORDER_BY_LAST_UPDATED,
    SEARCH_PATH,
    SETTLEMENTS_PATH,
)
from kravia_sync.kravia.bodies import (
    format_dotnet_time,
)
from kravia_sync.kravia.errors import (
    KraviaError,
    classify_exception,
    classify_response,
    load_signal,
)
from kravia_sync.kravia.pacing import Pacing, PacingSnapshot
from kravia_sync.kravia.transport import SlotTransport
from kravia_sync.logging import get_logger

log = get_logger(__name__)

__all__ = ["CallGate", "CallStats", "KraviaCalls", "Reservation"]


@dataclass(slots=True)
class CallStats:
    """Counts of calls by operation and outcome, for run summaries and benchmarks."""

    counts: dict[str, int] = field(default_factory=dict)

    def add(self, operation: str, outcome: str) -> None:
        key = f"{operation}:{outcome}"
        self.counts[key] = self.counts.get(key, 0) + 1

    def total(self) -> int:
        return sum(self.counts.values())


class CallGate:
    """Lets calls leave as `Pacing` allows: no more in flight than its limit, no sooner than its
    rate and any Retry-After pause. Waiting calls leave in the order they came."""

    def __init__(self, pacing: Pacing, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.pacing = pacing
        self.in_flight = 0
        self._clock = clock
        self._turn = asyncio.Lock()  # first come, first to leave
        self._boarding = asyncio.Lock()  # calls whose turn is taken board in order too
        self._boarded_at = -math.inf  # when the last booked call boarded (monotonic)
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

    async def pace(self) -> None:
        """The first half of `enter`, for a call whose intent is journaled in between: wait
        for this call's turn at the pace (the rate, any Retry-After pause) and book its
        departure; its place in flight is taken later (`board`)."""
        async with self._turn:
            while True:
                delay = self.pacing.delay(self._clock())
                if delay <= 0:
                    break
                await asyncio.sleep(delay)  # then look again: the pace may have changed
            self.pacing.booked(self._clock())

    async def board(self, within: float) -> float | None:
        """The second half: a place in flight, taken within `within` seconds, outside any
        Retry-After pause and, where a rate applies, one rate interval after the call that
        boarded last (calls whose turns were booked while every place was taken must not
        leave all at once); the monotonic time it leaves, or None when none came in time
        (nothing is taken then)."""
        deadline = self._clock() + within
        async with self._boarding:
            while True:
                now = self._clock()
                if now >= deadline:
                    return None
                rate = self.pacing.rate
                spaced = -math.inf if rate is None else self._boarded_at + 1.0 / rate
                hold_back = max(self.pacing.paused_for(now), spaced - now)
                if self.in_flight < self.pacing.limit and hold_back <= 0:
                    break
                if hold_back > 0:
                    await asyncio.sleep(min(hold_back, deadline - now))
                    continue
                self._freed.clear()
                # asyncio.timeout, not wait_for: no task of its own, so a freed place is
                # taken a loop turn sooner
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(deadline - now):
                        await self._freed.wait()
            self.in_flight += 1
            self._boarded_at = now
            self.pacing.boarded(self.in_flight)
            return now

    def leave(self) -> None:
        self.in_flight -= 1
        self._freed.set()

    def snapshot(self) -> PacingSnapshot:
        return self.pacing.snapshot(self._clock())


class Reservation:
    """A place in flight for one call: taken with its turn at the pace (`KraviaClient.reserve`:
    payments and reads journal their intent inside it, so it means "leaving now"), or after
    the case's intent was journaled (`KraviaClient.board`: the intent allowed for the wait).
    Good for one call."""

    __slots__ = ("sent_at", "used")

    def __init__(self, sent_at: float) -> None:
        self.sent_at = sent_at
        self.used = False


class KraviaCalls:
    """One attempt per call: the retry policy lives with the engine, which journals every
    attempt. Kravia's endpoints are in the subclass, `KraviaClient`."""

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
        self._date_header: tuple[str | None, datetime | None] = (None, None)

    @contextlib.asynccontextmanager
    async def reserve(self) -> AsyncIterator[Reservation]:
        """Wait for the gate and hold a place in flight for one call: the engine journals the
        call's intent inside this, then sends with the reservation."""
        sent_at = await self._gate.enter()
        try:
            yield Reservation(sent_at)
        finally:
            self._gate.leave()

    async def pace(self) -> None:
        """Wait for a call's turn at the pace and book it (see `CallGate.pace`); then journal
        its intent, then `board`."""
        await self._gate.pace()

    @contextlib.asynccontextmanager
    async def board(self, *, within: float) -> AsyncIterator[Reservation | None]:
        """A place in flight for a call whose turn `pace` booked, held for the call: None
        when none came within `within` seconds (the call must not be sent then)."""
        sent_at = await self._gate.board(within)
        if sent_at is None:
            yield None
            return
        try:
            yield Reservation(sent_at)
        finally:
            self._gate.leave()

    def refusing_for(self) -> float:
        """Seconds for which Kravia has refused every call (see `Pacing.refusing_for`)."""
        return self._gate.pacing.refusing_for()

    def pacing(self) -> PacingSnapshot:
        """The pace now: the limit in flight, the rate, what got through lately."""
        return self._gate.snapshot()

    def calls_in_flight(self) -> int:
        """How many calls are out at Kravia now (each holding a place in flight)."""
        return self._gate.in_flight

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
        text = response.headers.get("Date")
        if text != self._date_header[0]:  # a Date names a second: most answers repeat the last
            self._date_header = (text, parse_http_date(text))
        moment = self._date_header[1]
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
