"""Corked upstream streams (TLS deployments' httpcore pools): a request leaves in one write, through httpcore's
real write sequence (on plain TCP here, so the writes can be read)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import Any

import httpcore
import pytest

from edgeproxy.corked import JOIN_MAX_BYTES, CorkedBackend, CorkedStream
from tests.edgeproxy.test_upstream import CHAT
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
    def __init__(self, log: list[tuple[str, bytes]]) -> None:
        self.log = log
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
def recorded() -> list[tuple[str, bytes]]:
    return []


@asynccontextmanager
async def corked_pool(log: list[tuple[str, bytes]]) -> AsyncIterator[httpcore.AsyncConnectionPool]:
    """An httpcore pool as upstream.py makes for TLS deployments, on plain TCP so its writes can be read."""
    async with httpcore.AsyncConnectionPool(network_backend=CorkedBackend(RecordingBackend(log))) as pool:
        yield pool


def writes_before_first_read(log: list[tuple[str, bytes]]) -> list[bytes]:
    first_read = next(i for i, (kind, _) in enumerate(log) if kind == "read")
    return [data for kind, data in log[:first_read]]


async def post(pool: httpcore.AsyncConnectionPool, url: str, body: bytes) -> bytes:
    headers = [(b"host", b"upstream"), (b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    response = await pool.handle_async_request(httpcore.Request(b"POST", url, headers=headers, content=body))
    try:
        return b"".join([piece async for piece in response.aiter_stream()])
    finally:
        await response.aclose()


async def test_a_call_goes_out_in_one_write_holding_head_and_body(recorded: list[tuple[str, bytes]]) -> None:
    async with open_fake_upstream(reply_text="Hi") as fake, corked_pool(recorded) as pool:
        url = fake.openai_base + "/chat/completions"
        answer = await post(pool, url, json.dumps(CHAT).encode())
        assert json.loads(answer)["choices"][0]["message"]["content"] == "Hi"
        (sent,) = writes_before_first_read(recorded)
        assert sent.startswith(b"POST /v1/chat/completions HTTP/1.1\r\n")
        assert sent.endswith(b"\r\n\r\n" + fake.requests[-1].body)
        # The next call on the same kept-alive connection: again one write.
        recorded.clear()
        await post(pool, url, json.dumps(CHAT).encode())
        assert len(writes_before_first_read(recorded)) == 1
        assert fake.requests[-1].json == CHAT


async def test_a_stream_goes_out_in_one_write(recorded: list[tuple[str, bytes]]) -> None:
    async with open_fake_upstream(reply_text="Hi") as fake, corked_pool(recorded) as pool:
        answer = await post(pool, fake.openai_base + "/chat/completions", json.dumps(dict(CHAT, stream=True)).encode())
        assert answer.rstrip().endswith(b"data: [DONE]")
        assert len(writes_before_first_read(recorded)) == 1


async def test_a_large_body_is_not_copied_to_join_it(recorded: list[tuple[str, bytes]]) -> None:
    big = {"model": "m", "messages": [{"role": "user", "content": "x" * (JOIN_MAX_BYTES + 1)}]}
    async with open_fake_upstream(reply_text="Hi") as fake, corked_pool(recorded) as pool:
        await post(pool, fake.openai_base + "/chat/completions", json.dumps(big).encode())
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
