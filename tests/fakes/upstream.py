"""FakeUpstream: one real HTTP server on 127.0.0.1 speaking the OpenAI, Ollama and Anthropic
wire formats, with knobs to make it fail, stall, cut streams, or stop listening.
"""

from __future__ import annotations

import json
import socket
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import trio

from . import anthropic_wire, ollama_wire, openai_wire
from .http11 import HttpConnection, HttpRequest
from .wire import CONTENT, HEAD, TAIL, RecordedRequest, Reply, Route, garbage_reply

DEFAULT_REPLY = "Hello there, friend"
ROUTES: dict[tuple[str, str], Route] = {**openai_wire.ROUTES, **ollama_wire.ROUTES, **anthropic_wire.ROUTES}


@dataclass
class Fault:
    kind: Literal["fail", "stall", "garbage"]
    status: int = 500
    body: Any = None  # dict/list (sent as JSON), str, bytes; None: the route's own error JSON
    headers: dict[str, str] | None = None


@dataclass(eq=False)
class _Connection:
    stream: trio.SocketStream
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    done: trio.Event = field(default_factory=trio.Event)
    idle: bool = True  # between requests: refuse_connections() may close it

    def close_now(self) -> None:
        # Close the socket synchronously, not just cancel the task: a client reusing this
        # keep-alive connection right after must already see it closed.
        self.scope.cancel()
        self.stream.socket.close()


class FakeUpstream:
    """Use through `open_fake_upstream()`. Plain attributes are knobs; set them at any time."""

    def __init__(self, nursery: trio.Nursery) -> None:
        self._nursery = nursery
        # What a successful answer says.
        self.reply_text = DEFAULT_REPLY
        self.usage: tuple[int, int] = (10, 5)  # (prompt_tokens, completion_tokens)
        self.omit_usage = False
        self.tool_call: tuple[str, dict[str, Any]] | None = None  # used when the request offers tools
        self.cache_read_tokens: int | None = None
        self.models: list[str] = ["fake-model"]
        # How it is delivered.
        self.chunk_delay_s = 0.0
        self.retry_after: float | None = None  # seconds, sent as Retry-After on injected failures
        # What happened.
        self.requests: list[RecordedRequest] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.disconnects = 0
        self._faults: deque[Fault] = deque()
        self._always: Fault | None = None
        self._cut_after: int | None = None
        self._port = 0
        self._listener: trio.SocketListener | None = None
        self._accept_scope: trio.CancelScope | None = None
        self._connections: set[_Connection] = set()
        self._changed = trio.Event()

    # -- addresses ---------------------------------------------------------------------------

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    @property
    def openai_base(self) -> str:
        return self.url + "/v1"

    # -- faults ------------------------------------------------------------------------------
    # One-shot faults queue up in call order and apply to LLM calls only (not /v1/models,
    # /api/tags...), so health checks and model listings never eat them.

    def fail_next(self, n: int = 1, status: int = 500, body: Any = None, headers: dict[str, str] | None = None) -> None:
        self._faults.extend(Fault("fail", status, body, headers) for _ in range(n))

    def fail_always(self, status: int = 500, body: Any = None, headers: dict[str, str] | None = None) -> None:
        self._always = Fault("fail", status, body, headers)

    def stall_next(self, n: int = 1) -> None:
        """The next n LLM calls get no answer at all until the client hangs up."""
        self._faults.extend(Fault("stall") for _ in range(n))

    def garbage_next(self, n: int = 1) -> None:
        """The next n LLM calls get a 200 whose body is not valid JSON / JSON-in-SSE / NDJSON."""
        self._faults.extend(Fault("garbage") for _ in range(n))

    def cut_stream_after(self, k: int | None) -> None:
        """Every streamed answer drops the connection after k content chunks; None turns it off."""
        self._cut_after = k

    def heal(self) -> None:
        """Forget every injected fault (queued, fail_always, cut_stream_after)."""
        self._faults.clear()
        self._always = None
        self._cut_after = None

    # -- waiting (instead of sleeping) -------------------------------------------------------

    async def wait_for(self, predicate: Callable[[], bool]) -> None:
        """Return once predicate() holds; it is re-checked whenever requests/in_flight/disconnects change."""
        while not predicate():
            await self._changed.wait()

    async def wait_disconnect(self, count: int = 1) -> None:
        await self.wait_for(lambda: self.disconnects >= count)

    async def wait_in_flight(self, n: int) -> None:
        await self.wait_for(lambda: self.in_flight >= n)

    async def wait_requests(self, n: int) -> None:
        await self.wait_for(lambda: len(self.requests) >= n)

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    # -- listening ---------------------------------------------------------------------------

    def refuse_connections(self) -> None:
        """Close the listening socket (new connections are refused) and idle keep-alive
        connections; requests already being answered finish normally."""
        if self._accept_scope is not None:
            self._accept_scope.cancel()
            self._accept_scope = None
        if self._listener is not None:
            self._listener.socket.close()
            self._listener = None
        for conn in self._connections:
            if conn.idle:
                conn.close_now()

    def accept_connections(self) -> None:
        """Listen again, on the same port as before (a free one the first time)."""
        if self._listener is not None:
            return
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", self._port))
            sock.listen(128)
        except OSError:
            sock.close()
            raise
        self._port = sock.getsockname()[1]
        self._listener = trio.SocketListener(trio.socket.from_stdlib_socket(sock))
        self._accept_scope = trio.CancelScope()
        self._nursery.start_soon(self._accept, self._listener, self._accept_scope)

    async def stop(self) -> None:
        """Close the port and every connection, in-flight answers included; returns once closed."""
        self._close_everything()
        for conn in list(self._connections):
            await conn.done.wait()

    async def start(self) -> None:
        """Serve again on the same port."""
        self.accept_connections()
        await trio.lowlevel.checkpoint()

    def _close_everything(self) -> None:
        self.refuse_connections()
        for conn in self._connections:
            conn.close_now()

    async def _accept(self, listener: trio.SocketListener, scope: trio.CancelScope) -> None:
        with scope:
            while True:
                try:
                    stream = await listener.accept()
                except (trio.ClosedResourceError, OSError):
                    return
                conn = _Connection(stream)
                self._connections.add(conn)
                self._nursery.start_soon(self._serve_connection, conn)

    async def _serve_connection(self, conn: _Connection) -> None:
        try:
            with conn.scope:
                async with conn.stream:
                    http = HttpConnection(conn.stream)
                    while True:
                        conn.idle = True
                        request = await http.read_request()
                        conn.idle = False
                        if request is None or not await self._handle(http, request) or not http.next_cycle():
                            return
        finally:
            self._connections.discard(conn)
            conn.done.set()

    # -- answering ---------------------------------------------------------------------------

    async def _handle(self, http: HttpConnection, raw: HttpRequest) -> bool:
        """Answer one request; False when the connection must close afterwards."""
        request = RecordedRequest(raw.method, raw.path, raw.headers, _parse_json(raw.body), raw.query, raw.body)
        self.requests.append(request)
        self._notify()
        route = ROUTES.get((raw.method, raw.path))
        if route is None:
            await _send(http, _not_found(raw))
            return True
        if not route.llm:
            await _send(http, route.build(self, request))
            return True
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        self._notify()
        try:
            return await self._answer_llm(http, route, request)
        finally:
            self.in_flight -= 1
            self._notify()

    async def _answer_llm(self, http: HttpConnection, route: Route, request: RecordedRequest) -> bool:
        if not isinstance(request.json, dict):
            await _send(http, route.error(400, "request body must be a JSON object"))
            return True
        reply = route.precheck(request) if route.precheck else None
        if reply is None:
            fault = self._faults.popleft() if self._faults else self._always
            if fault is not None and fault.kind == "stall":
                await http.run_unless_peer_leaves(trio.sleep_forever)
                self._count_disconnect()
                return False
            reply = self._fault_reply(route, request, fault) if fault else route.build(self, request)
        if reply.chunks is None:
            await _send(http, reply)
            return True
        return await self._stream(http, reply)

    def _fault_reply(self, route: Route, request: RecordedRequest, fault: Fault) -> Reply:
        if fault.kind == "garbage":
            return garbage_reply(route.stream_kind if route.streams(request.json) else None)
        if fault.body is None:
            reply = route.error(fault.status, f"injected failure: HTTP {fault.status}")
        elif isinstance(fault.body, bytes | str):
            body = fault.body.encode() if isinstance(fault.body, str) else fault.body
            reply = Reply(fault.status, [("content-type", "text/plain; charset=utf-8")], body)
        else:
            reply = Reply(fault.status, [("content-type", "application/json")], json.dumps(fault.body).encode())
        if self.retry_after is not None:
            reply.headers.append(("retry-after", f"{self.retry_after:g}"))
        reply.headers += list((fault.headers or {}).items())
        return reply

    async def _stream(self, http: HttpConnection, reply: Reply) -> bool:
        chunks = reply.chunks or []
        cut = False

        async def send() -> None:
            nonlocal cut
            await http.start_stream(reply.status, reply.headers)
            sent = 0
            for i, chunk in enumerate(chunks):
                if self._cuts_before(chunk.kind, sent):
                    cut = True
                    return
                if i and self.chunk_delay_s:
                    await trio.sleep(self.chunk_delay_s)
                if i == len(chunks) - 1:
                    await http.finish_stream(chunk.data)
                else:
                    await http.send_chunk(chunk.data)
                sent += chunk.kind == CONTENT
            if not chunks:
                await http.finish_stream()

        if not await http.run_unless_peer_leaves(send):
            self._count_disconnect()
            return False
        return not cut  # after a cut the connection closes with the body unfinished

    def _cuts_before(self, kind: str, sent: int) -> bool:
        if self._cut_after is None or kind == HEAD:
            return False
        return kind == TAIL or sent >= self._cut_after

    def _count_disconnect(self) -> None:
        self.disconnects += 1
        self._notify()


async def _send(http: HttpConnection, reply: Reply) -> None:
    await http.respond(reply.status, reply.headers, reply.body)


def _not_found(raw: HttpRequest) -> Reply:
    known_path = any(path == raw.path for _, path in ROUTES)
    status, message = (405, "method not allowed") if known_path else (404, f"no route for {raw.path}")
    if raw.path.startswith("/api/"):
        return ollama_wire.error(status, message)
    if raw.path.startswith("/v1/messages"):
        return anthropic_wire.error(status, message)
    return openai_wire.error(status, message)


def _parse_json(body: bytes) -> Any | None:
    try:
        return json.loads(body) if body else None
    except ValueError:
        return None


@asynccontextmanager
async def open_fake_upstream(**knobs: Any) -> AsyncIterator[FakeUpstream]:
    """Serve a FakeUpstream on 127.0.0.1 (a free port) until the block exits.

    Keyword arguments set knobs up front: `open_fake_upstream(reply_text="Hi", usage=(3, 2))`.
    """
    async with trio.open_nursery() as nursery:
        fake = FakeUpstream(nursery)
        for name, value in knobs.items():
            if name.startswith("_") or not hasattr(fake, name):
                raise TypeError(f"open_fake_upstream() got an unknown knob {name!r}")
            setattr(fake, name, value)
        fake.accept_connections()
        try:
            yield fake
        finally:
            # Cancellation alone ends stalled and streaming handlers; nothing here may block.
            fake._close_everything()
            nursery.cancel_scope.cancel()
