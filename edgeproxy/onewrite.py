"""One write per answer, and hypercorn's socket reads and writes without trio's extra scheduler passes.

hypercorn's trio server sends an HTTP/1.1 response's head and its body in two.

hypercorn writes the head (status line and headers) when the app sends `http.response.start`, then the body.
On a TCP_NODELAY socket (trio sets it) each write is a system call, a packet and a wake-up of the client, and
for each hypercorn takes its send lock and a shielded cancel scope. Measured with callgrind (instructions per
proxied call, master key, against nginx): 5 % fewer with one write, and one send fewer of three (strace).

`install()` wraps hypercorn's `TCPServer.protocol_send` so that a head which announces a `content-length` waits
for the next write on its connection and leaves with it. Only such a head waits, because its body follows at
once: hypercorn ends every response with a write (an empty one when the body was empty), so the wait ends with
the response at the latest. A streamed answer's head (chunked, no length) waits only when the app says its
first chunk is in hand (`BODY_FOLLOWS`, set by the LLM fast path around that head): the head and the first
chunk then reach the client in one packet, its first token a write and a wake-up sooner. Other streamed
answers and informational heads (a `100 Continue` is waited for by its client) are sent at once, as before;
a head still held when the connection closes is sent first.

Writes go to the socket directly when it takes them whole (see `directio`), empty ones are dropped, and a send
that meets the connection's shutdown in another task is not logged as an error (`_send`). Requests are read
from the socket directly too (`_read_requests`, hypercorn's `_read_data` loop with `directio.read`): one pass
through the scheduler fewer per request. TLS connections keep hypercorn's own reads and writes.

This changes how hypercorn reads and writes, not what: the bytes on the wire are the same. It replaces two
methods of a pinned dependency (`hypercorn<0.19` in pyproject.toml); tests/edgeproxy/test_onewrite.py fails
if `protocol_send` stops seeing the head and the body as separate writes or the reads stop going through here.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import Any

import trio
from hypercorn.events import Closed, Event, RawData
from hypercorn.trio.tcp_server import MAX_RECV, TCPServer

from edgeproxy import directio

_HELD = "_edgeproxy_held_head"
_INSTALLED = "_edgeproxy_one_write"
# True while an app sends a head whose body's first write follows at once (it is in the app's hands). hypercorn
# writes in the task that calls the app's `send`, so the app's context is the writer's.
BODY_FOLLOWS: ContextVar[bool] = ContextVar("edgeproxy_body_follows", default=False)


def waits_for_body(data: bytes) -> bool:
    """A final response head whose body is the next write: it has a content-length, or the app said so."""
    return (
        data.startswith(b"HTTP/1.1 ")
        and data[9:10] != b"1"  # 1xx: informational, its client waits for it
        and data.endswith(b"\r\n\r\n")
        and (BODY_FOLLOWS.get() or b"\r\ncontent-length:" in data.lower())
    )


async def _send(server: Any, original: Callable[[TCPServer, Event], Awaitable[None]], event: RawData) -> None:
    """Write `event`'s bytes: straight to the socket when it takes them whole, else the usual way.

    - Empty writes are dropped: h11 ends a body with a length with one, and hypercorn's send of nothing took its
      send lock, a shielded cancel scope and a pass through trio's scheduler.
    - On a plain socket (not TLS) whose send lock is free, `directio.write_now` (trio's send_all ends with a
      scheduler pass even when the socket took everything); the rest, if any, goes through hypercorn under its
      lock, which it takes before it yields, so nothing can come in between.
    - A send on a socket another task is shutting down is handled as hypercorn handles one on a closed socket.
      hypercorn closes a connection (its last request answered with `connection: close`, or the client gone)
      in the task that notices, with `send_eof` outside its send lock, and trio's `send_eof` yields inside its
      check for concurrent sends: an answer's last write still on its way in the app's task raised trio's
      BusyResourceError, logged as "Error in ASGI Framework" with a traceback (a client reading
      `connection: close` answers and leaving at once met it every few connections).
    """
    data = event.data
    if not data:
        return
    stream = server.stream
    if isinstance(stream, trio.SocketStream) and not server.send_lock.locked():
        try:
            sent = directio.write_now(stream.socket.fileno(), data)
        except OSError:
            await server.protocol.handle(Closed())  # as hypercorn handles a send that failed
            return
        if sent == len(data):
            return
        event = RawData(data[sent:], event.address)
    try:
        await original(server, event)
    except trio.BusyResourceError:
        await server.protocol.handle(Closed())


def install() -> None:
    """Wrap `TCPServer.protocol_send` (once per process)."""
    if getattr(TCPServer, _INSTALLED, False):
        return
    original: Callable[[TCPServer, Event], Awaitable[None]] = TCPServer.protocol_send

    async def protocol_send(self: Any, event: Event) -> None:
        held: bytes | None = getattr(self, _HELD, None)
        if isinstance(event, RawData):
            if held is None:
                if waits_for_body(event.data):
                    setattr(self, _HELD, event.data)
                    return
            else:
                setattr(self, _HELD, None)
                event = RawData(held + event.data, event.address)
        elif held is not None and isinstance(event, Closed):
            setattr(self, _HELD, None)
            await _send(self, original, RawData(held))
        if isinstance(event, RawData):
            await _send(self, original, event)
        else:
            await original(self, event)

    read_data = TCPServer._read_data

    async def _read_data(self: Any) -> None:
        if not isinstance(self.stream, trio.SocketStream):
            await read_data(self)  # TLS: the socket's bytes are not the requests'
            return
        await _read_requests(self)

    TCPServer.protocol_send = protocol_send  # type: ignore[method-assign]
    TCPServer._read_data = _read_data  # type: ignore[method-assign]
    setattr(TCPServer, _INSTALLED, True)


async def _read_requests(server: Any) -> None:
    """hypercorn's `TCPServer._read_data` on the socket directly: the same loop, with `directio.read` in place
    of trio's `receive_some` (which ends with a pass through the scheduler after data that was already there)."""
    sock = server.stream.socket
    timeout = server.config.read_timeout or math.inf
    while True:
        try:
            data = directio.read_now(sock.fileno(), MAX_RECV)
            if data is None:
                data = await directio.read(sock, MAX_RECV, timeout, found_nothing=True)
            else:
                # It was there already (an upload, pipelined requests): still let other tasks run between reads,
                # so a client that keeps sending cannot hold the event loop.
                await trio.lowlevel.checkpoint()
        except (OSError, trio.ClosedResourceError, trio.TooSlowError):
            break
        await server.protocol.handle(RawData(data))
        if data == b"":
            break
    await server.protocol.handle(Closed())
