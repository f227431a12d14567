"""The daemon's HTTP side: `/healthz`, `/readyz` and `/metrics`, served by uvicorn on the
daemon's own event loop (so `/healthz` answering means the loop that runs passes is alive).
`HttpListener` is the listener itself, shared with the webhook receiver's own."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Awaitable, Callable, Generator
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from kravia_sync.service.metrics import CONTENT_TYPE

__all__ = ["HealthServer", "HttpListener", "Readiness"]

# What /readyz reports: ready or not, and the details shown in its JSON body.
Readiness = Callable[[], Awaitable[tuple[bool, dict[str, Any]]]]


class _Server(uvicorn.Server):
    """uvicorn without its signal handlers: the daemon owns SIGTERM, SIGINT and SIGHUP."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


class HttpListener:
    """Serves `app()` on `host:port` with uvicorn on the running event loop (port 0: a free
    port, see `port` once started)."""

    def __init__(self, *, host: str, port: int) -> None:
        self._host = host
        self._port = port
        self._server: _Server | None = None
        self._task: asyncio.Task[None] | None = None
        self.port = port

    def app(self) -> Starlette:
        raise NotImplementedError

    async def start(self) -> None:
        """Bind (an OSError says why it cannot) and serve in the background."""
        family = socket.AF_INET6 if ":" in self._host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self._host, self._port))
            sock.listen(64)
            sock.setblocking(False)  # noqa: FBT003 - the socket API's own flag
        except BaseException:
            sock.close()
            raise
        self.port = int(sock.getsockname()[1])
        config = uvicorn.Config(
            self.app(),
            log_level="warning",
            log_config=None,  # our structlog setup stays in charge
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=2,
        )
        server = _Server(config)
        self._server = server
        self._task = asyncio.create_task(self._serve(server, sock))
        while not server.started:
            if self._task.done():
                self._task.result()  # raises what stopped it
                raise OSError(f"the HTTP server on {self._host}:{self.port} did not start")
            await asyncio.sleep(0.01)

    @staticmethod
    async def _serve(server: _Server, sock: socket.socket) -> None:
        try:
            await server.serve(sockets=[sock])
        finally:
            sock.close()

    async def stop(self) -> None:
        if self._server is None or self._task is None:
            return
        self._server.should_exit = True
        try:
            await asyncio.wait_for(self._task, timeout=5)
        except TimeoutError:
            self._server.force_exit = True
            with contextlib.suppress(BaseException):
                await self._task
        self._server = None
        self._task = None


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
            return JSONResponse(details | {"ready": ready}, status_code=200 if ready else 503)

        async def metrics(_: Request) -> Response:
            return Response(self._metrics(), media_type=CONTENT_TYPE)

        return Starlette(
            routes=[
                Route("/healthz", healthz, methods=["GET"]),
                Route("/readyz", readyz, methods=["GET"]),
                Route("/metrics", metrics, methods=["GET"]),
            ]
        )
