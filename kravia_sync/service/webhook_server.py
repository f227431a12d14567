"""The daemon's receiver of Kravia's webhooks: `POST /kravia/webhook` on a listener of its own
(`[webhook] host`, `port`), apart from /healthz, /readyz and /metrics, which stay local.

A request is read up to `webhook.max_body_bytes` (413 beyond), parsed (400 when it is not a
webhook), its signature checked against the candidate recipes (a mismatch is counted and
logged; with `webhook.require_signature` it is refused with 401). A webhook naming one of our
cases queues a read of that case's details (at most once while it waits; a full queue drops
it); one naming any other claimId is ignored. Every accepted webhook gets the same 202,
whatever became of it, so the answer tells nothing about which ids are ours. The reads are
paid from a token bucket (`refreshes_per_second`, `refresh_burst`) by one worker, so a flood
costs at most that budget. The passes and their status pull-back run as they would without it.
The decisions are in `kravia_sync.kravia.webhook`; this module only does the I/O.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from kravia_sync.kravia.webhook import (
    LogThrottle,
    MalformedWebhookError,
    Outcome,
    PendingRefreshes,
    SignatureCheck,
    TokenBucket,
    check_signature,
    parse_webhook,
)
from kravia_sync.logging import get_logger, redact
from kravia_sync.service.listener import HttpListener
from kravia_sync.service.metrics import Metrics
from kravia_sync.settings import Settings

__all__ = ["WEBHOOK_ROUTE", "WebhookServer"]

log = get_logger("kravia_sync.kravia.webhook")

WEBHOOK_ROUTE = "/kravia/webhook"
# A flood repeats the same complaint: at most one log line per kind this often.
LOG_EVERY_SECONDS = 10.0

# Whether a Kravia invoice id is one of our cases.
IsOurs = Callable[[int], Awaitable[bool]]
# Read one case's details and store its status and capital: "changed", "unchanged" or
# "skipped" (the daemon does not hold the writer lease); raises when the read fails.
Refresh = Callable[[int], Awaitable[str]]


class WebhookServer(HttpListener):
    """The listener and the worker that reads the cases webhooks name."""

    def __init__(
        self,
        *,
        settings: Callable[[], Settings],
        metrics: Metrics,
        is_ours: IsOurs,
        refresh: Refresh,
    ) -> None:
        current = settings().webhook
        super().__init__(host=current.host, port=current.port)
        self._settings = settings
        self._metrics = metrics
        self._is_ours = is_ours
        self._refresh = refresh
        self._pending = PendingRefreshes(current.queue_size)
        self._bucket = TokenBucket(
            rate=current.refreshes_per_second, burst=current.refresh_burst, now=time.monotonic()
        )
        self._wake = asyncio.Event()
        self._worker: asyncio.Task[None] | None = None
        self._throttles: dict[str, LogThrottle] = {}
        self._recipe_seen: str | None = None
        for outcome in Outcome:
            metrics.webhooks.labels(outcome.value)
        for check in SignatureCheck:
            metrics.webhook_signatures.labels(check.value)
        for result in ("changed", "unchanged", "failed", "skipped"):
            metrics.webhook_refreshes.labels(result)

    def app(self) -> Starlette:
        return Starlette(routes=[Route(WEBHOOK_ROUTE, self._receive, methods=["POST"])])

    async def start(self) -> None:
        await super().start()
        self._worker = asyncio.create_task(self._work())

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)
            self._worker = None
        await super().stop()

    # --- one request --------------------------------------------------------------------------
    async def _receive(self, request: Request) -> Response:
        settings = self._settings()
        hook = settings.webhook
        body = await _read_limited(request, hook.max_body_bytes)
        if body is None:
            return self._answer(Outcome.OVERSIZED, 413, "the body is too large")
        try:
            event = parse_webhook(body)
        except MalformedWebhookError as exc:
            self._note("malformed webhook", request, reason=str(exc))
            return self._answer(Outcome.MALFORMED, 400, "not a Kravia webhook")
        secret = settings.kravia_webhook_secret
        check, recipe = check_signature(
            event, None if secret is None else secret.get_secret_value()
        )
        self._metrics.webhook_signatures.labels(check.value).inc()
        if check in {SignatureCheck.MISMATCH, SignatureCheck.MISSING}:
            self._note(
                "webhook signature does not match",
                request,
                result=check.value,
                claim_id=event.claim_id,
                refused=hook.require_signature,
            )
            if hook.require_signature:
                return self._answer(Outcome.REFUSED, 401, "the signature does not match")
        elif recipe is not None and recipe != self._recipe_seen:
            self._recipe_seen = recipe
            log.info("webhook signature recognised", recipe=recipe)
        if not await self._is_ours(event.claim_id):
            return self._answer(Outcome.UNKNOWN_CLAIM, 202, "accepted")
        outcome = self._pending.offer(event.claim_id)
        self._metrics.webhook_pending.set(len(self._pending))
        if outcome is Outcome.QUEUED:
            self._wake.set()
        elif outcome is Outcome.DROPPED:
            self._note("webhook dropped: the refresh queue is full", request)
        return self._answer(outcome, 202, "accepted")

    def _answer(self, outcome: Outcome, status: int, message: str) -> Response:
        self._metrics.webhooks.labels(outcome.value).inc()
        return JSONResponse({"status": message}, status_code=status)

    def _note(self, event: str, request: Request, **fields: object) -> None:
        """A warning line, at most one per kind every LOG_EVERY_SECONDS under a flood."""
        throttle = self._throttles.setdefault(event, LogThrottle(LOG_EVERY_SECONDS))
        suppressed = throttle.allow(time.monotonic())
        if suppressed is not None:
            client = request.client.host if request.client is not None else None
            log.warning(event, remote=client, not_logged_since_last=suppressed, **fields)

    # --- the reads ----------------------------------------------------------------------------
    async def _work(self) -> None:
        """Read the waiting cases one at a time, each paid with a token."""
        while True:
            await self._wake.wait()
            delay = self._bucket.wait_seconds(time.monotonic())
            if delay > 0:
                await asyncio.sleep(delay)
                continue
            claim_id = self._pending.pop()
            self._metrics.webhook_pending.set(len(self._pending))
            if claim_id is None:
                self._wake.clear()
                continue
            self._bucket.take(time.monotonic())
            try:
                result = await self._refresh(claim_id)
            except Exception as exc:
                self._metrics.webhook_refreshes.labels("failed").inc()
                log.warning(
                    "webhook refresh failed: the status pull-back reads the case later",
                    kravia_id=claim_id,
                    error=redact(f"{type(exc).__name__}: {exc}"),
                )
                continue
            self._metrics.webhook_refreshes.labels(result).inc()
            log.info("case refreshed after a webhook", kravia_id=claim_id, result=result)


async def _read_limited(request: Request, limit: int) -> bytes | None:
    """The body, or None when it is longer than `limit` (read no further than that)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        return None
    body = bytearray()
    try:
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                return None
    except ClientDisconnect:
        return b""
    return bytes(body)
