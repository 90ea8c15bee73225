"""A small Redis client native to trio, for the hot path: pipelined commands over a pool of trio streams.

Why not redis-py here: its sync client must run in a worker thread under trio (its asyncio client does not run
under trio at all), and a thread hop plus redis-py's own per-command work cost ~210 µs per round trip on this
machine against ~70 µs for the same GET sent on a trio socket. A request with rate limits and a response cache
makes one round trip (admission + lookup) and one send (settlement + store), so this is most of what Redis
costs a request.

Commands nobody waits for (rate-limit settlements, cache stores) are sent with `send`, each behind a
`CLIENT REPLY SKIP`: Redis sends no reply, so there is nothing to wait for or read, and the connection goes back
to the pool at once (a send costs ~17 µs of CPU against ~70 µs for a round trip). A server that refuses
`CLIENT REPLY` (an ACL, a proxy in front of Redis) is found when the first connection is opened; `send` then
waits for the replies like `execute`. Unanswered, a write into a connection the server has just closed can be
lost without an error; the next one fails and goes on a new connection.

Scope: one server reached over TCP (`redis://`) or a Unix socket (`unix://`), RESP2, AUTH and SELECT on connect.
Everything else (TLS, Sentinel, cluster, pub/sub, SCAN) stays on redis-py in `redisclient.py`. Error replies
are returned in place as `ReplyError` values (a pipeline's other replies stay usable); a broken connection or
a timeout raises `RespConnectionError` and the connection is dropped, never returned to the pool.
"""

from __future__ import annotations

import math
import select
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

import trio

from edgeproxy import directio

Arg = bytes | str | int | float
Command = Sequence[Arg]
READ_SIZE = 65536
_SKIP_REPLY: Command = ("CLIENT", "REPLY", "SKIP")


class ReplyError(Exception):
    """Redis answered a command with an error (`-ERR ...`, `-NOSCRIPT ...`)."""


class RespConnectionError(Exception):
    """Redis could not be reached, closed the connection, timed out, or sent something that is not RESP."""


@dataclass(frozen=True, slots=True)
class Endpoint:
    host: str = "127.0.0.1"
    port: int = 6379
    path: str | None = None  # a Unix socket
    db: int = 0
    username: str | None = field(default=None, repr=False)
    password: str | None = field(default=None, repr=False)


def endpoint_of(url: str) -> Endpoint | None:
    """Where a `redis://` or `unix://` URL points; None for what this client does not speak (TLS, options)."""
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "unix") or parts.query.replace("db=", "").strip("0123456789"):
        return None
    username = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password is not None else None
    query_db = parts.query[3:] if parts.query.startswith("db=") else ""
    if parts.scheme == "unix":
        return Endpoint(path=parts.path, db=int(query_db or 0), username=username, password=password)
    db_text = parts.path.lstrip("/") or query_db or "0"
    if not db_text.isdigit():
        return None
    return Endpoint(parts.hostname or "127.0.0.1", parts.port or 6379, None, int(db_text), username, password)


def encode(commands: Sequence[Command], *, skip_replies: bool = False) -> bytes:
    """RESP for a pipeline; `skip_replies`: each command behind a CLIENT REPLY SKIP (encoded once, here)."""
    # Pieces joined once. A long argument (a cache entry's value) is a piece of its own, copied only by the join;
    # short ones are formatted whole, one piece each.
    parts: list[bytes] = []
    append = parts.append
    for command in commands:
        if skip_replies:
            append(_SKIP_REPLY_RESP)
        append(b"*%d\r\n" % len(command))
        for arg in command:
            data = arg if isinstance(arg, bytes) else str(arg).encode()
            if len(data) < 128:
                append(b"$%d\r\n%s\r\n" % (len(data), data))
            else:
                parts += (b"$%d\r\n" % len(data), data, b"\r\n")
    return b"".join(parts)


_SKIP_REPLY_RESP = encode([_SKIP_REPLY])


class Push(list[Any]):
    """A RESP3 push message (`>`): what Redis sends unasked, such as key-tracking invalidations."""


class _Incomplete(Exception):
    """The buffer ends inside a reply: read more and parse it again from its start."""


def _parse(buf: bytearray, pos: int) -> tuple[Any, int]:
    """One reply starting at `pos`: (value, position after it)."""
    end = buf.find(b"\r\n", pos)
    if end < 0:
        raise _Incomplete
    kind, line = buf[pos : pos + 1], bytes(buf[pos + 1 : end])
    pos = end + 2
    if kind == b"$":
        size = int(line)
        if size < 0:
            return None, pos
        if len(buf) < pos + size + 2:
            raise _Incomplete
        return bytes(buf[pos : pos + size]), pos + size + 2
    if kind == b":":
        return int(line), pos
    if kind == b"+":
        return line, pos
    if kind == b"-":
        return ReplyError(line.decode(errors="replace")), pos
    if kind == b"*":
        count = int(line)
        if count < 0:
            return None, pos
        items = []
        for _ in range(count):
            item, pos = _parse(buf, pos)
            items.append(item)
        return items, pos
    return _parse_resp3(kind, line, buf, pos)


def _parse_resp3(kind: bytes | bytearray, line: bytes, buf: bytearray, pos: int) -> tuple[Any, int]:
    """The types only a RESP3 connection (HELLO 3: key tracking, cache/tracking.py) receives."""
    if kind in (b">", b"~", b"%"):
        count = int(line) * (2 if kind == b"%" else 1)
        items: list[Any] = []
        for _ in range(count):
            item, pos = _parse(buf, pos)
            items.append(item)
        if kind == b"%":
            return dict(zip(items[::2], items[1::2], strict=True)), pos
        return (Push(items) if kind == b">" else items), pos
    if kind == b"_":
        return None, pos
    if kind == b"#":
        return line == b"t", pos
    if kind == b",":
        return float(line), pos
    if kind == b"(":
        return int(line), pos
    if kind in (b"=", b"!"):  # verbatim string, blob error: sized like a bulk string
        size = int(line)
        if len(buf) < pos + size + 2:
            raise _Incomplete
        data = bytes(buf[pos : pos + size])
        return (ReplyError(data.decode(errors="replace")) if kind == b"!" else data), pos + size + 2
    raise RespConnectionError(f"Redis sent a reply this client cannot read (type {kind!r})")


class Connection:
    """One connection, read and written directly (`directio`): a round trip is one pass through trio's
    scheduler, the wait for the reply, and a send none."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.fd = stream.socket.fileno()
        self.buf = bytearray()
        self._arrivals: select.poll | None = None  # for read_ready: has anything arrived?

    async def write(self, data: bytes, deadline: float = math.inf) -> None:
        """Write it all; trio.TooSlowError if the socket does not take the rest by `deadline`."""
        sent = directio.write_now(self.fd, data)
        if sent < len(data):
            with trio.CancelScope(deadline=deadline) as waited:
                await self.stream.send_all(memoryview(data)[sent:])
            if waited.cancelled_caught:
                raise trio.TooSlowError

    def read_ready(self) -> list[Any] | None:
        """The complete replies already received, without waiting (None: the server closed the connection).

        Asked on every cache miss (cache/tracking.py), which mostly finds nothing: a poll says so in a third of the
        time of a read that fails (0.5 against 1.6 µs, the exception's cost), and then nothing is parsed.
        """
        if self._arrivals is None:
            self._arrivals = select.poll()
            self._arrivals.register(self.fd, select.POLLIN)
        if not self._arrivals.poll(0):  # no data, no end of stream, no error
            if not self.buf:
                return []
            data = None  # only what `read` left behind (it stops at the count asked for)
        else:
            data = directio.read_now(self.fd, READ_SIZE)
        if data == b"":
            return None
        if data:
            self.buf += data
        replies: list[Any] = []
        while True:
            try:
                replies.append(self._take_reply())
            except _Incomplete:
                return replies

    async def read(self, count: int, deadline: float = math.inf) -> list[Any]:
        """`count` replies; trio.TooSlowError if they have not arrived by `deadline`."""
        replies: list[Any] = []
        while len(replies) < count:
            try:
                replies.append(self._take_reply())
            except _Incomplete:
                data = await directio.read(self.stream.socket, READ_SIZE, max(0.0, deadline - trio.current_time()))
                if not data:
                    raise RespConnectionError("Redis closed the connection") from None
                self.buf += data
        return replies

    def _take_reply(self) -> Any:
        """The first reply in the buffer, taken out of it; _Incomplete while it has not all arrived."""
        reply, end = _parse(self.buf, 0)
        del self.buf[:end]
        return reply


async def connect(endpoint: Endpoint) -> Connection:
    """A new connection, not set up (no AUTH, no SELECT); raises RespConnectionError."""
    try:
        if endpoint.path is not None:
            stream = await trio.open_unix_socket(endpoint.path)
        else:
            stream = await trio.open_tcp_stream(endpoint.host, endpoint.port)  # sets TCP_NODELAY
    except OSError as exc:
        raise RespConnectionError(f"ConnectionError: {exc}") from None
    return Connection(stream)


def auth_command(endpoint: Endpoint) -> list[Command]:
    """AUTH for the endpoint's credentials, when it has any."""
    if endpoint.password is None:
        return []
    return [["AUTH", *([endpoint.username] if endpoint.username else []), endpoint.password]]


class RespPool:
    """Up to `max_connections` connections to one Redis; `execute` sends commands as one pipeline."""

    def __init__(self, endpoint: Endpoint, *, max_connections: int, timeout_s: float) -> None:
        self.endpoint = endpoint
        self.timeout_s = timeout_s
        self._slots = trio.Semaphore(max_connections)
        self._idle: list[Connection] = []
        self._closed = False
        self.skips_replies: bool | None = None  # CLIENT REPLY SKIP works here; None until the first connection

    async def execute(self, commands: Sequence[Command]) -> list[Any]:
        """The replies, in order (error replies as ReplyError values); raises RespConnectionError."""
        return await self._in_slot(commands, answered=True)

    async def send(self, commands: Sequence[Command]) -> list[Any]:
        """Send commands without their replies (see the module docstring); raises RespConnectionError.

        Returns nothing (an empty list) where Redis skips the replies, so nothing tells whether they succeeded:
        for writes whose failure the caller would only log. Where it cannot, their replies.
        """
        return await self._in_slot(commands, answered=False)

    async def _in_slot(self, commands: Sequence[Command], answered: bool) -> list[Any]:
        # A free slot is taken without a turn of the event loop, which `async with` a Semaphore takes even then
        # (an epoll_wait per command when Redis is otherwise idle); the send and the read are checkpoints anyway.
        try:
            self._slots.acquire_nowait()
        except trio.WouldBlock:
            await self._slots.acquire()
        # One deadline for the whole exchange, and a cancel scope only where something is waited for: an
        # unanswered send that the socket takes at once (nearly always) makes none.
        deadline = trio.current_time() + self.timeout_s
        try:
            return await self._execute(commands, answered, deadline)
        except trio.TooSlowError:
            what = "answer" if answered else "take the commands"
            raise RespConnectionError(f"Redis did not {what} within {self.timeout_s:g} s") from None
        finally:
            self._slots.release()

    async def _execute(self, commands: Sequence[Command], answered: bool, deadline: float) -> list[Any]:
        reused = bool(self._idle)
        connection = self._idle.pop() if reused else await self._connect(deadline)
        try:
            return await self._use(connection, commands, answered, deadline)
        except RespConnectionError:
            if not reused:
                raise
        # An idle connection from before a Redis restart fails on first use; the command never ran there.
        return await self._use(await self._connect(deadline), commands, answered, deadline)

    async def _use(
        self, connection: Connection, commands: Sequence[Command], answered: bool, deadline: float
    ) -> list[Any]:
        """Send the commands and read their replies; unanswered, each goes behind a CLIENT REPLY SKIP."""
        skipped = not answered and bool(self.skips_replies)
        expected = 0 if skipped else len(commands)
        try:
            await connection.write(encode(commands, skip_replies=skipped), deadline)
            replies = await connection.read(expected, deadline)
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            await trio.aclose_forcefully(connection.stream)
            raise RespConnectionError(f"{type(exc).__name__}: {exc}") from None
        except BaseException:
            # Cancelled, timed out or unreadable mid-exchange: replies may still be on their way; drop it.
            await trio.aclose_forcefully(connection.stream)
            raise
        if self._closed:
            await trio.aclose_forcefully(connection.stream)
        else:
            self._idle.append(connection)
        return replies

    async def _connect(self, deadline: float) -> Connection:
        with trio.fail_at(deadline):
            return await self._open()

    async def _open(self) -> Connection:
        endpoint = self.endpoint
        connection = await connect(endpoint)
        stream = connection.stream
        setup = auth_command(endpoint)
        if endpoint.db:
            setup.append(["SELECT", endpoint.db])
        probing = self.skips_replies is None
        if probing:
            # When SKIP works, only the PING answers; when not, SKIP's error, the ECHO and the PING do.
            setup += [_SKIP_REPLY, ["ECHO", "skipped"], ["PING"]]
        if not setup:
            return connection
        try:
            await stream.send_all(encode(setup))
            replies = await connection.read(len(setup) - 2 if probing else len(setup))
            if probing and isinstance(replies[-1], ReplyError):
                replies = replies[:-1] + (await connection.read(2))[1:]  # the PING's
                skips = False
            else:
                skips = True
        except BaseException as exc:
            await trio.aclose_forcefully(stream)
            if isinstance(exc, OSError | trio.BrokenResourceError):
                raise RespConnectionError(f"{type(exc).__name__}: {exc}") from None
            raise
        for reply in replies:
            if isinstance(reply, ReplyError):
                await trio.aclose_forcefully(stream)
                raise RespConnectionError(f"Redis refused the connection setup: {reply}")
        if probing:
            self.skips_replies = skips
        return connection

    async def aclose(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, []
        for connection in idle:
            await trio.aclose_forcefully(connection.stream)
