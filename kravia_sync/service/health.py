"""The daemon's HTTP side: `/healthz`, `/readyz` and `/metrics`, served on the daemon's own event
loop (so `/healthz` answering means the loop that runs passes is alive) by the listener in
`kravia_sync.service.listener`."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from kravia_sync.logging import redact_structure
from kravia_sync.service.listener import HttpListener
from kravia_sync.service.metrics import CONTENT_TYPE

__all__ = ["HealthServer", "Readiness"]

# What /readyz reports: ready or not, and the details shown in its JSON body.
Readiness = Callable[[], Awaitable[tuple[bool, dict[str, Any]]]]


class HealthServer(HttpListener):
    """Serves `/healthz`, `/readyz` and `/metrics`."""

    def __init__(
        self, *, host: str, port: int, readiness: Readiness, metrics: Callable[[], bytes]
    ) -> None:
        super().__init__(host=host, port=port)
        self._readiness = readiness
        self._metrics = metrics

    def app(self) -> Starlette:
        async def healthz(_: Request) -> Response:
            return JSONResponse({"status": "alive"})

        async def readyz(_: Request) -> Response:
            ready, details = await self._readiness()
            body = redact_structure(details | {"ready": ready})  # each error is redacted already
            return JSONResponse(body, status_code=200 if ready else 503)

        async def metrics(_: Request) -> Response:
            return Response(self._metrics(), media_type=CONTENT_TYPE)

        return Starlette(
            routes=[
                Route("/healthz", healthz, methods=["GET"]),
                Route("/readyz", readyz, methods=["GET"]),
                Route("/metrics", metrics, methods=["GET"]),
            ]
        )
