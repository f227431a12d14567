"""An HTTP listener on the running event loop: uvicorn serving one app on a socket of ours.

The daemon's health and metrics (`health`), its webhook receiver (`webhook_server`) and the
bundled simulators (`kravia_sync.testing.running`, each on a loop of its own) all listen
through this one class, so what hardens one hardens them all.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Generator

import uvicorn
from starlette.applications import Starlette

__all__ = ["AppListener", "HttpListener"]


class _Server(uvicorn.Server):
    """uvicorn without its signal handlers: the daemon owns SIGTERM, SIGINT and SIGHUP."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


class HttpListener:
    """Serves `app()` on `host:port` with uvicorn on the running event loop (port 0: a free
    port, see `port` once started)."""

    def __init__(self, *, host: str, port: int, date_header: bool = True) -> None:
        """`date_header=False` leaves the Date header to the app (the Kravia simulator sets
        it from its own clock)."""
        self._host = host
        self._port = port
        self._date_header = date_header
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
            date_header=self._date_header,
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


class AppListener(HttpListener):
    """Serves a ready-made app."""

    def __init__(self, app: Starlette, *, host: str, port: int, date_header: bool = True) -> None:
        super().__init__(host=host, port=port, date_header=date_header)
        self._app = app

    def app(self) -> Starlette:
        return self._app
