"""The connection kravia-sync's transport gives httpcore sends a request in one write."""

from __future__ import annotations

import asyncio
from typing import Any

import httpcore
import httpx
import pytest

from kravia_sync._transport import SlotTransport, _OneSendStream


class RecordingStream(httpcore.AsyncNetworkStream):
    def __init__(self) -> None:
        self.sent: list[tuple[bytes, float | None]] = []
        self.closed = False

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:  # noqa: ASYNC109
        return b"answer"

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:  # noqa: ASYNC109
        self.sent.append((buffer, timeout))

    async def aclose(self) -> None:
        self.closed = True

    async def start_tls(self, *args: Any, **kwargs: Any) -> httpcore.AsyncNetworkStream:
        return RecordingStream()


def test_writes_leave_together_when_the_answer_is_read() -> None:
    async def go() -> tuple[list[tuple[bytes, float | None]], list[tuple[bytes, float | None]]]:
        inner = RecordingStream()
        stream = _OneSendStream(inner)
        await stream.write(b"POST /x HTTP/1.1\r\n\r\n", timeout=5.0)
        await stream.write(b"body", timeout=5.0)
        before = list(inner.sent)
        assert await stream.read(100, timeout=30.0) == b"answer"
        return before, inner.sent

    before, after = asyncio.run(go())
    assert before == []
    assert after == [(b"POST /x HTTP/1.1\r\n\r\nbody", 5.0)]  # one send, the write timeout


def test_a_large_body_is_sent_as_it_grows() -> None:
    async def sizes_sent() -> list[int]:
        inner = RecordingStream()
        stream = _OneSendStream(inner)
        for _ in range(5):
            await stream.write(b"x" * 20_000)
        await stream.read(10)
        return [len(data) for data, _ in inner.sent]

    assert asyncio.run(sizes_sent()) == [80_000, 20_000]  # never more than HOLD + one write


def test_nothing_held_is_sent_after_close() -> None:
    async def closed() -> RecordingStream:
        inner = RecordingStream()
        stream = _OneSendStream(inner)
        await stream.write(b"half a request")
        await stream.aclose()
        return inner

    inner = asyncio.run(closed())
    assert inner.closed
    assert inner.sent == []


@pytest.mark.parametrize("size", [0, 10, 200_000])
def test_requests_through_the_transport_arrive_whole(size: int) -> None:
    """A real server on a local socket receives every byte of each request on one kept-alive
    connection, and answers each."""
    received: list[bytes] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except asyncio.IncompleteReadError:
                    return  # the client closed the connection
                lengths = [
                    int(line.split(b":", 1)[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                ]
                received.append(await reader.readexactly(lengths[0] if lengths else 0))
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                await writer.drain()
        finally:
            writer.close()
            await writer.wait_closed()

    async def statuses() -> list[int]:
        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        transport = SlotTransport(slots=1)
        answered = []
        async with httpx.AsyncClient(transport=transport) as client:
            for number in range(3):
                body = bytes([number]) * size
                answer = await client.post(f"http://127.0.0.1:{port}/x", content=body)
                answered.append(answer.status_code)
        server.close()
        await server.wait_closed()
        return answered

    assert asyncio.run(statuses()) == [200, 200, 200]
    assert received == [bytes([number]) * size for number in range(3)]
