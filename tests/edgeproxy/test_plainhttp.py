"""The plain-HTTP upstream pool on real sockets against scripted servers: framing, reuse, limits, failures."""

from __future__ import annotations

import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from functools import partial

import httpcore
import pytest
import trio
import trio.testing

from edgeproxy import directio
from edgeproxy.plainhttp import JOIN_MAX_BYTES, PlainPool
from tests.edgeproxy.steps import counting_steps

Handler = Callable[[trio.SocketStream, "Server"], Awaitable[None]]


@dataclass
class Server:
    handler: Handler
    port: int = 0
    accepted: int = 0
    requests: list[bytes] = field(default_factory=list)

    async def serve(self, stream: trio.SocketStream) -> None:
        self.accepted += 1
        with suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await self.handler(stream, self)

    async def read_request(self, stream: trio.SocketStream, buffer: bytearray) -> bytes | None:
        """The next request (head and content-length body) from the connection, or None at its end."""
        while b"\r\n\r\n" not in buffer:
            data = await stream.receive_some(65536)
            if not data:
                return None
            buffer += data
        end = buffer.index(b"\r\n\r\n") + 4
        length = 0
        for line in bytes(buffer[:end]).split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        while len(buffer) < end + length:
            buffer += await stream.receive_some(65536)
        request = bytes(buffer[: end + length])
        del buffer[: end + length]
        self.requests.append(request)
        return request


@asynccontextmanager
async def serving(handler: Handler) -> AsyncIterator[Server]:
    server = Server(handler)
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, server.serve, 0, host="127.0.0.1"))
        server.port = listeners[0].socket.getsockname()[1]
        yield server
        nursery.cancel_scope.cancel()


def answering(*answers: bytes, keep_open: bool = True) -> Handler:
    """Each request on a connection gets the next answer, sent as given (in pieces, when a list of parts)."""

    async def handler(stream: trio.SocketStream, server: Server) -> None:
        buffer = bytearray()
        for answer in answers:
            if await server.read_request(stream, buffer) is None:
                return
            await stream.send_all(answer)
        if keep_open:
            await trio.sleep_forever()

    return handler


def request(port: int, body: bytes = b"{}", method: bytes = b"POST", **timeouts: float) -> httpcore.Request:
    headers = [(b"Host", b"upstream"), (b"Content-Type", b"application/json"), (b"Content-Length", b"%d" % len(body))]
    extensions = {"timeout": {"connect": 5.0, "read": 5.0, "write": 5.0, "pool": 5.0, **timeouts}}
    return httpcore.Request(
        method, f"http://127.0.0.1:{port}/v1/chat/completions", headers=headers, content=body, extensions=extensions
    )


async def exchange(pool: PlainPool, req: httpcore.Request) -> tuple[int, bytes]:
    response = await pool.handle_async_request(req)
    try:
        return response.status, await response.aread()
    finally:
        await response.aclose()


OK = b'HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 11\r\n\r\n{"ok":true}'


# --------------------------------------------------------------------------- the request as sent


@pytest.fixture
def written(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """What the pool hands the socket, write by write (before the socket says how much it took)."""
    recorded: list[bytes] = []
    write_now = directio.write_now

    def recording(fd: int, data: bytes) -> int:
        recorded.append(bytes(data))
        return write_now(fd, data)

    monkeypatch.setattr(directio, "write_now", recording)
    return recorded


async def test_a_request_is_one_write_and_its_answer_one_wait(written: list[bytes]) -> None:
    async with serving(answering(OK, OK)) as server:
        pool = PlainPool(4)
        await exchange(pool, request(server.port))  # connects
        written.clear()
        with counting_steps() as counter:
            status, body = await exchange(pool, request(server.port, b'{"a":1}'))
        await pool.aclose()
    assert (status, body) == (200, b'{"ok":true}')
    assert written == [server.requests[-1]]
    assert written[0] == (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: upstream\r\nContent-Type: application/json\r\n"
        b'Content-Length: 7\r\n\r\n{"a":1}'
    )
    # On a kept-alive connection: one pass through the scheduler, the wait for the answer.
    assert counter.steps <= 1
    assert server.accepted == 1


async def test_a_large_body_is_not_copied_to_join_it(written: list[bytes]) -> None:
    body = b'"' + b"x" * JOIN_MAX_BYTES + b'"'
    async with serving(answering(OK)) as server:
        pool = PlainPool(1)
        assert await exchange(pool, request(server.port, body)) == (200, b'{"ok":true}')
        await pool.aclose()
    assert server.requests[0].endswith(b"\r\n\r\n" + body)
    head = server.requests[0][: -len(body)]
    assert written[:2] == [head, body]  # the head, then the body as it was


async def test_a_header_with_a_line_break_is_refused_before_sending() -> None:
    async with serving(answering(OK)) as server:
        pool = PlainPool(1)
        bad = request(server.port)
        bad.headers.append((b"x-injected", b"a\r\nx-evil: 1"))
        with pytest.raises(httpcore.LocalProtocolError):
            await exchange(pool, bad)
        assert await exchange(pool, request(server.port)) == (200, b'{"ok":true}')  # the slot was given back
        await pool.aclose()
    assert all(b"x-evil" not in r for r in server.requests)


# --------------------------------------------------------------------------- bodies as framed


CHUNKED = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
    b"7;ext=1\r\ndata: a\r\n"
    b"b\r\n\n\ndata: bcd\r\n"
    b"2\r\n\n\n\r\n"
    b"0\r\nx-trailer: yes\r\n\r\n"
)


@pytest.mark.parametrize("piece", [1, 3, 7, 1000])
async def test_a_chunked_body_is_decoded_whatever_its_reads_and_the_connection_kept(piece: int) -> None:
    async def in_pieces(stream: trio.SocketStream, server: Server) -> None:
        buffer = bytearray()
        for _ in range(2):
            await server.read_request(stream, buffer)
            for at in range(0, len(CHUNKED), piece):
                await stream.send_all(CHUNKED[at : at + piece])
                await trio.sleep(0)
        await trio.sleep_forever()

    async with serving(in_pieces) as server:
        pool = PlainPool(1)
        for _ in range(2):  # the trailers were read: the second answer starts where it should
            assert await exchange(pool, request(server.port)) == (200, b"data: a\n\ndata: bcd\n\n")
        await pool.aclose()
    assert server.accepted == 1


async def test_a_stream_yields_as_the_chunks_arrive() -> None:
    sent = trio.Event()
    go_on = trio.Event()

    async def dripping(stream: trio.SocketStream, server: Server) -> None:
        await server.read_request(stream, bytearray())
        await stream.send_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nfirst\r\n")
        sent.set()
        await go_on.wait()
        await stream.send_all(b"6\r\nsecond\r\n0\r\n\r\n")
        await trio.sleep_forever()

    async with serving(dripping) as server:
        pool = PlainPool(1)
        response = await pool.handle_async_request(request(server.port))
        pieces = response.aiter_stream()
        assert await pieces.__anext__() == b"first"
        go_on.set()
        assert [piece async for piece in pieces] == [b"second"]
        await response.aclose()
        await pool.aclose()


async def test_a_sized_body_over_several_reads_then_the_next_answer() -> None:
    async def split(stream: trio.SocketStream, server: Server) -> None:
        buffer = bytearray()
        await server.read_request(stream, buffer)
        await stream.send_all(OK[:-5])
        await trio.testing.wait_all_tasks_blocked()
        await stream.send_all(OK[-5:])
        await server.read_request(stream, buffer)
        await stream.send_all(b"HTTP/1.1 204 No Content\r\n\r\n")
        await server.read_request(stream, buffer)
        await stream.send_all(OK)
        await trio.sleep_forever()

    async with serving(split) as server:
        pool = PlainPool(1)
        assert await exchange(pool, request(server.port)) == (200, b'{"ok":true}')
        assert await exchange(pool, request(server.port)) == (204, b"")  # no body, whatever the framing
        assert await exchange(pool, request(server.port)) == (200, b'{"ok":true}')
        await pool.aclose()
    assert server.accepted == 1


async def test_a_body_ended_by_closing_is_read_and_its_connection_not_kept() -> None:
    async def closing(stream: trio.SocketStream, server: Server) -> None:
        await server.read_request(stream, bytearray())
        await stream.send_all(b'HTTP/1.0 200 OK\r\ncontent-type: application/json\r\n\r\n{"a":')
        await stream.send_all(b"1}")
        await stream.aclose()

    assert await connections_for_two_calls(closing, b'{"a":1}') == 2


async def test_connection_close_is_honoured() -> None:
    close = b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok"
    assert await connections_for_two_calls(answering(close), b"ok") == 2


async def connections_for_two_calls(handler: Handler, body: bytes) -> int:
    """How many connections two calls in a row took, each answered 200 with `body`."""
    async with serving(handler) as server:
        pool = PlainPool(1)
        for _ in range(2):
            assert await exchange(pool, request(server.port)) == (200, body)
        await pool.aclose()
    return server.accepted


async def test_informational_answers_are_skipped() -> None:
    early = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </x>\r\n\r\n" + OK
    async with serving(answering(early)) as server:
        pool = PlainPool(1)
        assert await exchange(pool, request(server.port)) == (200, b'{"ok":true}')
        await pool.aclose()


async def test_status_headers_and_an_error_body_reach_the_caller() -> None:
    limited = b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 7\r\nContent-Length: 4\r\n\r\nslow"
    async with serving(answering(limited)) as server:
        pool = PlainPool(1)
        response = await pool.handle_async_request(request(server.port))
        assert response.status == 429
        assert (b"Retry-After", b"7") in response.headers
        assert await response.aread() == b"slow"
        await response.aclose()
        await pool.aclose()


@pytest.mark.parametrize(
    "answer",
    [
        b"SPDY/9 banana\r\n\r\n",
        b"HTTP/1.1 2x0 OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\nabc",
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\nab\r\n",
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nabXY0\r\n\r\n",
        b"HTTP/1.1 101 Switching Protocols\r\nupgrade: h2c\r\n\r\n",
    ],
)
async def test_a_malformed_answer_is_a_protocol_error(answer: bytes) -> None:
    async with serving(answering(answer)) as server:
        pool = PlainPool(1)
        with pytest.raises(httpcore.RemoteProtocolError):
            await exchange(pool, request(server.port))
        await pool.aclose()


async def test_an_answer_cut_short_is_a_protocol_error_and_its_connection_dropped() -> None:
    cut = b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc"
    async with serving(answering(cut, keep_open=False)) as server:
        pool = PlainPool(1)
        with pytest.raises(httpcore.RemoteProtocolError, match="complete message body"):
            await exchange(pool, request(server.port))
        with pytest.raises(httpcore.RemoteProtocolError, match="complete message body"):
            await exchange(pool, request(server.port))  # on a new connection
        await pool.aclose()
    assert server.accepted == 2


# --------------------------------------------------------------------------- connections kept, limited, dropped


async def test_a_kept_connection_the_server_closed_is_not_used() -> None:
    async with serving(answering(OK, keep_open=False)) as server:
        pool = PlainPool(1)
        assert await exchange(pool, request(server.port)) == (200, b'{"ok":true}')
        await trio.testing.wait_all_tasks_blocked()  # the server has closed its end by now
        assert await exchange(pool, request(server.port)) == (200, b'{"ok":true}')
        await pool.aclose()
    assert server.accepted == 2


async def test_a_connection_idle_past_the_keepalive_expiry_is_not_used(autojump_clock: trio.abc.Clock) -> None:
    async with serving(answering(OK, OK)) as server:
        pool = PlainPool(1, keepalive_expiry_s=5)
        await exchange(pool, request(server.port))
        await trio.sleep(4)
        await exchange(pool, request(server.port))  # within the expiry: the same connection
        assert server.accepted == 1
        await trio.sleep(6)
        await exchange(pool, request(server.port))
        assert server.accepted == 2
        await pool.aclose()


async def test_requests_over_the_limit_wait_for_a_connection_then_time_out() -> None:
    release = trio.Event()

    async def slow_first(stream: trio.SocketStream, server: Server) -> None:
        buffer = bytearray()
        await server.read_request(stream, buffer)
        await stream.send_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nhi\r\n")
        await release.wait()
        await stream.send_all(b"0\r\n\r\n")
        await server.read_request(stream, buffer)
        await stream.send_all(OK)
        await trio.sleep_forever()

    async with serving(slow_first) as server:
        pool = PlainPool(1)
        first = await pool.handle_async_request(request(server.port))
        with pytest.raises(httpcore.PoolTimeout):
            await pool.handle_async_request(request(server.port, pool=0.1))
        async with trio.open_nursery() as nursery:
            waiting: list[tuple[int, bytes]] = []

            async def second() -> None:
                waiting.append(await exchange(pool, request(server.port)))

            nursery.start_soon(second)
            await trio.testing.wait_all_tasks_blocked()
            assert not waiting  # it waits for the only connection
            release.set()
            assert await first.aread() == b"hi"
            await first.aclose()
        assert waiting == [(200, b'{"ok":true}')]
        await pool.aclose()
    assert server.accepted == 1


async def test_an_answer_given_up_midway_closes_its_connection_and_frees_its_slot() -> None:
    closed = []

    async def endless_then_ok(stream: trio.SocketStream, server: Server) -> None:
        buffer = bytearray()
        await server.read_request(stream, buffer)
        if server.accepted > 1:
            await stream.send_all(OK)
            await trio.sleep_forever()
        await stream.send_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nhi\r\n")
        closed.append(await stream.receive_some(65536) == b"")  # the client closed, it sent no other request

    async with serving(endless_then_ok) as server:
        pool = PlainPool(1)
        response = await pool.handle_async_request(request(server.port))
        pieces = response.aiter_stream()
        assert await pieces.__anext__() == b"hi"
        await pieces.aclose()  # type: ignore[attr-defined]
        await response.aclose()
        assert await exchange(pool, request(server.port, pool=1)) == (200, b'{"ok":true}')  # a new connection
        await pool.aclose()
    assert server.accepted == 2
    assert closed == [True]


async def test_a_cancelled_request_frees_its_slot() -> None:
    async with serving(lambda stream, server: trio.sleep_forever()) as server:
        pool = PlainPool(1)
        with trio.move_on_after(0.1):
            await pool.handle_async_request(request(server.port))
        with pytest.raises(httpcore.ReadTimeout):  # had the slot leaked, a PoolTimeout
            await exchange(pool, request(server.port, read=0.1, pool=1))
        await pool.aclose()


# --------------------------------------------------------------------------- failures


async def test_a_silent_server_is_a_read_timeout() -> None:
    async with serving(lambda stream, server: trio.sleep_forever()) as server:
        pool = PlainPool(1)
        with pytest.raises(httpcore.ReadTimeout):
            await exchange(pool, request(server.port, read=0.2))
        await pool.aclose()


async def test_a_reset_is_a_read_error() -> None:
    async def reset(stream: trio.SocketStream, server: Server) -> None:
        await server.read_request(stream, bytearray())
        stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close with an RST
        await stream.aclose()

    async with serving(reset) as server:
        pool = PlainPool(1)
        with pytest.raises((httpcore.ReadError, httpcore.RemoteProtocolError)):
            await exchange(pool, request(server.port))
        await pool.aclose()


async def test_closing_the_pool_ends_a_read_that_waits() -> None:
    """As httpcore's pools: shutdown closes connections in use, and their reads end with ReadError."""
    async with serving(lambda stream, server: trio.sleep_forever()) as server:
        pool = PlainPool(1)
        async with trio.open_nursery() as nursery:

            async def close_soon() -> None:
                await trio.testing.wait_all_tasks_blocked()
                await pool.aclose()

            nursery.start_soon(close_soon)
            with pytest.raises(httpcore.ReadError):
                await exchange(pool, request(server.port))


async def test_a_server_that_answers_before_reading_the_whole_request_is_still_heard() -> None:
    async def refusing(stream: trio.SocketStream, server: Server) -> None:
        await stream.receive_some(1024)
        await stream.send_all(b"HTTP/1.1 413 Payload Too Large\r\nconnection: close\r\ncontent-length: 0\r\n\r\n")
        stream.socket.shutdown(socket.SHUT_RDWR)
        await stream.aclose()

    async with serving(refusing) as server:
        pool = PlainPool(1)
        try:
            status, _ = await exchange(pool, request(server.port, b'"' + b"x" * (8 * 1024 * 1024) + b'"'))
        except (httpcore.ReadError, httpcore.RemoteProtocolError):
            pytest.skip("the kernel reset the connection before the answer was read")  # timing-dependent
        assert status == 413
        await pool.aclose()


async def test_connecting_to_a_closed_port_is_a_connect_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    pool = PlainPool(1)
    with pytest.raises(httpcore.ConnectError):
        await exchange(pool, request(port))
    with pytest.raises(httpcore.ConnectError):  # the failed connect gave its slot back
        await exchange(pool, request(port, pool=0.5))


async def test_https_is_not_ours() -> None:
    pool = PlainPool(1)
    req = httpcore.Request(b"GET", "https://127.0.0.1:1/v1/models", headers=[(b"Host", b"x")])
    with pytest.raises(httpcore.UnsupportedProtocol):
        await pool.handle_async_request(req)
