"""The upstream client on real sockets: request framing, error mapping, timeouts, connection reuse, TLS."""

from __future__ import annotations

import base64
import shutil
import socket
import ssl
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio

from edgeproxy.config import Deployment
from edgeproxy.errors import UpstreamConnectionError, UpstreamHTTPError, UpstreamTimeoutError
from edgeproxy.providers.base import CallType
from edgeproxy.upstream import Upstreams
from tests.fakes.http11 import HttpConnection
from tests.fakes.upstream import open_fake_upstream

CHAT = {"model": "m", "messages": [{"role": "user", "content": "Grüß dich"}]}
EVENTS = [
    b'data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"m",'
    b'"choices":[{"index":0,"delta":{"role":"assistant","content":"Hi"},"finish_reason":null}]}\n\n',
    b'data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"m",'
    b'"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n',
    b"data: [DONE]\n\n",
]
ANSWER = (
    b'{"id":"c","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,'
    b'"message":{"role":"assistant","content":"Hi"},"finish_reason":"stop"}],'
    b'"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}'
)


def dep(api_base: str, **kw: Any) -> Deployment:
    kw.setdefault("timeout_s", 5.0)
    return Deployment(
        model_name="g", provider="openai", model="m", api_base=api_base, api_key=kw.pop("api_key", "sk-test"),
        deployment_id="d1", **kw,
    )  # fmt: skip


@asynccontextmanager
async def open_upstreams(deployment: Deployment) -> AsyncIterator[Upstreams]:
    upstreams = Upstreams((deployment,))
    try:
        yield upstreams
    finally:
        await upstreams.aclose()


async def read_stream(upstreams: Upstreams, deployment: Deployment) -> list[dict[str, Any]]:
    stream = await upstreams.open_stream(deployment, CallType.CHAT, dict(CHAT, stream=True))
    try:
        return [chunk async for chunk, _ in stream.chunks()]
    finally:
        await stream.aclose()


# --------------------------------------------------------------------------- a tiny server that counts connections


class TinyServer:
    """Counts accepted connections; `handler` answers each request on a connection."""

    def __init__(self, handler: Callable[[HttpConnection, str], Awaitable[None]]) -> None:
        self.handler = handler
        self.accepted = 0
        self.port = 0

    async def serve(self, stream: trio.abc.Stream) -> None:
        self.accepted += 1
        http = HttpConnection(stream)
        with trio.move_on_after(10):
            while (request := await http.read_request()) is not None:
                await self.handler(http, request.path)
                if not http.next_cycle():
                    return


@asynccontextmanager
async def open_tiny_server(
    handler: Callable[[HttpConnection, str], Awaitable[None]], wrap: Callable[[trio.SocketStream], trio.abc.Stream]
) -> AsyncIterator[TinyServer]:
    server = TinyServer(handler)
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, lambda s: server.serve(wrap(s)), 0, host="127.0.0.1"))
        server.port = listeners[0].socket.getsockname()[1]
        yield server
        nursery.cancel_scope.cancel()


async def answer(http: HttpConnection, path: str) -> None:
    if path.endswith("/models"):
        await http.respond(200, [("content-type", "application/json")], b'{"object":"list","data":[]}')
    elif path.startswith("/stream/"):
        # The chunked terminator comes in a later packet: only a drained response frees the connection.
        await http.start_stream(200, [("content-type", "text/event-stream")])
        for event in EVENTS:
            await http.send_chunk(event)
        await trio.sleep(0.02)
        await http.finish_stream()
    else:
        await http.respond(200, [("content-type", "application/json")], ANSWER)


def plain(stream: trio.SocketStream) -> trio.abc.Stream:
    return stream


async def test_sequential_streams_and_calls_share_one_connection() -> None:
    async with open_tiny_server(answer, plain) as server:
        # One connection allowed: one pool, so every call could reuse the same connection.
        streamed = dep(f"http://127.0.0.1:{server.port}/stream/v1", max_connections=1)
        async with open_upstreams(streamed) as upstreams:
            for _ in range(3):
                chunks = await read_stream(upstreams, streamed)
                assert [c["choices"][0]["delta"] for c in chunks] == [{"role": "assistant", "content": "Hi"}, {}]
            await upstreams.probe(streamed)
        assert server.accepted == 1


# --------------------------------------------------------------------------- requests as sent


async def test_call_sends_compact_json_with_host_and_framing() -> None:
    async with open_fake_upstream(reply_text="Hi") as fake:
        deployment = dep(fake.openai_base)
        async with open_upstreams(deployment) as upstreams:
            response, usage = await upstreams.call(deployment, CallType.CHAT, CHAT)
        assert response["choices"][0]["message"]["content"] == "Hi" and usage is not None
        sent = fake.requests[-1]
        assert sent.method == "POST" and sent.path == "/v1/chat/completions"
        assert sent.json == CHAT
        assert sent.body == '{"model":"m","messages":[{"role":"user","content":"Grüß dich"}]}'.encode()
        assert sent.headers["host"] == f"127.0.0.1:{fake.port}"
        assert sent.headers["content-type"] == "application/json"
        assert sent.headers["content-length"] == str(len(sent.body))
        assert sent.headers["authorization"] == "Bearer sk-test"
        assert "accept-encoding" not in sent.headers  # bodies are read raw


async def test_credentials_in_the_url_become_basic_auth() -> None:
    async with open_fake_upstream() as fake:
        deployment = dep(f"http://user:p%40ss@127.0.0.1:{fake.port}/v1", api_key=None)
        async with open_upstreams(deployment) as upstreams:
            await upstreams.probe(deployment)
        expected = "Basic " + base64.b64encode(b"user:p@ss").decode()
        assert fake.requests[-1].headers["authorization"] == expected
        assert fake.requests[-1].headers["host"] == f"127.0.0.1:{fake.port}"


async def test_extra_headers_win_over_defaults() -> None:
    async with open_fake_upstream() as fake:
        extra = {"Content-Type": "application/json; x=1", "Accept-Encoding": "gzip"}
        deployment = dep(fake.openai_base, params={"extra_headers": extra})
        async with open_upstreams(deployment) as upstreams:
            await upstreams.call(deployment, CallType.CHAT, CHAT)
        assert fake.requests[-1].headers["content-type"] == "application/json; x=1"
        assert "accept-encoding" not in fake.requests[-1].headers  # we read bodies raw: never invite compression


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize("stream", [False, True])
async def test_http_error_carries_status_and_retry_after(stream: bool) -> None:
    async with open_fake_upstream(retry_after=7) as fake:
        fake.fail_next(status=429)
        deployment = dep(fake.openai_base)
        async with open_upstreams(deployment) as upstreams:
            with pytest.raises(UpstreamHTTPError) as caught:
                if stream:
                    await read_stream(upstreams, deployment)
                else:
                    await upstreams.call(deployment, CallType.CHAT, CHAT)
    assert caught.value.upstream_status == 429
    assert caught.value.retry_after_s == 7.0
    assert "HTTP 429" in str(caught.value)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize("stream", [False, True])
async def test_connection_refused(stream: bool) -> None:
    deployment = dep(f"http://user:secret@127.0.0.1:{closed_port()}/v1")
    async with open_upstreams(deployment) as upstreams:
        with pytest.raises(UpstreamConnectionError) as caught:
            if stream:
                await read_stream(upstreams, deployment)
            else:
                await upstreams.call(deployment, CallType.CHAT, CHAT)
    assert "could not reach the upstream (ConnectError)" in str(caught.value)
    assert "secret" not in str(caught.value)


@contextmanager
def blackhole() -> Iterator[int]:
    """A port whose accept queue is full: the kernel drops further SYNs, so connecting hangs."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    for _ in range(4):
        filler = socket.socket()
        filler.setblocking(False)
        filler.connect_ex(("127.0.0.1", port))
        fillers.append(filler)
    try:
        yield port
    finally:
        for sock in [*fillers, listener]:
            sock.close()


async def test_connect_timeout_is_a_timeout() -> None:
    with blackhole() as port:
        deployment = dep(f"http://127.0.0.1:{port}/v1", timeout_s=0.3)
        async with open_upstreams(deployment) as upstreams:
            started = trio.current_time()
            with pytest.raises(UpstreamTimeoutError):
                await upstreams.probe(deployment)  # no deadline of its own: httpcore's connect timeout fires
            assert trio.current_time() - started < 2


async def silent(http: HttpConnection, path: str) -> None:
    await trio.sleep_forever()


@pytest.mark.parametrize("how", ["probe", "call", "stream"])
async def test_an_upstream_that_never_answers_times_out(how: str) -> None:
    async with open_tiny_server(silent, plain) as server:
        deployment = dep(f"http://127.0.0.1:{server.port}/v1", timeout_s=0.3, stream_timeout_s=0.3)
        async with open_upstreams(deployment) as upstreams:
            with pytest.raises(UpstreamTimeoutError):
                if how == "probe":
                    await upstreams.probe(deployment)  # httpcore's read timeout
                elif how == "call":
                    await upstreams.call(deployment, CallType.CHAT, CHAT)
                else:
                    await read_stream(upstreams, deployment)


async def test_a_server_speaking_nonsense_is_a_connection_error() -> None:
    async def nonsense(stream: trio.SocketStream) -> None:
        await stream.receive_some(65536)
        await stream.send_all(b"SPDY/9 banana\r\n\r\n")

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, nonsense, 0, host="127.0.0.1"))
        deployment = dep(f"http://127.0.0.1:{listeners[0].socket.getsockname()[1]}/v1")
        async with open_upstreams(deployment) as upstreams:
            with pytest.raises(UpstreamConnectionError, match="RemoteProtocolError"):
                await upstreams.call(deployment, CallType.CHAT, CHAT)
        nursery.cancel_scope.cancel()


# --------------------------------------------------------------------------- TLS


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost"],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


async def test_https_upstream_trusted_through_ssl_cert_file(
    certificate: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    cert, key = certificate
    server_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_tls.load_cert_chain(cert, key)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))

    def tls(stream: trio.SocketStream) -> trio.abc.Stream:
        return trio.SSLStream(stream, server_tls, server_side=True)

    async with open_tiny_server(answer, tls) as server:
        deployment = dep(f"https://localhost:{server.port}/v1", max_connections=1)
        async with open_upstreams(deployment) as upstreams:
            for _ in range(2):
                response, _ = await upstreams.call(deployment, CallType.CHAT, CHAT)
                assert response["choices"][0]["message"]["content"] == "Hi"
        assert server.accepted == 1
        monkeypatch.delenv("SSL_CERT_FILE")
        async with open_upstreams(deployment) as upstreams:
            with pytest.raises(UpstreamConnectionError, match="ConnectError"):  # not trusted without it
                await upstreams.call(deployment, CallType.CHAT, CHAT)
