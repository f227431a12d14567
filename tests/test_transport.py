"""kravia-sync's HTTP/1.1 transport against real local servers: what it sends, how it keeps
connections, and which httpx error says how far a failed request got."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Self

import httpx
import pytest

from kravia_sync.kravia.transport import SlotTransport

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


class Server:
    """A local TCP server running `handler` for each connection, counting them."""

    def __init__(self, handler: Handler) -> None:
        self._handler = handler
        self.connections = 0
        self.open_now = 0
        self.most_open = 0
        self._server: asyncio.Server | None = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.open_now += 1
        self.most_open = max(self.most_open, self.open_now)
        try:
            await self._handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self.open_now -= 1
            writer.close()

    async def __aenter__(self) -> Self:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._server is not None
        self._server.close()

    def url(self, path: str = "/x", scheme: str = "http") -> str:
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        return f"{scheme}://127.0.0.1:{port}{path}"


async def read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    """One request's head and body (Content-Length bodies only)."""
    head = await reader.readuntil(b"\r\n\r\n")
    lengths = [
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    ]
    return head, await reader.readexactly(lengths[0] if lengths else 0)


async def answer_each(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, answer: bytes = OK
) -> None:
    while not reader.at_eof():
        try:
            await read_request(reader)
        except asyncio.IncompleteReadError:
            return
        writer.write(answer)
        await writer.drain()


def request(method: str, url: str, *, timeout: float = 5.0, **kwargs: Any) -> httpx.Request:
    return httpx.Request(
        method, url, extensions={"timeout": httpx.Timeout(timeout).as_dict()}, **kwargs
    )


async def send(transport: SlotTransport, req: httpx.Request) -> httpx.Response:
    response = await transport.handle_async_request(req)
    await response.aread()
    await response.aclose()
    return response


@pytest.mark.parametrize("size", [0, 10, 200_000])
def test_requests_arrive_whole_on_one_kept_alive_connection(size: int) -> None:
    received: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                _, body = await read_request(reader)
            except asyncio.IncompleteReadError:
                return
            received.append(body)
            writer.write(OK)
            await writer.drain()

    async def go() -> tuple[list[int], int]:
        async with Server(handler) as server:
            transport = SlotTransport(slots=1)
            statuses = []
            for number in range(3):
                body = bytes([number]) * size
                answer = await send(transport, request("POST", server.url(), content=body))
                statuses.append(answer.status_code)
                assert answer.content == b"ok"
            await transport.aclose()
            return statuses, server.connections

    statuses, connections = asyncio.run(go())
    assert statuses == [200, 200, 200]
    assert received == [bytes([number]) * size for number in range(3)]
    assert connections == 1


def test_a_request_leaves_in_one_write() -> None:
    """Head and body arrive together: one send wakes the server once, not three times."""
    first_reads: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(0.05)  # everything sent by now is in the socket
        first_reads.append(await reader.read(65536))
        writer.write(OK)
        await writer.drain()

    async def go() -> None:
        async with Server(handler) as server:
            transport = SlotTransport(slots=1)
            await send(transport, request("POST", server.url("/cases"), content=b"0123456789"))
            await transport.aclose()

    asyncio.run(go())
    assert first_reads[0].startswith(b"POST /cases HTTP/1.1\r\n")
    assert first_reads[0].endswith(b"\r\n\r\n0123456789")


def test_chunked_and_informational_answers_are_read_whole() -> None:
    answer = (
        b"HTTP/1.1 100 Continue\r\n\r\n"
        b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\nX-Case: 7\r\n\r\n"
        b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
    )

    async def go() -> httpx.Response:
        async with Server(lambda r, w: answer_each(r, w, answer)) as server:
            transport = SlotTransport(slots=1)
            response = await send(transport, request("GET", server.url()))
            again = await send(transport, request("GET", server.url()))
            assert again.content == b"hello world"
            assert server.connections == 1
            await transport.aclose()
            return response

    response = asyncio.run(go())
    assert (response.status_code, response.content) == (201, b"hello world")
    assert response.headers["X-Case"] == "7"


def answer_once(answer: bytes) -> Handler:
    """A server that reads one request, sends `answer` and closes the connection."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(answer)
        await writer.drain()

    return handler


@pytest.mark.parametrize(
    "answer", [OK, b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok"]
)
def test_a_connection_the_server_closes_is_not_reused(answer: bytes) -> None:
    """A server that closes an idle connection, or says `Connection: close` in its answer:
    the next request opens a new one and succeeds."""

    async def go() -> int:
        async with Server(answer_once(answer)) as server:
            transport = SlotTransport(slots=1)
            for _ in range(3):
                assert (await send(transport, request("GET", server.url()))).status_code == 200
                await asyncio.sleep(0.05)  # the close reaches us while the connection is idle
            await transport.aclose()
            return server.connections

    assert asyncio.run(go()) == 3


def test_an_idle_connection_past_its_expiry_is_replaced() -> None:
    async def go() -> int:
        async with Server(answer_each) as server:
            transport = SlotTransport(slots=1, keepalive_expiry=0.05)
            await send(transport, request("GET", server.url()))
            await asyncio.sleep(0.1)
            await send(transport, request("GET", server.url()))
            await transport.aclose()
            return server.connections

    assert asyncio.run(go()) == 2


def test_no_more_connections_than_slots_and_every_slot_comes_back() -> None:
    async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                await read_request(reader)
            except asyncio.IncompleteReadError:
                return
            await asyncio.sleep(0.02)
            writer.write(OK)
            await writer.drain()

    async def go() -> tuple[int, list[int]]:
        async with Server(slow) as server:
            transport = SlotTransport(slots=2)
            answers = await asyncio.gather(
                *(send(transport, request("GET", server.url())) for _ in range(8))
            )
            await transport.aclose()
            return server.most_open, [answer.status_code for answer in answers]

    most_open, statuses = asyncio.run(go())
    assert most_open == 2
    assert statuses == [200] * 8


def test_nothing_listening_is_a_connect_error() -> None:
    async def go() -> None:
        async with Server(answer_each) as server:
            url = server.url()
        transport = SlotTransport(slots=1)
        with pytest.raises(httpx.ConnectError):
            await send(transport, request("POST", url, content=b"x"))

    asyncio.run(go())


def test_tls_refused_by_the_server_is_a_connect_error() -> None:
    """A handshake that fails sends nothing of the request: it is a ConnectError."""

    async def plain(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(OK)  # plain HTTP where the handshake's answer should be
        await writer.drain()

    async def go() -> None:
        async with Server(plain) as server:
            transport = SlotTransport(slots=1)
            with pytest.raises(httpx.ConnectError):
                await send(transport, request("POST", server.url(scheme="https"), content=b"x"))

    asyncio.run(go())


async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Reads a request and never answers it (for a second)."""
    await read_request(reader)
    await asyncio.sleep(1.0)


def test_an_answer_that_does_not_come_is_a_read_timeout_and_the_slot_comes_back() -> None:
    async def go() -> None:
        async with Server(silent) as slow, Server(answer_each) as fine:
            transport = SlotTransport(slots=1)
            with pytest.raises(httpx.ReadTimeout):
                await send(transport, request("POST", slow.url(), content=b"x", timeout=0.2))
            assert (await send(transport, request("GET", fine.url()))).status_code == 200
            await transport.aclose()

    asyncio.run(go())


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (b"", "without sending a response"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhalf", "peer closed connection"),
        (b"HTTP/1.1 200 OK\r\nContent-Len", "without sending a response"),
    ],
)
def test_a_connection_lost_after_sending_is_a_remote_protocol_error(
    answer: bytes, message: str
) -> None:
    async def go() -> None:
        async with Server(answer_once(answer)) as server:
            transport = SlotTransport(slots=1)
            with pytest.raises(httpx.RemoteProtocolError, match=message):
                await send(transport, request("POST", server.url(), content=b"x"))

    asyncio.run(go())


def test_a_cancelled_request_gives_its_slot_back() -> None:
    async def go() -> None:
        async with Server(silent) as slow, Server(answer_each) as fine:
            transport = SlotTransport(slots=1)
            stuck = asyncio.create_task(send(transport, request("GET", slow.url())))
            await asyncio.sleep(0.05)
            stuck.cancel()
            with pytest.raises(asyncio.CancelledError):
                await stuck
            answer = await asyncio.wait_for(send(transport, request("GET", fine.url())), 2)
            assert answer.status_code == 200
            await transport.aclose()

    asyncio.run(go())


def test_bytes_after_an_answer_are_never_read_as_the_next_answer() -> None:
    """A server that sends more than one answer's worth (a late or stray answer in the same
    write): the next request goes out on a new connection and gets its own answer."""
    stray = b'HTTP/1.1 201 Created\r\nContent-Length: 7\r\n\r\n"stray"'

    async def chatty(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        _, body = await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body) + stray)
        await writer.drain()
        await asyncio.sleep(1.0)

    async def go() -> tuple[list[bytes], int]:
        async with Server(chatty) as server:
            transport = SlotTransport(slots=1)
            answers = [
                (await send(transport, request("POST", server.url(), content=body))).content
                for body in (b"first", b"second")
            ]
            await transport.aclose()
            return answers, server.connections

    assert asyncio.run(go()) == ([b"first", b"second"], 2)


def test_what_a_server_sends_to_an_idle_connection_is_not_the_next_answer() -> None:
    """A `408` (or anything) sent while the connection sits idle, then a close that has not
    reached us yet: the connection is not used again."""

    async def times_out(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(OK)
        await asyncio.sleep(0.05)
        writer.write(b"HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(1.0)  # the close comes later

    async def go() -> tuple[list[int], int]:
        async with Server(times_out) as server:
            transport = SlotTransport(slots=1)
            first = await send(transport, request("GET", server.url()))
            await asyncio.sleep(0.2)
            second = await send(transport, request("POST", server.url(), content=b"x"))
            await transport.aclose()
            return [first.status_code, second.status_code], server.connections

    assert asyncio.run(go()) == ([200, 200], 2)
