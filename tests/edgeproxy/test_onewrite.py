"""One write per answer: hypercorn's writes recorded on real sockets, with a small ASGI app and with edgeproxy."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from functools import partial
from typing import Any

import httpx
import pytest
import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve as hypercorn_serve

from edgeproxy import directio, onewrite
from tests.e2e.conftest import make_config, openai_model, running_proxy
from tests.fakes import open_fake_upstream

Writes = list[bytes]


@pytest.fixture
def writes(monkeypatch: pytest.MonkeyPatch) -> Writes:
    """Every write to a socket, in order (the servers' and the clients' alike, through trio or directly)."""
    recorded: Writes = []
    original = trio.SocketStream.send_all

    async def send_all(self: trio.SocketStream, data: Any) -> None:
        recorded.append(bytes(data))
        await original(self, data)

    write_now = directio.write_now

    def written_now(fd: int, data: bytes) -> int:  # edgeproxy's own writes, straight to the socket
        sent = write_now(fd, data)
        recorded.append(bytes(data[:sent]))
        return sent

    monkeypatch.setattr(trio.SocketStream, "send_all", send_all)
    monkeypatch.setattr(directio, "write_now", written_now)
    return recorded


def answers(writes: Writes) -> Writes:
    """The server's writes that carry a response head."""
    return [w for w in writes if w.startswith(b"HTTP/1.1 ")]


BIG = bytes(range(256)) * (64 * 1024)  # 16 MiB: more than a socket takes at once


class App:
    """/json answers with a length; /stream sends its head, then a chunk once `go` is set; /upload reads a body."""

    def __init__(self) -> None:
        self.go = trio.Event()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (message := await receive())["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        if scope["path"] == "/stream":
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
            await self.go.wait()
            await send({"type": "http.response.body", "body": b"late chunk", "more_body": False})
            return
        body = b""
        if scope["path"] == "/upload":
            while True:
                message = await receive()
                body += message.get("body", b"")
                if not message.get("more_body"):
                    break
        payload = b"" if scope["path"] == "/empty" else b'{"ok":true,"got":%d}' % len(body)
        if scope["path"] == "/big":
            payload = BIG
        headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(payload))]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": payload, "more_body": False})


@asynccontextmanager
async def serving(app: App, keep_alive_max_requests: int = 1000) -> AsyncIterator[str]:
    onewrite.install()
    config = HypercornConfig()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    config.keep_alive_max_requests = keep_alive_max_requests
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(partial(hypercorn_serve, app, config, shutdown_trigger=stop.wait))
        try:
            yield binds[0]
        finally:
            stop.set()
            nursery.cancel_scope.cancel()


async def test_an_answer_with_a_length_is_one_write(writes: Writes) -> None:
    async with serving(App()) as url, httpx.AsyncClient(base_url=url) as client:
        for _ in range(2):  # and again on the kept-alive connection
            response = await client.get("/json")
            assert response.json() == {"ok": True, "got": 0}
        empty = await client.get("/empty")
        assert empty.status_code == 200 and empty.content == b""
        head = await client.head("/json")
        assert head.status_code == 200 and head.headers["content-length"] == "19"
    sent = answers(writes)
    assert b"" not in writes  # h11's empty end of a body with a length is not written
    assert len(sent) == 4
    assert all(w.endswith(b'{"ok":true,"got":0}') for w in sent[:2])
    assert sent[2].endswith(b"\r\n\r\n") and sent[3].endswith(b"\r\n\r\n")  # no body: the head goes alone


async def test_a_streamed_answer_sends_its_head_at_once() -> None:
    app = App()
    async with serving(app) as url, httpx.AsyncClient(base_url=url) as client:
        with trio.fail_after(5):  # a held head would never arrive: the app waits for it before its first chunk
            async with client.stream("GET", "/stream") as response:
                assert response.status_code == 200
                app.go.set()
                assert await response.aread() == b"late chunk"


async def test_100_continue_is_not_held() -> None:
    async with serving(App()) as url:
        host, port = url.removeprefix("http://").split(":")
        stream = await trio.open_tcp_stream(host, int(port))
        async with stream:
            head = b"POST /upload HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\nexpect: 100-continue\r\n\r\n"
            await stream.send_all(head)
            received = b""
            with trio.fail_after(5):  # the client sends its body only once it has the 100
                while b"HTTP/1.1 100" not in received:
                    received += await stream.receive_some(4096)
                await stream.send_all(b"hello")
                while not received.endswith(b"}"):
                    received += await stream.receive_some(4096)
            assert received.endswith(b'{"ok":true,"got":5}')


async def test_edgeproxy_answers_a_call_in_one_write(writes: Writes) -> None:
    async with (
        open_fake_upstream(reply_text="Hi") as fake,
        running_proxy(make_config([openai_model("gpt-4o", fake)])) as proxy,
        proxy.client() as client,
    ):
        body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hello"}]}
        response = await client.post("/v1/chat/completions", json=body)
        assert response.json()["choices"][0]["message"]["content"] == "Hi"
        refused = await client.post("/v1/chat/completions", json={"model": "nope", "messages": []})
        assert refused.status_code in (400, 404)
    ok, error = [w for w in answers(writes) if b"\r\ndate: " in w]  # hypercorn's (the fake upstream sends no date)
    assert ok.startswith(b"HTTP/1.1 200") and ok.endswith(b"}")
    assert error.startswith(b"HTTP/1.1 4") and error.endswith(b"}")


async def test_edgeproxy_sends_a_streams_head_with_its_first_chunk(writes: Writes) -> None:
    async with (
        open_fake_upstream(reply_text="Hi there") as fake,
        running_proxy(make_config([openai_model("gpt-4o", fake)])) as proxy,
        proxy.client() as client,
    ):
        body = {"model": "gpt-4o", "stream": True, "messages": [{"role": "user", "content": "hello"}]}
        async with client.stream("POST", "/v1/chat/completions", json=body) as response:
            assert response.headers["content-type"] == "text/event-stream"
            text = (await response.aread()).decode()
        assert text.startswith("data: {") and text.endswith("data: [DONE]\n\n")
    (head,) = [w for w in answers(writes) if b"\r\ndate: " in w]  # hypercorn's (the fake upstream sends none)
    assert head.startswith(b"HTTP/1.1 200") and b"transfer-encoding: chunked" in head.lower()
    assert b"\r\n\r\n" in head and b"data: {" in head.partition(b"\r\n\r\n")[2]  # the first chunk with it


async def test_a_client_leaving_as_the_server_closes_is_not_an_error(caplog: pytest.LogCaptureFixture) -> None:
    """hypercorn answers a connection's last request (`connection: close`) and shuts the socket down; a client
    that has its answer and leaves (or sends on) at once used to meet the answer's last, empty write still on its
    way in the app's task: trio's BusyResourceError, logged as "Error in ASGI Framework" with a traceback."""
    request = b"GET /json HTTP/1.1\r\nhost: x\r\n\r\n"
    async with serving(App(), keep_alive_max_requests=1) as url:
        host, port = url.removeprefix("http://").split(":")
        for _ in range(150):
            stream = await trio.open_tcp_stream(host, int(port))
            async with stream:
                await stream.send_all(request)
                received = b""
                while not received.endswith(b"}"):
                    received += await stream.receive_some(4096)
                assert b"connection: close" in received.lower()
                with suppress(trio.BrokenResourceError):
                    await stream.send_all(request)  # as a client that does not read the header would
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, errors[0].getMessage()


async def test_answers_go_straight_to_the_socket_and_what_it_cannot_take_the_usual_way(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    direct: Writes = []
    write_now = directio.write_now

    def recording(fd: int, data: bytes) -> int:
        sent = write_now(fd, data)
        direct.append(bytes(data[:sent]))
        return sent

    monkeypatch.setattr(directio, "write_now", recording)
    async with serving(App()) as url, httpx.AsyncClient(base_url=url) as client:
        small = await client.get("/json")
        big = await client.get("/big")
    assert small.json() == {"ok": True, "got": 0}
    assert big.content == BIG  # the part the socket did not take at once followed, in order
    assert next(w for w in direct if w.startswith(b"HTTP/1.1 200")).endswith(b'{"ok":true,"got":0}')
    assert sum(len(w) for w in direct) < len(BIG)  # the rest went through trio


async def test_requests_are_read_from_the_socket_directly_uploads_included(monkeypatch: pytest.MonkeyPatch) -> None:
    read: Writes = []
    read_now = directio.read_now

    def recording(fd: int, max_bytes: int) -> bytes | None:
        data = read_now(fd, max_bytes)
        if data:
            read.append(data)
        return data

    monkeypatch.setattr(directio, "read_now", recording)
    upload = b"x" * (4 * 1024 * 1024)  # many reads, most of them already there: the loop still yields
    async with serving(App()) as url, httpx.AsyncClient(base_url=url) as client:
        assert (await client.get("/json")).json() == {"ok": True, "got": 0}
        assert (await client.post("/upload", content=upload)).json() == {"ok": True, "got": len(upload)}
    assert any(data.startswith(b"GET /json HTTP/1.1\r\n") for data in read)
    assert sum(len(data) for data in read) > len(upload)


async def test_waiting_for_the_next_request_costs_one_read_that_finds_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Between two requests on a kept-alive connection: one read finds nothing, then a wait (a second read right
    after the first, as there used to be, was a system call per request for nothing)."""
    found_nothing = 0
    read_now = directio.read_now

    def counting(fd: int, max_bytes: int) -> bytes | None:
        nonlocal found_nothing
        data = read_now(fd, max_bytes)
        found_nothing += data is None
        return data

    monkeypatch.setattr(directio, "read_now", counting)
    async with serving(App()) as url, httpx.AsyncClient(base_url=url) as client:
        for _ in range(20):
            assert (await client.get("/json")).json() == {"ok": True, "got": 0}
    assert 0 < found_nothing <= 21
