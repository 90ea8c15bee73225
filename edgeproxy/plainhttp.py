"""HTTP/1.1 to plain-HTTP upstreams (Ollama, MLX, vLLM on the LAN) without httpcore: the pool upstream.py sends
through for `http://` deployments. TLS deployments keep httpcore.

Why: what httpcore does around a request was a quarter of a streamed call's time to first token, measured with
timestamps in the proxy (2.1 GHz Xeon, a stream's first chunk after a second of dripping: 0.35-0.57 ms from
handing httpcore the request to its write, two passes through trio's scheduler among them, and 0.12 ms from
the response head to the first chunk), and ~40 % of relaying each further chunk (its pool bookkeeping, its
lock, trace hooks and h11's state machine around every read). An LLM upstream needs little of HTTP/1.1: one
request at a time per connection, a head, a body framed by content-length, chunks or the connection's end.

`PlainPool` has the interface upstream.py's `Pool` names, taking an `httpcore.Request` and giving an
`httpcore.Response` whose stream reads the body as it arrives, so the callers and their error mapping stay as
they are: failures raise httpcore's exceptions (ConnectError, ReadTimeout, RemoteProtocolError, ...).

- A connection is used again when its answer was read to the end and neither side said `connection: close`;
  idle ones are kept `keepalive_expiry_s`, the last used first. One found closed (or sending unasked bytes)
  while idle is dropped before it is used, as httpcore does.
- At most `max_connections` exchanges at once; more wait up to the pool timeout (PoolTimeout).
- The request goes out in one write (head and body together, up to JOIN_MAX_BYTES), straight to the socket
  when it takes it whole (`directio`); reads go to the socket and wait with trio only when nothing is there.
- An answer given up before its end (a client that left, an error) closes its connection: what is left of it
  would be read as the next answer.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Iterable

import httpcore
import trio

from edgeproxy import directio
from edgeproxy.corked import JOIN_MAX_BYTES  # past it, head and body go as they are (joining copies the body)

READ_BYTES = 65536
MAX_HEAD_BYTES = 64 * 1024  # a response head larger than this is not an LLM server's
MAX_CHUNK_LINE = 4096  # a chunk-size line with extensions, well past any real one
_NO_BODY_STATUS = frozenset({204, 304})


class PlainPool:
    """Keep-alive HTTP/1.1 connections to plain-HTTP origins, at most `max_connections` in use at once."""

    def __init__(self, max_connections: int, keepalive_expiry_s: float = 30.0) -> None:
        self._slots = trio.Semaphore(max_connections)
        self._idle: dict[tuple[bytes, int], list[_Connection]] = {}  # per origin, the last used at the end
        self._active: set[_Connection] = set()  # closed with the pool, as httpcore's are: shutdown ends their reads
        self._keepalive_expiry_s = keepalive_expiry_s
        self._closed = False

    async def handle_async_request(self, request: httpcore.Request) -> httpcore.Response:
        url = request.url
        if url.scheme != b"http":
            raise httpcore.UnsupportedProtocol(f"{url.scheme!r} is not plain HTTP")
        timeouts: dict[str, float | None] = request.extensions.get("timeout", {})
        read_timeout = _seconds(timeouts.get("read"))
        origin = (url.host, url.port or 80)
        await self._take_slot(_seconds(timeouts.get("pool")))
        connection: _Connection | None = None
        try:
            connection = self._idle_connection(origin)
            if connection is None:
                connection = await _Connection.open(origin, _seconds(timeouts.get("connect")))
            self._active.add(connection)
            await connection.send(_head(request), await _body(request), _seconds(timeouts.get("write")))
            status, headers, body = await connection.read_head(read_timeout, head_only=request.method == b"HEAD")
        except BaseException:
            if connection is not None:
                self._give_back(origin, connection, reusable=False)
            else:
                self._slots.release()
            raise
        stream = _BodyStream(self, origin, connection, body, read_timeout)
        return httpcore.Response(status, headers=headers, content=stream, extensions={"http_version": b"HTTP/1.1"})

    async def aclose(self) -> None:
        self._closed = True
        for connections in self._idle.values():
            for connection in connections:
                connection.close()
        self._idle.clear()
        for connection in self._active:
            connection.close()

    async def _take_slot(self, timeout_s: float) -> None:
        try:
            self._slots.acquire_nowait()  # no pass through the scheduler when a connection is free
        except trio.WouldBlock:
            with trio.move_on_after(timeout_s):
                await self._slots.acquire()
                return
            raise httpcore.PoolTimeout(f"no connection free within {timeout_s:g} s") from None

    def _idle_connection(self, origin: tuple[bytes, int]) -> _Connection | None:
        connections = self._idle.get(origin)
        if not connections:
            return None
        expired_before = trio.current_time() - self._keepalive_expiry_s
        while connections and connections[0].idle_since < expired_before:
            connections.pop(0).close()
        while connections:
            connection = connections.pop()
            if connection.still_open():
                return connection
            connection.close()
        return None

    def _give_back(self, origin: tuple[bytes, int], connection: _Connection, reusable: bool) -> None:
        self._slots.release()
        self._active.discard(connection)
        if reusable and not self._closed:
            connection.idle_since = trio.current_time()
            self._idle.setdefault(origin, []).append(connection)
        else:
            connection.close()


def _seconds(timeout: float | None) -> float:
    return math.inf if timeout is None else timeout


def _head(request: httpcore.Request) -> bytes:
    lines = [request.method, b" ", request.url.target, b" HTTP/1.1\r\n"]
    for name, value in request.headers:
        # Values come from the config and our own code; a line break in one would start another header.
        if b"\n" in value or b"\r" in value or b"\n" in name or b"\r" in name or b":" in name:
            raise httpcore.LocalProtocolError(f"header {name!r} has a character a header cannot hold")
        lines += (name, b": ", value, b"\r\n")
    lines.append(b"\r\n")
    return b"".join(lines)


async def _body(request: httpcore.Request) -> bytes:
    stream = request.stream
    if isinstance(stream, Iterable):
        return b"".join(stream)
    return b"".join([piece async for piece in stream])  # type: ignore[union-attr]


class _Framing:
    """How a response body ends: after `length` bytes, with the zero-size chunk, or with the connection."""

    def __init__(self, length: int | None, chunked: bool, keep_alive: bool) -> None:
        self.length = length
        self.chunked = chunked
        self.keep_alive = keep_alive and (chunked or length is not None)


class _Connection:
    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.socket = stream.socket
        self.buffer = b""
        self.idle_since = 0.0

    @classmethod
    async def open(cls, origin: tuple[bytes, int], timeout_s: float) -> _Connection:
        host = origin[0].decode("ascii")
        try:
            with trio.fail_after(timeout_s):
                stream = await trio.open_tcp_stream(host, origin[1])  # trio sets TCP_NODELAY
        except trio.TooSlowError:
            raise httpcore.ConnectTimeout(f"no connection within {timeout_s:g} s") from None
        except OSError as exc:
            raise httpcore.ConnectError(str(exc) or type(exc).__name__) from exc
        return cls(stream)

    def still_open(self) -> bool:
        """An idle connection the server has not closed (nor sent anything on, which would be out of turn)."""
        try:
            return directio.read_now(self.socket.fileno(), 1) is None
        except OSError:
            return False

    def close(self) -> None:
        self.socket.close()

    async def send(self, head: bytes, body: bytes, timeout_s: float) -> None:
        pieces = [head + body] if len(body) <= JOIN_MAX_BYTES else [head, body]
        try:
            for data in pieces:
                sent = directio.write_now(self.socket.fileno(), data)
                if sent < len(data):
                    with trio.fail_after(timeout_s):
                        await self.stream.send_all(memoryview(data)[sent:])
        except trio.TooSlowError:
            raise httpcore.WriteTimeout(f"request not sent within {timeout_s:g} s") from None
        except (OSError, trio.BrokenResourceError):
            # As httpcore does: a server may answer (413, say) and close before reading the whole request, so
            # the answer is still read; a connection that is really gone fails there.
            pass

    async def read(self, timeout_s: float) -> bytes:
        try:
            return await directio.read(self.socket, READ_BYTES, timeout_s)
        except trio.TooSlowError:
            raise httpcore.ReadTimeout(f"no answer within {timeout_s:g} s") from None
        except (OSError, trio.ClosedResourceError) as exc:
            raise httpcore.ReadError(str(exc) or type(exc).__name__) from exc

    async def read_head(self, timeout_s: float, head_only: bool) -> tuple[int, list[tuple[bytes, bytes]], _Framing]:
        """The status, headers and body framing of the next final (not 1xx) response."""
        while True:
            while (end := self.buffer.find(b"\r\n\r\n")) < 0:
                if len(self.buffer) > MAX_HEAD_BYTES:
                    raise httpcore.RemoteProtocolError("response head too large")
                data = await self.read(timeout_s)
                if not data:
                    raise httpcore.RemoteProtocolError("Server disconnected without sending a response.")
                self.buffer += data
            head, self.buffer = self.buffer[:end], self.buffer[end + 4 :]
            status, headers, http10 = _parse_head(head)
            if status >= 200:
                break
            if status == 101:
                raise httpcore.RemoteProtocolError("the upstream switched protocols")
        return status, headers, _framing(status, headers, http10, head_only)


def _parse_head(head: bytes) -> tuple[int, list[tuple[bytes, bytes]], bool]:
    lines = head.split(b"\r\n")
    version, _, rest = lines[0].partition(b" ")
    code = rest[:3]
    if version not in (b"HTTP/1.1", b"HTTP/1.0") or len(code) != 3 or not code.isdigit():
        raise httpcore.RemoteProtocolError(f"not an HTTP/1.1 status line: {lines[0][:40]!r}")
    headers: list[tuple[bytes, bytes]] = []
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon or not name or name != name.strip():
            raise httpcore.RemoteProtocolError(f"malformed response header line: {line[:40]!r}")
        headers.append((name, value.strip()))
    return int(code), headers, version == b"HTTP/1.0"


def _framing(status: int, headers: list[tuple[bytes, bytes]], http10: bool, head_only: bool) -> _Framing:
    lengths: set[bytes] = set()
    chunked = False
    keep_alive = not http10
    for name, value in headers:
        lowered = name.lower()
        if lowered == b"content-length":
            lengths.add(value)
        elif lowered == b"transfer-encoding":
            chunked = chunked or b"chunked" in value.lower()
        elif lowered == b"connection":
            tokens = {token.strip() for token in value.lower().split(b",")}
            keep_alive = b"keep-alive" in tokens if http10 else b"close" not in tokens
    if head_only or status in _NO_BODY_STATUS:
        return _Framing(0, False, keep_alive)
    if chunked:
        return _Framing(None, True, keep_alive)
    if lengths:
        if len(lengths) > 1 or not next(iter(lengths)).isdigit():
            raise httpcore.RemoteProtocolError("invalid content-length in the response")
        return _Framing(int(next(iter(lengths))), False, keep_alive)
    return _Framing(None, False, False)  # the body ends with the connection


class _BodyStream:
    """A response body as it arrives (httpcore.Response's stream); the connection goes back at its end."""

    def __init__(
        self, pool: PlainPool, origin: tuple[bytes, int], connection: _Connection, framing: _Framing, timeout_s: float
    ) -> None:
        self._pool = pool
        self._origin = origin
        self._connection: _Connection | None = connection
        self._framing = framing
        self._timeout_s = timeout_s

    async def __aiter__(self) -> AsyncIterator[bytes]:
        connection = self._connection
        if connection is None:
            return
        framing = self._framing
        if framing.chunked:
            pieces = self._chunks(connection)
        elif framing.length is not None:
            pieces = self._sized(connection, framing.length)
        else:
            pieces = self._until_closed(connection)
        async for piece in pieces:
            yield piece
        self._finish(framing.keep_alive)

    async def aclose(self) -> None:
        self._finish(reusable=False)  # a no-op after the end: the connection went back then

    def _finish(self, reusable: bool) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            self._pool._give_back(self._origin, connection, reusable and not connection.buffer)

    async def _more(self, connection: _Connection) -> bytes:
        data = await connection.read(self._timeout_s)
        if not data:
            raise httpcore.RemoteProtocolError("peer closed connection without sending complete message body")
        return data

    async def _sized(self, connection: _Connection, length: int) -> AsyncIterator[bytes]:
        left = length
        data, connection.buffer = connection.buffer[:left], connection.buffer[left:]
        while True:
            if data:
                left -= len(data)
                yield data
            if left <= 0:
                return
            data = await self._more(connection)
            if len(data) > left:
                data, connection.buffer = data[:left], data[left:]

    async def _until_closed(self, connection: _Connection) -> AsyncIterator[bytes]:
        data, connection.buffer = connection.buffer, b""
        while True:
            if data:
                yield data
            data = await connection.read(self._timeout_s)
            if not data:
                return

    async def _chunks(self, connection: _Connection) -> AsyncIterator[bytes]:
        """The chunked body decoded: each yield is all the data one read completed (a read can hold many chunks)."""
        buffer, connection.buffer = connection.buffer, b""
        left = 0  # data bytes still to come of the current chunk
        crlf = False  # the CRLF after a chunk's data is still to come
        while True:
            decoded: list[bytes] = []
            at = 0
            while True:
                if left:
                    piece = buffer[at : at + left]
                    if piece:
                        decoded.append(piece)
                        at += len(piece)
                        left -= len(piece)
                    if left:
                        break
                    crlf = True
                if crlf:
                    if len(buffer) - at < 2:
                        break
                    if buffer[at : at + 2] != b"\r\n":
                        raise httpcore.RemoteProtocolError("chunk data not followed by CRLF")
                    at += 2
                    crlf = False
                line_end = buffer.find(b"\r\n", at)
                if line_end < 0:
                    if len(buffer) - at > MAX_CHUNK_LINE:
                        raise httpcore.RemoteProtocolError("chunk-size line too long")
                    break
                size = _chunk_size(buffer[at:line_end])
                at = line_end + 2
                if size == 0:
                    if decoded:
                        yield b"".join(decoded)
                    connection.buffer = await self._trailers(connection, buffer[at:])
                    return
                left = size
            buffer = buffer[at:]
            if decoded:
                yield b"".join(decoded)
            buffer += await self._more(connection)

    async def _trailers(self, connection: _Connection, buffer: bytes) -> bytes:
        """Skip the trailer section after the last chunk; what follows it stays in the connection's buffer."""
        while True:
            if buffer.startswith(b"\r\n"):
                return buffer[2:]
            end = buffer.find(b"\r\n\r\n")
            if end >= 0:
                return buffer[end + 4 :]
            if len(buffer) > MAX_HEAD_BYTES:
                raise httpcore.RemoteProtocolError("chunked trailers too large")
            buffer += await self._more(connection)


def _chunk_size(line: bytes) -> int:
    digits = line.split(b";", 1)[0].strip()
    if not digits or len(digits) > 16:
        raise httpcore.RemoteProtocolError(f"invalid chunk size line: {line[:40]!r}")
    try:
        return int(digits, 16)
    except ValueError:
        raise httpcore.RemoteProtocolError(f"invalid chunk size line: {line[:40]!r}") from None
