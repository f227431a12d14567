"""An httpx transport with a fixed set of kept-alive HTTP/1.1 connections on asyncio streams.

httpx's own transport (httpcore's pool, on anyio) spends more CPU on a request than the rest of
the engine does: cancel scopes, locks and back-end look-ups around every read and write, and a
pool that re-examines every connection whenever a request starts or ends. We need none of it:
the client never has more requests in flight than connections, every answer is read whole, and
HTTP/2, proxies and streaming are not used. So a request takes an idle connection from a queue
(or a free slot, and connects), leaves in one write, its answer is read whole (h11 parses it,
as it does inside httpcore), and the connection goes back to the queue.

The errors are httpx's, and which one says how far the request got, because the engine decides
from them whether a call may have reached Kravia: nothing was sent (`ConnectError`,
`ConnectTimeout`), or it was sent in whole or in part (`WriteError`, `WriteTimeout`,
`ReadError`, `ReadTimeout`, `RemoteProtocolError`).
"""

from __future__ import annotations

import asyncio
import ssl
import time
from typing import TYPE_CHECKING

import httpx

if TYPE_CHECKING:
    from kravia_sync.kravia.connection import Connection

__all__ = ["SlotTransport"]


class SlotTransport(httpx.AsyncBaseTransport):
    """At most `slots` connections; a request waits for an idle one."""

    def __init__(self, *, slots: int, keepalive_expiry: float = 5.0) -> None:
        self._keepalive_expiry = keepalive_expiry
        self._idle: asyncio.Queue[Connection | None] = asyncio.Queue()
        for _ in range(slots):
            self._idle.put_nowait(None)
        self._all: set[Connection] = set()
        self._ssl: ssl.SSLContext | None = None

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        origin = (url.scheme, url.host, url.port or _default_port(url))
        timeouts: dict[str, float | None] = request.extensions.get("timeout", {})
        body = await request.aread()
        connection = await self._idle.get()
        try:
            if connection is not None and not connection.reusable(
                origin, now=time.monotonic(), expiry=self._keepalive_expiry
            ):
                self._drop(connection)
                connection = None
            if connection is None:
                connection = await self._connect(request, origin, timeouts.get("connect"))
                self._all.add(connection)
            response = await connection.exchange(request, body, timeouts)
        except BaseException:
            if connection is not None:
                self._drop(connection)
            self._idle.put_nowait(None)  # the slot is returned whatever happens
            raise
        if connection.reusable(origin, now=time.monotonic(), expiry=self._keepalive_expiry):
            self._idle.put_nowait(connection)
        else:
            self._drop(connection)
            self._idle.put_nowait(None)
        return response

    async def _connect(
        self,
        request: httpx.Request,
        origin: tuple[str, str, int],
        timeout: float | None,  # noqa: ASYNC109
    ) -> Connection:
        scheme, host, port = origin
        if scheme not in {"http", "https"}:
            raise httpx.UnsupportedProtocol(f"unsupported URL scheme {scheme!r}", request=request)
        from kravia_sync.kravia.connection import READ_SIZE, Connection  # noqa: PLC0415 - h11: see there

        tls = self._tls() if scheme == "https" else None
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_connection(
                    host, port, ssl=tls, server_hostname=host if tls else None, limit=READ_SIZE
                )
        except TimeoutError:
            raise httpx.ConnectTimeout(
                f"no connection to {host}:{port} in time", request=request
            ) from None
        except (OSError, ssl.SSLError) as exc:
            raise httpx.ConnectError(str(exc) or type(exc).__name__, request=request) from exc
        return Connection(origin, reader, writer)

    def _tls(self) -> ssl.SSLContext:
        if self._ssl is None:
            import certifi  # noqa: PLC0415 - only for https, and httpx's own CA bundle

            self._ssl = ssl.create_default_context(cafile=certifi.where())
        return self._ssl

    def _drop(self, connection: Connection) -> None:
        self._all.discard(connection)
        connection.close()

    async def aclose(self) -> None:
        for connection in list(self._all):
            connection.close()
        self._all.clear()


def _default_port(url: httpx.URL) -> int:
    return 443 if url.scheme == "https" else 80
