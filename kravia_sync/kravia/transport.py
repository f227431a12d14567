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

import h11
import httpx

__all__ = ["SlotTransport"]

READ_SIZE = 64 * 1024


class _Connection:
    """One kept-alive HTTP/1.1 connection to one origin."""

    def __init__(
        self,
        origin: tuple[str, str, int],
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        self.origin = origin
        self._reader = reader
        self._writer = writer
        self._h11 = h11.Connection(h11.CLIENT)
        self.idle_since = time.monotonic()

    def reusable(self, origin: tuple[str, str, int], *, now: float, expiry: float) -> bool:
        """Whether a new request may go out on this connection: same origin, the last
        exchange finished cleanly, not idle too long, and the server has neither closed it
        nor sent anything since its last answer (whatever it sent, a late answer or a
        `408` before closing, would be read as the next request's answer)."""
        return (
            origin == self.origin
            and self._h11.our_state is h11.IDLE
            and self._h11.trailing_data == (b"", False)
            and not self._unread()
            and not self._reader.at_eof()
            and not self._writer.is_closing()
            and now - self.idle_since < expiry
        )

    def _unread(self) -> bool:
        """Whether the stream holds bytes no answer has read. StreamReader keeps them in
        `_buffer` and offers no public way to ask."""
        return bool(getattr(self._reader, "_buffer", b""))

    async def exchange(
        self, request: httpx.Request, body: bytes, timeouts: dict[str, float | None]
    ) -> httpx.Response:
        """Send `request` in one write and read its answer whole."""
        try:
            data = (
                self._h11.send(
                    h11.Request(
                        method=request.method,
                        target=request.url.raw_path,
                        headers=request.headers.raw,
                    )
                )
                or b""
            )
            if body:
                data += self._h11.send(h11.Data(data=body)) or b""
            data += self._h11.send(h11.EndOfMessage()) or b""
        except h11.LocalProtocolError as exc:
            raise httpx.LocalProtocolError(str(exc), request=request) from exc
        try:
            self._writer.write(data)
            async with asyncio.timeout(timeouts.get("write")):
                await self._writer.drain()
        except TimeoutError:
            raise httpx.WriteTimeout(
                "the request could not be written in time", request=request
            ) from None
        except OSError as exc:
            raise httpx.WriteError(str(exc) or type(exc).__name__, request=request) from exc
        response = await self._read_response(request, timeouts.get("read"))
        if self._h11.our_state is h11.DONE and self._h11.their_state is h11.DONE:
            self._h11.start_next_cycle()  # anything sent after the answer: see `reusable`
            self.idle_since = time.monotonic()
        return response

    async def _read_response(self, request: httpx.Request, timeout: float | None) -> httpx.Response:  # noqa: ASYNC109
        head: h11.Response | None = None
        parts: list[bytes] = []
        while True:
            try:
                event = self._h11.next_event()
            except h11.RemoteProtocolError as exc:
                raise httpx.RemoteProtocolError(str(exc), request=request) from exc
            if event is h11.NEED_DATA:
                data = await self._read(request, timeout)
                if not data and head is None:
                    raise httpx.RemoteProtocolError(
                        "Server disconnected without sending a response.", request=request
                    )
                self._h11.receive_data(data)
            elif isinstance(event, h11.Response):
                head = event
            elif isinstance(event, h11.Data):
                parts.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage) and head is not None:
                break
            # An informational (1xx) answer is skipped: the final one follows.
        assert head is not None  # noqa: S101 - the loop ends only after a Response
        return httpx.Response(
            status_code=head.status_code,
            headers=head.headers.raw_items(),
            content=b"".join(parts),
            extensions={"http_version": b"HTTP/1.1", "reason_phrase": head.reason},
            request=request,
        )

    async def _read(self, request: httpx.Request, timeout: float | None) -> bytes:  # noqa: ASYNC109
        try:
            async with asyncio.timeout(timeout):
                return await self._reader.read(READ_SIZE)
        except TimeoutError:
            raise httpx.ReadTimeout("no answer in time", request=request) from None
        except OSError as exc:
            raise httpx.ReadError(str(exc) or type(exc).__name__, request=request) from exc

    def close(self) -> None:
        self._writer.close()


class SlotTransport(httpx.AsyncBaseTransport):
    """At most `slots` connections; a request waits for an idle one."""

    def __init__(self, *, slots: int, keepalive_expiry: float = 5.0) -> None:
        self._keepalive_expiry = keepalive_expiry
        self._idle: asyncio.Queue[_Connection | None] = asyncio.Queue()
        for _ in range(slots):
            self._idle.put_nowait(None)
        self._all: set[_Connection] = set()
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
    ) -> _Connection:
        scheme, host, port = origin
        if scheme not in {"http", "https"}:
            raise httpx.UnsupportedProtocol(f"unsupported URL scheme {scheme!r}", request=request)
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
        return _Connection(origin, reader, writer)

    def _tls(self) -> ssl.SSLContext:
        if self._ssl is None:
            import certifi  # noqa: PLC0415 - only for https, and httpx's own CA bundle

            self._ssl = ssl.create_default_context(cafile=certifi.where())
        return self._ssl

    def _drop(self, connection: _Connection) -> None:
        self._all.discard(connection)
        connection.close()

    async def aclose(self) -> None:
        for connection in list(self._all):
            connection.close()
        self._all.clear()


def _default_port(url: httpx.URL) -> int:
    return 443 if url.scheme == "https" else 80
