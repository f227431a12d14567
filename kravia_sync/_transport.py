"""An httpx transport with a fixed set of kept-alive HTTP/1.1 connections.

httpx's default pool (httpcore's) re-examines every pooled connection, with two system calls
each, whenever a request starts or ends; with 16 connections that costs more CPU than the rest
of a request. We never have more requests in flight than connections (the client bounds them),
so a request can simply take an idle connection from a queue and give it back when its response
is closed. Only that one connection is checked for expiry.

A request leaves in one send: httpcore writes its head, its body and the body's end separately
(three system calls, each waking the server), so the connection holds what is written until it
is about to read the answer (or holds 64 KB), then sends it all at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from typing import Any

import httpcore
import httpx

__all__ = ["SlotTransport"]

# httpcore's exceptions and the httpx ones callers catch (the same pairs httpx maps).
_EXCEPTIONS: tuple[tuple[type[Exception], type[httpx.TransportError]], ...] = (
    (httpcore.ConnectTimeout, httpx.ConnectTimeout),
    (httpcore.ReadTimeout, httpx.ReadTimeout),
    (httpcore.WriteTimeout, httpx.WriteTimeout),
    (httpcore.PoolTimeout, httpx.PoolTimeout),
    (httpcore.ConnectError, httpx.ConnectError),
    (httpcore.ReadError, httpx.ReadError),
    (httpcore.WriteError, httpx.WriteError),
    (httpcore.RemoteProtocolError, httpx.RemoteProtocolError),
    (httpcore.LocalProtocolError, httpx.LocalProtocolError),
    (httpcore.UnsupportedProtocol, httpx.UnsupportedProtocol),
    (httpcore.ProxyError, httpx.ProxyError),
    (httpcore.NetworkError, httpx.NetworkError),
    (httpcore.TimeoutException, httpx.TimeoutException),
)


def _as_httpx_error(exc: Exception, request: httpx.Request) -> Exception:
    for source, target in _EXCEPTIONS:
        if isinstance(exc, source):
            return target(str(exc), request=request)
    return exc


class _ResponseStream(httpx.AsyncByteStream):
    def __init__(
        self,
        stream: AsyncIterator[bytes],
        request: httpx.Request,
        release: asyncio.Queue[httpcore.AsyncHTTPConnection | None],
        connection: httpcore.AsyncHTTPConnection,
    ) -> None:
        self._stream = stream
        self._request = request
        self._release = release
        self._connection: httpcore.AsyncHTTPConnection | None = connection

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for part in self._stream:
                yield part
        except Exception as exc:
            raise _as_httpx_error(exc, self._request) from exc

    async def aclose(self) -> None:
        closer = getattr(self._stream, "aclose", None)
        try:
            if closer is not None:
                await closer()
        finally:
            if self._connection is not None:
                self._release.put_nowait(self._connection)
                self._connection = None


class _OneSendStream(httpcore.AsyncNetworkStream):
    """A connection whose writes wait for its next read (or for HOLD bytes)."""

    HOLD = 64 * 1024

    def __init__(self, stream: httpcore.AsyncNetworkStream) -> None:
        self._stream = stream
        self._held: list[bytes] = []
        self._size = 0
        self._timeout: float | None = None

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:  # noqa: ASYNC109
        self._held.append(buffer)
        self._size += len(buffer)
        self._timeout = timeout
        if self._size >= self.HOLD:
            await self._send()

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:  # noqa: ASYNC109
        await self._send()
        return await self._stream.read(max_bytes, timeout)

    async def _send(self) -> None:
        if self._held:
            data = b"".join(self._held)
            self._held.clear()
            self._size = 0
            await self._stream.write(data, self._timeout)

    async def aclose(self) -> None:
        self._held.clear()
        await self._stream.aclose()

    async def start_tls(
        self,
        ssl_context: Any,  # noqa: ANN401 - httpcore's signature
        server_hostname: str | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's signature
    ) -> httpcore.AsyncNetworkStream:
        await self._send()
        return _OneSendStream(await self._stream.start_tls(ssl_context, server_hostname, timeout))

    def get_extra_info(self, info: str) -> Any:  # noqa: ANN401 - httpcore's signature
        return self._stream.get_extra_info(info)


class _OneSendBackend(httpcore.AsyncNetworkBackend):
    """httpcore's own backend, its connections sending each request at once."""

    def __init__(self) -> None:
        self._backend = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's signature
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        stream = await self._backend.connect_tcp(
            host, port, timeout=timeout, local_address=local_address, socket_options=socket_options
        )
        return _OneSendStream(stream)

    async def sleep(self, seconds: float) -> None:
        await self._backend.sleep(seconds)


class SlotTransport(httpx.AsyncBaseTransport):
    """At most `slots` connections; a request waits for an idle one."""

    def __init__(self, *, slots: int, keepalive_expiry: float = 5.0) -> None:
        self._keepalive_expiry = keepalive_expiry
        self._idle: asyncio.Queue[httpcore.AsyncHTTPConnection | None] = asyncio.Queue()
        for _ in range(slots):
            self._idle.put_nowait(None)
        self._all: set[httpcore.AsyncHTTPConnection] = set()
        self._backend = _OneSendBackend()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        origin = httpcore.Origin(url.raw_scheme, url.raw_host, url.port or _default_port(url))
        connection = await self._idle.get()
        try:
            if connection is not None and (
                connection.is_closed()
                or connection.has_expired()
                or not connection.can_handle_request(origin)
            ):
                await connection.aclose()
                self._all.discard(connection)
                connection = None
            if connection is None:
                connection = httpcore.AsyncHTTPConnection(
                    origin=origin,
                    keepalive_expiry=self._keepalive_expiry,
                    network_backend=self._backend,
                )
                self._all.add(connection)
            core_request = httpcore.Request(
                method=request.method,
                url=httpcore.URL(
                    scheme=url.raw_scheme,
                    host=url.raw_host,
                    port=url.port,
                    target=url.raw_path,
                ),
                headers=request.headers.raw,
                content=request.stream,
                extensions=request.extensions,
            )
            core_response = await connection.handle_async_request(core_request)
        except BaseException as exc:
            try:
                if connection is not None:
                    self._all.discard(connection)
                    await connection.aclose()
            finally:
                self._idle.put_nowait(None)  # the slot is returned whatever happens
            if isinstance(exc, Exception):
                raise _as_httpx_error(exc, request) from exc
            raise
        stream = core_response.stream
        return httpx.Response(
            status_code=core_response.status,
            headers=core_response.headers,
            stream=_ResponseStream(stream, request, self._idle, connection),  # type: ignore[arg-type]
            extensions=core_response.extensions,
        )

    async def aclose(self) -> None:
        for connection in list(self._all):
            await connection.aclose()
        self._all.clear()


def _default_port(url: httpx.URL) -> int:
    return 443 if url.scheme == "https" else 80
