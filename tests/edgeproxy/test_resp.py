"""The trio-native Redis client of the hot path, against real redis-server processes."""

from __future__ import annotations

import secrets
import socket
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from functools import partial
from typing import Any

import pytest
import redis
import trio
import trio.testing

from edgeproxy import directio
from edgeproxy.redisclient import LuaScript, RedisBackend, RedisUnavailable
from edgeproxy.redisconfig import RedisSettings
from edgeproxy.resp import (
    Connection,
    Endpoint,
    Push,
    ReplyError,
    RespConnectionError,
    RespPool,
    _Incomplete,
    _parse,
    endpoint_of,
)
from tests.e2e.redis_support import SHARED_REDIS_URL, free_port, private_redis, requires_redis
from tests.edgeproxy.steps import counting_steps

pytestmark = [pytest.mark.redis]


@pytest.fixture
def prefix() -> Iterator[str]:
    tag = f"edgeproxy-test-resp-{secrets.token_hex(5)}"
    yield tag
    with redis.Redis.from_url(SHARED_REDIS_URL) as client:
        found = list(client.scan_iter(match=f"{tag}*", count=10_000))
        if found:
            client.unlink(*found)


@pytest.fixture
async def pool() -> AsyncIterator[RespPool]:
    endpoint = endpoint_of(SHARED_REDIS_URL)
    assert endpoint is not None
    pool = RespPool(endpoint, max_connections=4, timeout_s=2.0)
    try:
        yield pool
    finally:
        await pool.aclose()


def test_urls_it_speaks_and_those_it_leaves_to_redis_py() -> None:
    assert endpoint_of("redis://:p%40ss@cache.lan:6380/2") == Endpoint("cache.lan", 6380, None, 2, None, "p@ss")
    assert endpoint_of("redis://me:pw@cache.lan") == Endpoint("cache.lan", 6379, None, 0, "me", "pw")
    assert endpoint_of("unix:///run/redis.sock?db=3") == Endpoint(path="/run/redis.sock", db=3)
    assert endpoint_of("rediss://cache.lan:6380/0") is None  # TLS: redis-py
    assert endpoint_of("redis://cache.lan/0?health_check_interval=5") is None  # options we don't implement


@requires_redis
async def test_a_pipeline_keeps_order_and_returns_error_replies_in_place(pool: RespPool, prefix: str) -> None:
    big = secrets.token_bytes(200_000)  # several reads' worth
    replies = await pool.execute(
        [
            ("SET", f"{prefix}:a", big, "PX", 60_000),
            ("GET", f"{prefix}:a"),
            ("GET", f"{prefix}:missing"),
            ("SET", f"{prefix}:word", "hello"),
            ("INCR", f"{prefix}:word"),  # an error reply between two good ones
            ("EVAL", "return {1, 'two', {3}, redis.call('GET', KEYS[1])}", 1, f"{prefix}:word"),
        ]
    )
    assert replies[0] == b"OK"
    assert replies[1] == big
    assert replies[2] is None
    assert isinstance(replies[4], ReplyError) and "not an integer" in str(replies[4])
    assert replies[5] == [1, b"two", [3], b"hello"]


@requires_redis
async def test_a_cancelled_command_does_not_leave_its_reply_for_the_next_caller(pool: RespPool, prefix: str) -> None:
    await pool.execute([("SET", f"{prefix}:k", "v")])
    with trio.move_on_after(0.1):
        await pool.execute([("BLPOP", f"{prefix}:list", 0)])  # blocks until cancelled
    await redis_push(f"{prefix}:list", "late")  # would be BLPOP's reply on its (dropped) connection
    assert await pool.execute([("GET", f"{prefix}:k")]) == [b"v"]


async def redis_push(key: str, value: str) -> None:
    with redis.Redis.from_url(SHARED_REDIS_URL) as client:
        client.rpush(key, value)


@requires_redis
async def test_an_idle_connection_killed_by_the_server_is_replaced_transparently(pool: RespPool, prefix: str) -> None:
    name = prefix.encode()
    await pool.execute([("CLIENT", "SETNAME", name)])
    with redis.Redis.from_url(SHARED_REDIS_URL) as admin:
        killed = [c for c in admin.client_list() if c.get("name") == prefix]
        assert len(killed) == 1
        admin.client_kill_filter(_id=killed[0]["id"])
    assert await pool.execute([("PING",)]) == [b"PONG"]


@requires_redis
async def test_a_send_on_an_idle_connection_killed_by_the_server_goes_on_a_new_one(prefix: str) -> None:
    endpoint = endpoint_of(SHARED_REDIS_URL)
    assert endpoint is not None
    pool = RespPool(endpoint, max_connections=1, timeout_s=2.0)
    try:
        await pool.execute([("CLIENT", "SETNAME", prefix)])
        with redis.Redis.from_url(SHARED_REDIS_URL) as admin:
            (killed,) = [c for c in admin.client_list() if c.get("name") == prefix]
            admin.client_kill_filter(_id=killed["id"])
            for _ in range(3):  # unanswered: a write into a dead socket may only fail on a later one
                await pool.send([("INCR", f"{prefix}:sent")])
            assert await pool.execute([("GET", f"{prefix}:sent")]) in ([b"3"], [b"2"])
    finally:
        await pool.aclose()


async def test_no_server_is_a_connection_error() -> None:
    pool = RespPool(Endpoint("127.0.0.1", free_port()), max_connections=1, timeout_s=2.0)
    with pytest.raises(RespConnectionError, match="ConnectionError"):
        await pool.execute([("PING",)])


async def test_a_server_that_never_answers_times_out() -> None:
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, _accept_and_stay_silent, 0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        pool = RespPool(Endpoint("127.0.0.1", port), max_connections=1, timeout_s=0.2)
        with pytest.raises(RespConnectionError, match=r"did not answer within 0\.2 s"):
            await pool.execute([("PING",)])
        nursery.cancel_scope.cancel()


async def _accept_and_stay_silent(stream: trio.SocketStream) -> None:
    await trio.sleep_forever()


async def test_a_connection_that_stops_answering_times_out_and_is_dropped() -> None:
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, _answer_the_setup_only, 0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        pool = RespPool(Endpoint("127.0.0.1", port), max_connections=1, timeout_s=0.2)
        with pytest.raises(RespConnectionError, match=r"did not answer within 0\.2 s"):
            await pool.execute([("GET", "k")])  # the connection is set up, then the GET gets no reply
        assert pool._idle == []  # a reply may still come: that connection is not used again
        nursery.cancel_scope.cancel()


async def _answer_the_setup_only(stream: trio.SocketStream) -> None:
    data = b""
    while b"PING" not in data:
        data += await stream.receive_some()
    await stream.send_all(b"+PONG\r\n")  # CLIENT REPLY SKIP works here: only the PING is answered
    await trio.sleep_forever()


async def test_auth_and_select_on_every_new_connection() -> None:
    with private_redis() as server:
        with redis.Redis(port=server.port) as admin:
            admin.config_set("requirepass", "s3cret")
        endpoint = endpoint_of(f"redis://:s3cret@127.0.0.1:{server.port}/5")
        assert endpoint is not None
        pool = RespPool(endpoint, max_connections=2, timeout_s=2.0)
        assert await pool.execute([("SET", "where", "db5")]) == [b"OK"]
        await pool.aclose()
        with redis.Redis(port=server.port, db=5, password="s3cret") as check:
            assert check.get("where") == b"db5"
        wrong = RespPool(Endpoint("127.0.0.1", server.port, password="nope"), max_connections=1, timeout_s=2.0)
        with pytest.raises(RespConnectionError, match="refused the connection setup"):
            await wrong.execute([("PING",)])


@requires_redis
@pytest.mark.parametrize("url", [SHARED_REDIS_URL, SHARED_REDIS_URL + "?health_check_interval=0"])
async def test_backend_reloads_a_script_the_server_forgot(url: str, prefix: str) -> None:
    """Native (first URL) and through redis-py in a thread (options the native client leaves to redis-py)."""
    backend = RedisBackend(RedisSettings(url=url))
    script = backend.lua(f"-- {prefix}\nreturn redis.call('INCR', KEYS[1])")
    unknown = LuaScript(f"-- {prefix} never registered\nreturn 1")
    try:
        with redis.Redis.from_url(SHARED_REDIS_URL) as admin:
            admin.script_flush()
        command = script.command([f"{prefix}:n"], [])
        assert await backend.execute([command, command]) == [1, 2]
        assert await backend.execute([command]) == [3]  # loaded by the EVAL: EVALSHA works again
        (reply,) = await backend.execute([unknown.command([], [])])
        assert isinstance(reply, ReplyError) and str(reply).startswith("NOSCRIPT")
    finally:
        await backend.aclose()


async def test_backend_marks_redis_down_and_fails_fast() -> None:
    backend = RedisBackend(RedisSettings(url=f"redis://127.0.0.1:{free_port()}/0"))
    try:
        with pytest.raises(RedisUnavailable, match="unreachable"):
            await backend.execute([("PING",)])
        assert not backend.up
        with pytest.raises(RedisUnavailable):  # within the retry interval: no new connection attempt
            await backend.execute([("PING",)])
    finally:
        await backend.aclose()


@requires_redis
async def test_sent_commands_get_no_reply_and_later_replies_stay_in_step(prefix: str) -> None:
    endpoint = endpoint_of(SHARED_REDIS_URL)
    assert endpoint is not None
    pool = RespPool(endpoint, max_connections=1, timeout_s=2.0)  # one connection: the sends and the reads share it
    try:
        await pool.send([("SET", f"{prefix}:{i}", i, "PX", 60_000) for i in range(50)])
        assert pool.skips_replies is True
        await pool.send([("INCR", f"{prefix}:0"), ("INCR", f"{prefix}:no-such-command-arity", "x")])  # an error too
        assert await pool.execute([("GET", f"{prefix}:0"), ("GET", f"{prefix}:49"), ("PING",)]) == [
            b"1",
            b"49",
            b"PONG",
        ]
    finally:
        await pool.aclose()


@requires_redis
async def test_a_server_refusing_client_reply_gets_its_replies_read(prefix: str) -> None:
    """An ACL without CLIENT (as some managed Redis services have): `send` waits for the replies instead."""
    user, password = f"{prefix}-user", secrets.token_hex(8)
    with redis.Redis.from_url(SHARED_REDIS_URL) as admin:
        admin.acl_setuser(user, enabled=True, passwords=[f"+{password}"], keys=["*"], commands=["+@all", "-client"])
    try:
        endpoint = endpoint_of(SHARED_REDIS_URL)
        assert endpoint is not None
        pool = RespPool(replace(endpoint, username=user, password=password), max_connections=1, timeout_s=2.0)
        try:
            await pool.send([("SET", f"{prefix}:a", "1"), ("INCR", f"{prefix}:a")])
            assert pool.skips_replies is False
            assert await pool.execute([("GET", f"{prefix}:a"), ("PING",)]) == [b"2", b"PONG"]
        finally:
            await pool.aclose()
    finally:
        with redis.Redis.from_url(SHARED_REDIS_URL) as admin:
            admin.acl_deluser(user)


@requires_redis
async def test_deferred_scripts_go_with_their_text_so_a_forgotten_script_still_runs(prefix: str) -> None:
    backend = RedisBackend(RedisSettings(url=SHARED_REDIS_URL))
    script = backend.lua(f"-- {prefix}\nreturn redis.call('INCRBY', KEYS[1], ARGV[1])")
    try:
        with redis.Redis.from_url(SHARED_REDIS_URL) as admin:
            admin.script_flush()
        backend.defer([script.command([f"{prefix}:n"], [5]), ("INCR", f"{prefix}:n")])
        await backend.flush_deferred()
        assert await backend.execute([("GET", f"{prefix}:n")]) == [b"6"]
    finally:
        await backend.aclose()


@requires_redis
async def test_a_pipeline_waits_for_deferred_commands_already_on_their_way(prefix: str) -> None:
    """Through redis-py (Sentinel, cluster, TLS) a deferred flush runs in a thread of its own: the next pipeline,
    in another thread, must not overtake it and miss the answer it stores."""
    backend = RedisBackend(RedisSettings(url=SHARED_REDIS_URL))
    backend._native = None  # the redis-py path, as behind Sentinel
    first_call = [True]
    call = backend._call

    def slow_first_call(fn: Any) -> Any:
        if first_call[0]:
            first_call[0] = False
            time.sleep(0.3)  # the flush's thread is slow to get its write out: the window a race needs
        return call(fn)

    backend._call = slow_first_call  # type: ignore[method-assign]
    try:
        backend.defer([("SET", f"{prefix}:answer", "stored")])
        async with trio.open_nursery() as nursery:
            nursery.start_soon(backend.flush_deferred)
            await trio.testing.wait_all_tasks_blocked()  # the flush is in its thread
            assert await backend.execute([("GET", f"{prefix}:answer")]) == [b"stored"]
    finally:
        await backend.aclose()


@requires_redis
async def test_a_round_trip_waits_once_and_a_send_not_at_all(pool: RespPool, prefix: str) -> None:
    """trio's stream calls add a scheduler pass after every socket call that succeeded; the hot path's
    commands go to the socket directly, so a round trip is one wait (for the reply) and a send none."""
    await pool.execute([("PING",)])  # a pooled connection, CLIENT REPLY probed
    with counting_steps() as counter:
        await pool.send([("SET", f"{prefix}:a", "1")])
        sent_steps = counter.steps
        assert await pool.execute([("GET", f"{prefix}:a")]) == [b"1"]
    assert sent_steps == 0
    assert counter.steps <= 1  # resumed once when the reply arrived (none if it was already there)


def test_resp3_replies_that_a_tracking_connection_receives() -> None:
    """HELLO 3's map, invalidations (pushes, a null for a flush), and RESP3's other scalar types."""
    wire = (
        b"%2\r\n$6\r\nserver\r\n$5\r\nredis\r\n$5\r\nproto\r\n:3\r\n"
        b">2\r\n$10\r\ninvalidate\r\n*2\r\n$3\r\nns:\r\n$4\r\nns:a\r\n"
        b">2\r\n$10\r\ninvalidate\r\n_\r\n"
        b"#t\r\n,1.5\r\n(12345678901234567890\r\n=7\r\ntxt:abc\r\n!5\r\nERR x\r\n~1\r\n:1\r\n"
    )
    buf = bytearray(wire)
    replies, pos = [], 0
    while pos < len(buf):
        reply, pos = _parse(buf, pos)
        replies.append(reply)
    hello, invalidate, flushed, *scalars = replies
    assert hello == {b"server": b"redis", b"proto": 3}
    assert isinstance(invalidate, Push) and invalidate == [b"invalidate", [b"ns:", b"ns:a"]]
    assert isinstance(flushed, Push) and flushed == [b"invalidate", None]
    error = scalars.pop(4)
    assert isinstance(error, ReplyError) and str(error) == "ERR x"
    assert scalars == [True, 1.5, 12345678901234567890, b"txt:abc", [1]]
    with pytest.raises(_Incomplete):
        _parse(bytearray(b">2\r\n$10\r\ninvalidate\r\n*2\r\n$3\r\nns:\r\n"), 0)  # cut short: read more


def _connection_pair() -> tuple[Connection, socket.socket]:
    """A Connection and the plain socket that plays the server on its other end."""
    ours, theirs = socket.socketpair()
    return Connection(trio.SocketStream(trio.socket.from_stdlib_socket(ours))), theirs


async def test_read_ready_takes_what_arrived_reads_nothing_when_nothing_did_and_sees_the_end(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Asked on every cache miss, mostly when nothing has arrived: then no read (a failing one costs three times
    a poll); complete replies as they come, a cut one kept for later; None once the server has closed."""
    connection, theirs = _connection_pair()
    reads: list[int] = []
    read_now = directio.read_now

    def counted(fd: int, size: int) -> bytes | None:
        reads.append(fd)
        return read_now(fd, size)

    monkeypatch.setattr(directio, "read_now", counted)
    with theirs:
        assert connection.read_ready() == []
        assert connection.read_ready() == []
        assert reads == []
        theirs.send(b">2\r\n$10\r\ninvalidate\r\n*1\r\n$4\r\nns:a\r\n+PONG\r\n:4")
        assert connection.read_ready() == [[b"invalidate", [b"ns:a"]], b"PONG"]
        theirs.send(b"2\r\n")
        assert connection.read_ready() == [42]
        assert len(reads) == 2
    assert connection.read_ready() is None  # closed
    await connection.stream.aclose()


async def test_read_ready_takes_what_read_left_in_the_buffer() -> None:
    """`read(n)` stops at n replies; one that came in the same packet is read_ready's, with nothing new."""
    connection, theirs = _connection_pair()
    with theirs:
        theirs.send(b"+OK\r\n>2\r\n$10\r\ninvalidate\r\n*1\r\n$4\r\nns:b\r\n")
        assert await connection.read(1) == [b"OK"]
        assert connection.read_ready() == [[b"invalidate", [b"ns:b"]]]
        assert connection.read_ready() == []
    await connection.stream.aclose()


async def test_deferred_stores_wait_for_company_and_a_settlement_takes_them_along() -> None:
    """Each write wakes Redis (costing our CPU too): cache stores wait a moment for company; a settlement, which
    another instance may be waiting for, goes at once with whatever waits."""
    with private_redis() as server, redis.Redis(port=server.port) as admin:
        backend = RedisBackend(RedisSettings(url=server.url), defer_window_s=60)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(backend.serve_deferred)
                backend.defer([("SET", "store", "1")], can_wait=True)
                await trio.sleep(0.05)  # long enough for serve_deferred to have sent it, had it not waited
                assert not admin.exists("store")
                backend.defer([("SET", "settlement", "2")])
                with trio.fail_after(5):
                    while admin.exists("store", "settlement") < 2:
                        await trio.sleep(0.01)
                nursery.cancel_scope.cancel()
        finally:
            await backend.aclose()
