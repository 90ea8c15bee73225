"""Redis Sentinel: the master is killed mid-run; the proxy follows the new master without a restart.

A real master, a replica and three sentinels (quorum 2, down-after 1 s) on private loopback ports. While the
sentinels fail over, requests keep succeeding (cache misses, per-process limits); afterwards the cache and the
rate limits live on the promoted replica, and the outage was logged once, not once per request.
"""

from __future__ import annotations

import logging
import tempfile
from typing import Any

import httpx
import pytest
import redis
import trio

from edgeproxy.auth import hash_key
from edgeproxy.config import Config, parse_config
from edgeproxy.redisclient import LOG_INTERVAL_S
from tests.e2e.conftest import MASTER_KEY, create_key, openai_model, running_proxy
from tests.e2e.redis_ha import SERVICE, SentinelGroup, sentinel_group
from tests.e2e.redis_support import RedisSpace, new_space
from tests.fakes import FakeUpstream

FAILOVER_BOUND_S = 45.0  # sentinels usually promote the replica within 2-5 s of the kill


def sentinel_config(fake: FakeUpstream, group: SentinelGroup, space: RedisSpace) -> Config:
    database = f"sqlite:///{tempfile.mkdtemp(prefix='edgeproxy-test-')}/edgeproxy.db"
    params = {"type": "redis", "service_name": SERVICE, "sentinel_nodes": group.nodes, "namespace": space.namespace}
    raw = {
        "model_list": [openai_model("m", fake)],
        "litellm_settings": {"cache": True, "cache_params": params},
        "general_settings": {"master_key": MASTER_KEY, "database_url": database},
    }
    return parse_config(raw, env={"EDGEPROXY_REDIS_PREFIX": space.prefix})


def chat(question: str) -> dict[str, Any]:
    return {"model": "m", "messages": [{"role": "user", "content": question}]}


def counted_requests(port: int, space: RedisSpace, token: str) -> int:
    """Requests counted this minute for the key, in the Redis on `port`."""
    with redis.Redis(port=port) as client:
        return int(client.hget(f"{space.prefix}:{{limits}}:key:{token}:requests", "n") or 0)


def cache_entries(port: int, space: RedisSpace) -> int:
    with redis.Redis(port=port) as client:
        return len(list(client.scan_iter(match=f"{space.namespace}:*", count=10_000)))


async def test_failover_fails_no_request_and_cache_and_limits_follow_the_new_master(
    fake: FakeUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="edgeproxy")
    with sentinel_group() as group:
        space = new_space()
        config = sentinel_config(fake, group, space)
        assert config.redis is not None and config.redis.mode == "sentinel"
        assert config.general.database_url is not None
        key = create_key(config.general.database_url, "sk-sentinel-limited-0001", rpm_limit=100_000)
        later = create_key(config.general.database_url, "sk-sentinel-limited-0002", rpm_limit=100_000)
        token = hash_key(key)
        old_master = group.master_port()
        assert old_master == group.master.port
        async with running_proxy(config) as proxy, proxy.client(key) as client:

            async def ask(question: str) -> httpx.Response:
                return await client.post("/v1/chat/completions", json=chat(question))

            assert (await ask("before")).status_code == 200
            assert "x-litellm-cache-key" in (await ask("before")).headers  # cached on the first master
            # Limits counted there: the two requests, and what their lease reserved and has not given back yet.
            assert counted_requests(old_master, space, token) >= 2

            group.master.kill()
            killed_at = trio.current_time()
            statuses: list[int] = []
            hit: httpx.Response | None = None
            attempt = 0
            # Every request must succeed throughout; the loop ends when a repeat is answered from the cache
            # again, i.e. when the proxy writes to and reads from a master once more.
            with trio.fail_after(FAILOVER_BOUND_S):
                while hit is None:
                    attempt += 1
                    question = f"during failover {attempt}"
                    first, repeat = await ask(question), await ask(question)
                    statuses += [first.status_code, repeat.status_code]
                    if "x-litellm-cache-key" in repeat.headers:
                        hit = repeat
                    else:
                        await trio.sleep(0.05)  # pacing the loop, not waiting for an event
            resumed_after = trio.current_time() - killed_at
            new_master = group.master_port()
            async with proxy.client() as admin:
                ready = (await admin.get("/health/readiness")).json()
            async with proxy.client(later) as other:  # a key first used now: its counter can only be new
                assert (await other.post("/v1/chat/completions", json=chat("after failover"))).status_code == 200
            counted_after = counted_requests(group.replica.port, space, hash_key(later))
            entries = cache_entries(group.replica.port, space)
    assert set(statuses) == {200}, statuses
    assert attempt > 1  # there was an outage: at least one repeat missed the cache
    assert new_master == group.replica.port != old_master  # the sentinels promoted the replica...
    assert entries > 0  # ...and the proxy's cache entries are written there
    assert counted_after >= 1  # limits count on the new master
    assert ready["redis"] == "connected" and ready["cache"] == "connected"
    unreachable = [r for r in caplog.records if r.name == "edgeproxy.redis" and "unreachable" in r.getMessage()]
    assert 1 <= len(unreachable) <= 1 + int(resumed_after // LOG_INTERVAL_S), [r.getMessage() for r in unreachable]
    warnings = [r for r in caplog.records if r.name.startswith("edgeproxy") and r.levelno >= logging.WARNING]
    assert len(warnings) <= 2 + int(resumed_after // LOG_INTERVAL_S), [r.getMessage() for r in warnings]
