"""Key tracking against real Redis servers: what it learns, and when it stops trusting what it knows."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest
import redis
import trio

from edgeproxy.cache.tracking import CONNECTION_NAME, KeyTracker
from edgeproxy.redisclient import RedisBackend
from edgeproxy.redisconfig import RedisSettings
from tests.e2e.redis_support import private_redis, redis_space

pytestmark = pytest.mark.redis


def digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@asynccontextmanager
async def tracking(url: str, namespace: str, **options: float) -> AsyncIterator[KeyTracker]:
    timeout = options.pop("socket_timeout_s", 2.0)
    backend = RedisBackend(RedisSettings(url=url, socket_timeout_s=timeout))
    endpoint = backend.native_endpoint
    assert endpoint is not None
    tracker = KeyTracker(backend, endpoint, namespace, **options)  # type: ignore[arg-type]
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(tracker.serve)
            yield tracker
            nursery.cancel_scope.cancel()
    finally:
        await backend.aclose()


async def until(condition: Callable[[], bool], timeout_s: float = 5) -> None:
    with trio.fail_after(timeout_s):
        while not condition():
            await trio.sleep(0.005)


async def test_entries_stored_before_and_after_it_starts_are_known_and_others_are_absent() -> None:
    with redis_space() as space, space.client() as client:
        before, after, never = digest("before"), digest("after"), digest("never")
        client.set(f"{space.namespace}:{before}", b"{}")
        client.set(f"other-{space.namespace}:{after}", b"{}")  # another namespace: not ours to know
        async with tracking(space.url, space.namespace) as tracker:
            assert tracker.may_exist(never)  # nothing trusted yet: every lookup asks Redis
            await until(lambda: tracker.state == "tracking")
            assert tracker.may_exist(before)  # seeded by the SCAN
            assert not tracker.may_exist(never) and not tracker.may_exist(after)
            client.set(f"{space.namespace}:{after}", b"{}")  # another instance stores an entry
            # Redis sent the invalidation before its OK: known at once, before the receiving task has run.
            assert tracker.may_exist(after)
            mine = digest("mine")
            tracker.stored(f"{space.namespace}:{mine}")  # this instance's own store counts at once
            assert tracker.may_exist(mine)
            assert not tracker.may_exist(never)
        client.delete(f"other-{space.namespace}:{after}")


async def test_a_lost_connection_is_not_trusted_until_seeded_again() -> None:
    with private_redis() as server, redis.Redis(port=server.port) as client:
        namespace = "lost"
        async with tracking(server.url, namespace, retry_interval_s=0.3) as tracker:
            await until(lambda: tracker.state == "tracking")
            (tracker_id,) = [c["id"] for c in client.client_list() if c["name"] == CONNECTION_NAME]
            client.client_kill_filter(_id=tracker_id)
            await until(lambda: tracker.trusted is None)
            gap = digest("stored while tracking was away")
            assert tracker.may_exist(gap)  # untrusted: ask Redis
            client.set(f"{namespace}:{gap}", b"{}")
            await until(lambda: tracker.state == "tracking")
            assert tracker.may_exist(gap)  # found by the new SCAN
            assert not tracker.may_exist(digest("never"))


async def test_a_redis_that_stops_answering_is_not_trusted() -> None:
    with private_redis() as server, redis.Redis(port=server.port) as client:
        options = {"ping_interval_s": 0.05, "socket_timeout_s": 0.3, "retry_interval_s": 10.0}
        async with tracking(server.url, "paused", **options) as tracker:
            await until(lambda: tracker.state == "tracking")
            client.execute_command("CLIENT", "PAUSE", 3000, "ALL")  # nothing answered, connections stay open
            await until(lambda: tracker.trusted is None, timeout_s=2)
            assert tracker.may_exist(digest("anything"))
            client.execute_command("CLIENT", "UNPAUSE")


async def test_a_flush_empties_what_it_knows() -> None:
    with private_redis() as server, redis.Redis(port=server.port) as client:
        entry = digest("flushed")
        client.set(f"flush:{entry}", b"{}")
        async with tracking(server.url, "flush") as tracker:
            await until(lambda: tracker.state == "tracking")
            assert tracker.may_exist(entry)
            client.flushdb()
            await until(lambda: not tracker.may_exist(entry))


async def test_a_redis_that_refuses_tracking_leaves_every_lookup_to_redis() -> None:
    with private_redis() as server, redis.Redis(port=server.port) as client:
        client.acl_setuser("plain", enabled=True, passwords=["+secret"], keys=["*"], commands=["+@all", "-client"])
        url = f"redis://plain:secret@127.0.0.1:{server.port}/0"
        async with tracking(url, "refused") as tracker:
            await until(lambda: tracker.state.startswith("unavailable"))
            assert "NOPERM" in tracker.state or "permission" in tracker.state
            assert tracker.may_exist(digest("anything"))
