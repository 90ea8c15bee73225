"""Redis cluster (`redis_startup_nodes`): three private cluster-enabled servers joined by redis-cli.

What a cluster changes is routing by key slot: the rate-limit script's keys (a key's, user's and team's counters)
must share a slot, pipelines may not carry PUBLISH in redis-py, and SCAN must visit every node. These tests run
each of those on a real cluster, then the whole proxy on it (skipped, with the reason, where one cannot be built).
"""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio

from edgeproxy.auth import Principal, hash_key
from edgeproxy.cache.store import RedisStore
from edgeproxy.config import Config, parse_config
from edgeproxy.errors import RateLimitError
from edgeproxy.limits import RateLimiter
from edgeproxy.redisclient import RedisBackend
from edgeproxy.redisconfig import RedisSettings
from tests.e2e.conftest import MASTER_KEY, create_key, openai_model, running_proxy
from tests.e2e.redis_ha import PrivateCluster, redis_cluster
from tests.e2e.redis_support import RedisSpace, new_space
from tests.e2e.test_rate_limits import refused_within
from tests.fakes import FakeUpstream


@pytest.fixture(scope="module")
def cluster() -> Any:
    with redis_cluster() as built:
        yield built


@pytest.fixture
async def backend(cluster: PrivateCluster) -> AsyncIterator[tuple[RedisSpace, RedisBackend]]:
    space = new_space()
    raw = {"model_list": [{"model_name": "m", "litellm_params": {"model": "mock/m"}}]}
    raw["litellm_settings"] = {"cache_params": {"type": "redis", "redis_startup_nodes": cluster.startup_nodes}}
    settings = parse_config(raw, env={"EDGEPROXY_REDIS_PREFIX": space.prefix}).redis
    assert isinstance(settings, RedisSettings) and settings.mode == "cluster"
    opened = RedisBackend(settings)
    try:
        yield space, opened
    finally:
        await opened.aclose()
        with cluster.client() as client:
            for pattern in (f"{space.prefix}*", f"{space.namespace}*"):
                for key in client.scan_iter(match=pattern):
                    client.unlink(key)


async def test_limits_script_runs_in_one_slot_for_key_user_and_team(backend: tuple[RedisSpace, RedisBackend]) -> None:
    space, redis = backend
    limiter = RateLimiter(redis, space.prefix, 600)
    user, team = {"user_id": "ann", "rpm_limit": 100}, {"team_id": "blue", "tpm_limit": 50}
    key = Principal(token="t1", key={"token": "t1", "max_parallel_requests": 1}, user=user, team=team)
    ticket = await limiter.admit(key, "call-1")
    assert ticket.shared  # counted in the cluster, not in this process
    with pytest.raises(RateLimitError):
        await limiter.admit(key, "call-2")  # the parallel slot is taken
    await ticket.release(60)  # tokens for the team, the slot back
    await redis.flush_deferred()  # sent a moment later, or with the next pipeline
    with pytest.raises(RateLimitError) as refused:
        await limiter.admit(key, "call-3")
    assert "team blue" in refused.value.message  # 60 tokens of 50


async def test_pipelines_with_publish_and_pubsub(backend: tuple[RedisSpace, RedisBackend]) -> None:
    space, redis = backend
    channel, got = f"{space.prefix}:events", trio.Event()
    received: list[bytes] = []

    def on_message(data: bytes) -> None:
        received.append(data)
        got.set()

    async with trio.open_nursery() as nursery:
        await nursery.start(redis.serve_subscriber, {channel: on_message}, lambda: None)

        def work(client: Any) -> list[Any]:
            pipe = client.pipeline(transaction=False)
            pipe.hset(f"{space.prefix}:a", "f", "1")
            pipe.publish(channel, b"hello")
            pipe.hincrby(f"{space.prefix}:b", "n", 2)
            pipe.hgetall(f"{space.prefix}:a")
            return list(pipe.execute())

        results = await redis.run(work)
        with trio.fail_after(5):
            await got.wait()
        nursery.cancel_scope.cancel()
    assert results == [1, 1, 2, {b"f": b"1"}]  # in call order, the PUBLISH's subscriber count included
    assert received == [b"hello"]


async def test_cache_store_spans_every_node(backend: tuple[RedisSpace, RedisBackend]) -> None:
    space, redis = backend
    store = RedisStore(redis)
    keys = [f"{space.namespace}:{i}" for i in range(30)]  # spread over the three nodes' slots
    for key in keys:
        await store.put(key, b"v", 60)
    assert await store.get(keys[0]) == b"v"
    assert await store.delete(keys[:2]) == 2  # several keys in different slots at once
    assert await store.flush(space.namespace) == 28  # SCAN on every node


def cluster_config(fake: FakeUpstream, cluster: PrivateCluster, space: RedisSpace) -> Config:
    database = f"sqlite:///{tempfile.mkdtemp(prefix='edgeproxy-test-')}/edgeproxy.db"
    params = {"type": "redis", "redis_startup_nodes": cluster.startup_nodes, "namespace": space.namespace}
    raw = {
        "model_list": [openai_model("m", fake)],
        "litellm_settings": {"cache": True, "cache_params": params},
        "general_settings": {"master_key": MASTER_KEY, "database_url": database},
    }
    return parse_config(raw, env={"EDGEPROXY_REDIS_PREFIX": space.prefix})


async def test_two_proxies_share_cache_limits_and_key_changes_through_the_cluster(
    fake: FakeUpstream, cluster: PrivateCluster
) -> None:
    space = new_space()
    config = cluster_config(fake, cluster, space)
    assert config.general.database_url is not None
    key = create_key(config.general.database_url, "sk-cluster-limited-0001", rpm_limit=1000, max_parallel_requests=5)
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    async with (
        running_proxy(config) as first,
        running_proxy(config) as second,
        first.client(key) as a,
        second.client(key) as b,
    ):
        assert (await a.post("/v1/chat/completions", json=body)).status_code == 200
        shared = await b.post("/v1/chat/completions", json=body)
        async with first.client() as admin:
            ready = (await admin.get("/health/readiness")).json()
            await admin.post("/key/block", json={"key": key})
        refused = await refused_within(b, body, 0.5)  # pub/sub, not the one-second change poller
    assert "x-litellm-cache-key" in shared.headers  # one instance's answer served by the other
    assert shared.headers["x-ratelimit-remaining-requests"] == "998"  # both counted in the cluster
    assert ready["redis"] == "connected" and ready["cache"] == "connected"
    assert refused.status_code == 401
    with cluster.client() as client:
        assert int(client.zcard(f"{space.prefix}:{{limits}}:key:{hash_key(key)}:parallel")) == 0  # slots released
