"""One kept-alive HTTP/1.1 connection on asyncio streams, for `SlotTransport`
(`kravia_sync.kravia.transport`, whose docstring says why): a request leaves in one write and
its answer is read whole, parsed by h11. The errors are httpx's, as the transport's are.

A module of its own so that h11 loads with the first connection: a pass that makes no call
never imports it.
"""

from __future__ import annotations

import asyncio
import time

import h11
import httpx

__all__ = ["READ_SIZE", "Connection"]

READ_SIZE = 64 * 1024


class Connection:
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
