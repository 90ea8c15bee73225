"""A tiny HTTP/1.1 server connection on trio + h11.

Hand-rolled rather than hypercorn so the fakes control the socket itself: they can
cut a chunked body half-way, stall forever, and notice the moment a client hangs up
(a read returning EOF), which a full ASGI server hides from the application.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import h11
import trio

RECEIVE_BYTES = 65536
MAX_BODY_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True)
class HttpRequest:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes


class HttpConnection:
    """One server-side HTTP/1.1 connection: read requests, write (possibly streamed) responses."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self._stream = stream
        self._h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_BODY_BYTES)

    async def read_request(self) -> HttpRequest | None:
        """The next request, or None when the client closed the connection or spoke nonsense."""
        start: h11.Request | None = None
        body = bytearray()
        while True:
            try:
                event = self._h11.next_event()
            except h11.RemoteProtocolError:
                return None
            if event is h11.NEED_DATA:
                self._h11.receive_data(await self._receive())
            elif isinstance(event, h11.Request):
                start = event
            elif isinstance(event, h11.Data):
                body += event.data
                if len(body) > MAX_BODY_BYTES:
                    return None
            elif isinstance(event, h11.EndOfMessage) and start is not None:
                return _request(start, bytes(body))
            else:  # ConnectionClosed, PAUSED: nothing more to serve on this connection
                return None

    async def respond(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        headers = [*headers, ("content-length", str(len(body)))]
        data = self._h11.send(h11.Response(status_code=status, headers=headers)) or b""
        if body:
            data += self._h11.send(h11.Data(data=body)) or b""
        data += self._h11.send(h11.EndOfMessage()) or b""
        await self._stream.send_all(data)

    async def start_stream(self, status: int, headers: list[tuple[str, str]]) -> None:
        # No content-length: h11 picks chunked transfer-encoding for HTTP/1.1 clients.
        await self._stream.send_all(self._h11.send(h11.Response(status_code=status, headers=headers)) or b"")

    async def send_chunk(self, data: bytes) -> None:
        await self._stream.send_all(self._h11.send(h11.Data(data=data)) or b"")

    async def finish_stream(self, data: bytes = b"") -> None:
        # The last chunk and the end of the body go out in one write, so a client that hangs
        # up as soon as it has read the final event never looks like an early disconnect.
        out = (self._h11.send(h11.Data(data=data)) or b"") if data else b""
        out += self._h11.send(h11.EndOfMessage()) or b""
        await self._stream.send_all(out)

    def next_cycle(self) -> bool:
        """Prepare for the next keep-alive request; False when the connection must close."""
        if self._h11.our_state is h11.DONE and self._h11.their_state is h11.DONE:
            self._h11.start_next_cycle()
            return True
        return False

    async def run_unless_peer_leaves(self, work: Callable[[], Awaitable[object]]) -> bool:
        """Run `work` while watching the socket; False if the client went away first."""
        completed = False
        async with trio.open_nursery() as nursery:

            async def watch() -> None:
                await self._wait_peer_gone()
                nursery.cancel_scope.cancel()

            nursery.start_soon(watch)
            try:
                await work()
                completed = True
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass  # the send failed: the peer is gone
            nursery.cancel_scope.cancel()
        return completed

    async def _wait_peer_gone(self) -> None:
        while True:
            data = await self._receive()
            if not data:
                return
            # A pipelined next request: keep it for h11, it is not a hang-up.
            self._h11.receive_data(data)

    async def _receive(self) -> bytes:
        try:
            return bytes(await self._stream.receive_some(RECEIVE_BYTES))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return b""


def _request(start: h11.Request, body: bytes) -> HttpRequest:
    headers: dict[str, str] = {}
    for name, value in start.headers:
        key, text = name.decode("latin-1").lower(), value.decode("latin-1")
        headers[key] = f"{headers[key]}, {text}" if key in headers else text
    path, _, query = start.target.decode("latin-1").partition("?")
    return HttpRequest(start.method.decode("ascii"), path, query, headers, body)
