"""The LLM routes as a raw ASGI handler in front of the Quart app, and the error body both of them render.

Quart costs about 200 µs a request (request and response objects, contexts, signals) out of ~1.5 ms per
proxied call, so POSTs on the LLM routes (api/llm.py) skip it; every other request goes on to Quart.
What Quart did for these routes is done here the same way: the body limit (413), the body timeout (408),
cancelling the call when the client disconnects, and the OpenAI-style error body.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from contextlib import aclosing
from typing import Any
from urllib.parse import urlparse

import trio
from werkzeug.exceptions import RequestTimeout

from edgeproxy.api import llm
from edgeproxy.calls import dumps
from edgeproxy.errors import InvalidRequestError, ProxyError, RequestTooLargeError
from edgeproxy.gateway import Gateway
from edgeproxy.onewrite import BODY_FOLLOWS
from edgeproxy.providers.base import CallType
from edgeproxy.serving import Answer

log = logging.getLogger("edgeproxy.api.fastpath")

# Loose ASGI types: Quart's side is typed with hypercorn's TypedDicts, which only Mapping and Any accept.
Scope = Mapping[str, Any]
Receive = Callable[[], Awaitable[Mapping[str, Any]]]
Send = Callable[[Any], Awaitable[None]]
ASGIApp = Callable[[Any, Any, Any], Awaitable[None]]

# Past the body limit, what is still on its way is read and dropped, up to these bounds, before the 413.
DISCARD_MAX_BYTES = 16 * 1024 * 1024
DISCARD_TIMEOUT_S = 5.0
BODY_TIMEOUT_S = 600  # a client that stops sending its body gets a 408 (Quart's BODY_TIMEOUT for the other routes)
_JSON = (b"content-type", b"application/json")
_SSE = [(b"cache-control", b"no-cache"), (b"x-accel-buffering", b"no"), (b"content-type", b"text/event-stream")]


def error_body(exc: ProxyError) -> bytes:
    """The body of every error response, from both paths (COMPAT.md, Errors)."""
    return dumps(exc.body())


def too_large_error(limit_mb: float) -> RequestTooLargeError:
    return RequestTooLargeError(f"the request body is larger than {limit_mb:g} MB")


def internal_error() -> ProxyError:
    """The 500 for an unexpected exception; the caller has logged it with its traceback."""
    return ProxyError("internal error; the proxy log has the details")


class _ClientLeft(Exception):
    """The client disconnected before it had sent the whole body: nobody to answer."""


class _Headers:
    """The `get` that auth.extract_key wants, over ASGI's raw header list: case-insensitive, first one wins."""

    __slots__ = ("_raw",)

    def __init__(self, raw: list[tuple[bytes, bytes]]) -> None:
        self._raw = raw

    def get(self, key: str, /) -> str | None:
        name = key.lower().encode("latin-1")
        for found, value in self._raw:
            if found.lower() == name:
                return value.decode("latin-1")
        return None


class FastPath:
    """ASGI middleware serving POSTs on the LLM routes; everything else goes on to `app` (Quart)."""

    def __init__(self, gw: Gateway, app: ASGIApp) -> None:
        self.gw = gw
        self.app = app
        self.max_body_bytes = int(gw.config.general.max_request_size_mb * 1024 * 1024)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        call = _route(scope) if scope["type"] == "http" and scope["method"] == "POST" else None
        if call is None:
            await self.app(scope, receive, send)
        else:
            await self._serve(call, scope, receive, send)

    async def _serve(self, call: CallType, scope: Scope, receive: Receive, send: Send) -> None:
        # As in Quart: a client that disconnects cancels the call, which closes the upstream and settles it.
        async with trio.open_nursery() as nursery:
            try:
                answer, first = await self._answer(call, scope, receive, nursery)
            except ProxyError as exc:
                await _send_error(send, exc)
            except _ClientLeft:
                pass
            except Exception:
                log.exception("unexpected error while handling a request")
                await _send_error(send, internal_error())
            else:
                if answer.chunks is None:
                    await _send_json(send, 200, answer.headers, first)
                else:
                    await _send_stream(send, answer.headers, first, answer.chunks)
            nursery.cancel_scope.cancel()

    async def _answer(
        self, call: CallType, scope: Scope, receive: Receive, nursery: trio.Nursery
    ) -> tuple[Answer, bytes]:
        """The answer, and its body or (for a stream) its first chunk; errors until then are JSON errors."""
        headers = _Headers(scope["headers"])
        principal = await self.gw.authenticate(headers)  # before reading the body, as on the Quart routes
        raw = await self._read_body(receive, headers.get("content-length"))
        # The body is in: from here on receive() only reports a disconnect, which cancels the call.
        nursery.start_soon(_cancel_on_disconnect, receive, nursery.cancel_scope)
        answer = await llm.answer(self.gw, call, principal, raw)
        if answer.chunks is None:
            return answer, answer.body or b""
        # Take the first chunk now: the generator holds a budget reservation and a rate-limit slot that only
        # its `finally` settles, which an unstarted generator never runs. Errors so far become JSON errors.
        try:
            return answer, await answer.chunks.__anext__()
        except StopAsyncIteration:
            return answer, b""

    async def _read_body(self, receive: Receive, declared: str | None) -> bytes:
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            await _discard_rest(receive)
            raise too_large_error(self.gw.config.general.max_request_size_mb)
        parts: list[bytes] = []
        size = 0
        with trio.move_on_after(BODY_TIMEOUT_S):
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise _ClientLeft
                data: bytes = message.get("body", b"")
                size += len(data)
                more = message.get("more_body", False)
                if size > self.max_body_bytes:  # hold no more than the limit
                    if more:
                        await _discard_rest(receive)
                    raise too_large_error(self.gw.config.general.max_request_size_mb)
                if not more:
                    return b"".join([*parts, data]) if parts else data
                parts.append(data)
        raise InvalidRequestError(RequestTimeout.description or "request timeout", status=408)


async def _discard_rest(receive: Receive) -> None:
    """Read and drop what the client still sends, within bounds, before answering 413: a client still
    uploading when the answer comes and the connection closes sees a reset, not the 413."""
    dropped = 0
    with trio.move_on_after(DISCARD_TIMEOUT_S):
        while dropped <= DISCARD_MAX_BYTES:
            message = await receive()
            dropped += len(message.get("body", b""))
            if message["type"] == "http.disconnect" or not message.get("more_body", False):
                return


def _route(scope: Scope) -> CallType | None:
    """The LLM call for this request's path, seen as Quart sees it (root_path removed, absolute-form parsed)."""
    path: str = scope["path"]
    if path[:1] != "/":
        path = urlparse(path).path
    root_path: str = scope.get("root_path", "")
    if root_path:
        if path == root_path or not path.startswith(root_path):
            return None
        path = path[len(root_path) :]
    return llm.call_type(path)


async def _cancel_on_disconnect(receive: Receive, scope: trio.CancelScope) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
    scope.cancel()


def _encode(headers: dict[str, str]) -> list[tuple[bytes, bytes]]:
    return [(name.lower().encode(), value.encode()) for name, value in headers.items()]


async def _send_json(send: Send, status: int, headers: dict[str, str], body: bytes) -> None:
    # Answer headers first, then content-type and content-length: the order Quart sent them in.
    raw = [*_encode(headers), _JSON, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def _send_error(send: Send, exc: ProxyError) -> None:
    body = error_body(exc)
    raw = [_JSON, (b"content-length", str(len(body)).encode()), *_encode(exc.headers)]
    await send({"type": "http.response.start", "status": exc.status, "headers": raw})
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def _send_stream(send: Send, headers: dict[str, str], first: bytes, chunks: AsyncGenerator[bytes, None]) -> None:
    # aclosing: a client leaving mid-stream (the nursery is cancelled) closes the upstream at once, not at GC.
    async with aclosing(chunks):
        # The first chunk is in hand: the head waits for it and both leave in one write (onewrite.py).
        token = BODY_FOLLOWS.set(bool(first))
        try:
            await send({"type": "http.response.start", "status": 200, "headers": [*_encode(headers), *_SSE]})
        finally:
            BODY_FOLLOWS.reset(token)
        if first:
            await send({"type": "http.response.body", "body": first, "more_body": True})
        async for data in chunks:
            await send({"type": "http.response.body", "body": data, "more_body": True})
    await send({"type": "http.response.body", "body": b"", "more_body": False})
