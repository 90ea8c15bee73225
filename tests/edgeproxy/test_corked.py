"""Corked upstream streams: a request leaves in one write, through httpcore's real write sequence."""

from __future__ import annotations

import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import httpcore
import pytest
import trio
import trio.testing

from edgeproxy import directio, upstream
from edgeproxy.corked import JOIN_MAX_BYTES, CorkedBackend, CorkedStream
from edgeproxy.providers.base import CallType
from tests.edgeproxy.steps import counting_steps
from tests.edgeproxy.test_upstream import CHAT, dep, open_upstreams
from tests.fakes.upstream import open_fake_upstream


class Recorded(httpcore.AsyncNetworkStream):
    """A real stream whose writes and reads are logged in order."""

    def __init__(self, stream: httpcore.AsyncNetworkStream, log: list[tuple[str, bytes]]) -> None:
        self._stream = stream
        self.log = log

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self.log.append(("write", buffer))
        await self._stream.write(buffer, timeout)

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        data = await self._stream.read(max_bytes, timeout)
        self.log.append(("read", data))
        return data

    async def aclose(self) -> None:
        await self._stream.aclose()

    def get_extra_info(self, info: str) -> Any:
        return self._stream.get_extra_info(info)


class RecordingBackend(httpcore.AsyncNetworkBackend):
    def __init__(self) -> None:
        self.log: list[tuple[str, bytes]] = []
        self._backend = httpcore.TrioBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        return Recorded(await self._backend.connect_tcp(host, port, timeout, local_address, socket_options), self.log)


@pytest.fixture
def recorded(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, bytes]]:
    """What the upstream pools write to and read from their sockets, with corking on as in production."""
    backend = RecordingBackend()
    monkeypatch.setattr(upstream, "_NETWORK", CorkedBackend(backend))
    return backend.log


def writes_before_first_read(log: list[tuple[str, bytes]]) -> list[bytes]:
    first_read = next(i for i, (kind, _) in enumerate(log) if kind == "read")
    return [data for kind, data in log[:first_read]]


async def test_a_call_goes_out_in_one_write_holding_head_and_body(recorded: list[tuple[str, bytes]]) -> None:
    async with open_fake_upstream(reply_text="Hi") as fake:
        deployment = dep(fake.openai_base)
        async with open_upstreams(deployment) as upstreams:
            response, _ = await upstreams.call(deployment, CallType.CHAT, CHAT)
            assert response["choices"][0]["message"]["content"] == "Hi"
            (sent,) = writes_before_first_read(recorded)
            assert sent.startswith(b"POST /v1/chat/completions HTTP/1.1\r\n")
            assert sent.endswith(b"\r\n\r\n" + fake.requests[-1].body)
            # The next call on the same kept-alive connection: again one write.
            recorded.clear()
            await upstreams.call(deployment, CallType.CHAT, CHAT)
            assert len(writes_before_first_read(recorded)) == 1
        assert fake.requests[-1].json == CHAT


async def test_a_stream_goes_out_in_one_write(recorded: list[tuple[str, bytes]]) -> None:
    async with open_fake_upstream(reply_text="Hi") as fake:
        deployment = dep(fake.openai_base)
        async with open_upstreams(deployment) as upstreams:
            stream = await upstreams.open_stream(deployment, CallType.CHAT, dict(CHAT, stream=True))
            try:
                assert [chunk async for chunk in stream.chunks()]
            finally:
                await stream.aclose()
        assert len(writes_before_first_read(recorded)) == 1


async def test_a_large_body_is_not_copied_to_join_it(recorded: list[tuple[str, bytes]]) -> None:
    big = {"model": "m", "messages": [{"role": "user", "content": "x" * (JOIN_MAX_BYTES + 1)}]}
    async with open_fake_upstream(reply_text="Hi") as fake:
        deployment = dep(fake.openai_base)
        async with open_upstreams(deployment) as upstreams:
            await upstreams.call(deployment, CallType.CHAT, big)
        head, body = writes_before_first_read(recorded)
        assert head.endswith(b"\r\n\r\n") and body == fake.requests[-1].body
        assert fake.requests[-1].json == big


class Refusing(httpcore.AsyncNetworkStream):
    """A server that answered and closed before reading the request: writes fail, the answer is there."""

    def __init__(self) -> None:
        self.answer = b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 0\r\n\r\n"

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        raise httpcore.WriteError("broken pipe")

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        answer, self.answer = self.answer, b""
        return answer


async def test_a_failed_write_still_reads_the_answer_as_httpcore_does() -> None:
    stream = CorkedStream(Refusing())
    await stream.write(b"POST / HTTP/1.1\r\n\r\n")
    await stream.write(b"{}")
    assert (await stream.read(65536)).startswith(b"HTTP/1.1 413")


# ---------------------------------------------------------------- plain sockets, read and written directly

HEAD = b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\n"


@asynccontextmanager
async def tcp_server(handler: Callable[[trio.SocketStream], Awaitable[None]]) -> AsyncIterator[int]:
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, handler, 0, host="127.0.0.1"))
        yield listeners[0].socket.getsockname()[1]
        nursery.cancel_scope.cancel()


async def answer_ok(stream: trio.SocketStream) -> None:
    received = b""
    while not received.endswith(b"\r\n\r\n{}"):
        received += await stream.receive_some(65536)
    await stream.send_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
    await trio.sleep_forever()


async def test_on_a_plain_socket_a_request_is_one_write_and_its_answer_one_wait(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    written: list[bytes] = []
    write_now = directio.write_now

    def recording(fd: int, data: bytes) -> int:
        written.append(bytes(data))
        return write_now(fd, data)

    monkeypatch.setattr(directio, "write_now", recording)
    async with tcp_server(answer_ok) as port:
        stream = await CorkedBackend().connect_tcp("127.0.0.1", port)
        with counting_steps() as counter:
            await stream.write(HEAD, timeout=5)
            await stream.write(b"{}", timeout=5)
            answer = await stream.read(65536, timeout=5)
        await stream.aclose()
    assert answer == b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
    assert written == [HEAD + b"{}"]
    # trio's stream calls took three passes through the scheduler (after the send, the wait, the receive).
    assert counter.steps <= 1


async def test_on_a_plain_socket_a_silent_server_is_a_read_timeout() -> None:
    async with tcp_server(lambda stream: trio.sleep_forever()) as port:
        stream = await CorkedBackend().connect_tcp("127.0.0.1", port)
        await stream.write(HEAD + b"{}")
        with pytest.raises(httpcore.ReadTimeout):
            await stream.read(65536, timeout=0.2)
        await stream.aclose()


async def reset(stream: trio.SocketStream) -> None:
    await stream.receive_some(65536)
    stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close with an RST
    await stream.aclose()


async def test_on_a_plain_socket_a_reset_is_a_read_error_and_a_close_the_end() -> None:
    async with tcp_server(reset) as port:
        stream = await CorkedBackend().connect_tcp("127.0.0.1", port)
        await stream.write(HEAD + b"{}")
        with pytest.raises(httpcore.ReadError):
            for _ in range(3):  # the RST may follow a first empty read
                await stream.read(65536, timeout=5)
        await stream.aclose()


async def test_on_a_plain_socket_a_connection_closed_while_waiting_is_a_read_error() -> None:
    """As through httpcore's trio stream: a pool closed at shutdown ends a read that waits with ReadError."""
    async with tcp_server(lambda stream: trio.sleep_forever()) as port:
        stream = await CorkedBackend().connect_tcp("127.0.0.1", port)
        await stream.write(HEAD + b"{}")
        async with trio.open_nursery() as nursery:

            async def close_soon() -> None:
                await trio.testing.wait_all_tasks_blocked()
                await stream.aclose()

            nursery.start_soon(close_soon)
            with pytest.raises(httpcore.ReadError):
                await stream.read(65536, timeout=5)
