"""Redis killed mid-test and restarted (a private redis-server; the shared one is never touched).

While it is down no request fails because of it: cache lookups miss, limits count per process, readiness
says so. When it is back every instance uses it again by itself, and sharing resumes.
"""

from __future__ import annotations

import shutil

import pytest
import redis
import trio

from tests.e2e.conftest import Proxy, create_key, openai_model, running_proxy
from tests.e2e.redis_support import PrivateRedis, new_space, private_redis, redis_config, stored_entries
from tests.e2e.test_rate_limits import refused_within
from tests.fakes import FakeUpstream
from tests.storage.pg import temporary_pg_url

pytestmark = [
    pytest.mark.redis,
    pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server is not installed"),
]


def chat(question: str) -> dict[str, object]:
    return {"model": "m", "messages": [{"role": "user", "content": question}]}


async def wait_connected(*proxies: Proxy) -> None:
    """A bounded poll on readiness (which always asks Redis itself) until every proxy sees Redis again."""
    with trio.fail_after(10):
        for proxy in proxies:
            async with proxy.client() as client:
                while (await client.get("/health/readiness")).json().get("redis") != "connected":
                    await trio.sleep(0.05)


async def wait_subscribers(server: PrivateRedis, channel: str, count: int) -> None:
    """A bounded poll until `count` instances listen on `channel` again (they resubscribe by themselves)."""
    with trio.fail_after(10), redis.Redis(port=server.port) as client:
        while int(client.pubsub_numsub(channel)[0][1]) < count:
            await trio.sleep(0.05)


@pytest.mark.postgres
async def test_killed_and_restarted_redis_fails_no_request_and_sharing_resumes(fake: FakeUpstream) -> None:
    with temporary_pg_url() as url, private_redis() as server:
        space = new_space(server.url)
        config = redis_config([openai_model("m", fake)], space, database_url=url)
        assert config.redis is not None
        key = create_key(url, "sk-outage-limited-00001", rpm_limit=1000)
        async with (
            running_proxy(config) as first,
            running_proxy(config) as second,
            first.client(key) as a,
            second.client(key) as b,
        ):
            assert (await a.post("/v1/chat/completions", json=chat("before"))).status_code == 200
            await stored_entries(space, 1)  # a store leaves within a few milliseconds (RedisBackend.defer)
            shared = await b.post("/v1/chat/completions", json=chat("before"))
            assert "x-litellm-cache-key" in shared.headers  # Redis up: the instances share the cache

            server.kill()
            during = [await c.post("/v1/chat/completions", json=chat("during")) for c in (a, b, a, b)]
            async with first.client() as admin:
                ready = await admin.get("/health/readiness")
                ping = await admin.get("/cache/ping")

            server.start()  # same port, empty (no persistence)
            await wait_connected(first, second)
            await wait_subscribers(server, f"{config.redis.prefix}:events", 2)
            again = await a.post("/v1/chat/completions", json=chat("after"))
            await stored_entries(space, 1)  # the restarted Redis is empty
            shared_again = await b.post("/v1/chat/completions", json=chat("after"))
    assert [r.status_code for r in during] == [200, 200, 200, 200]
    assert all("x-litellm-cache-key" not in r.headers for r in during)  # misses: every one went upstream
    assert all(r.headers["x-ratelimit-limit-requests"] == "1000" for r in during)  # limits counted locally
    assert ready.status_code == 200  # still serving: Redis is reported, not required
    assert ready.json()["redis"] == "unreachable" and ready.json()["cache"] == "unreachable"
    assert ping.status_code == 503
    assert again.status_code == 200 and "x-litellm-cache-key" in shared_again.headers
    # Counted in the restarted (empty) Redis again, by both instances: 2 of 1000 used, whatever each counted alone.
    assert shared_again.headers["x-ratelimit-remaining-requests"] == "998"


@pytest.mark.postgres
async def test_key_changes_reach_the_other_instance_after_redis_came_back() -> None:
    demo = {"model_name": "demo", "litellm_params": {"model": "mock/demo"}}
    hello = {"model": "demo", "messages": [{"role": "user", "content": "hi"}]}
    with temporary_pg_url() as url, private_redis() as server:
        space = new_space(server.url)
        config = redis_config([demo], space, cache=False, database_url=url)
        async with running_proxy(config) as first, running_proxy(config) as second:
            server.kill()
            server.start()
            await wait_connected(first, second)
            await wait_subscribers(server, f"{space.prefix}:events", 2)
            async with first.client() as admin:
                key = (await admin.post("/key/generate", json={"key_alias": "after-restart"})).json()["key"]
                async with second.client(key) as on_second:
                    assert (await on_second.post("/v1/chat/completions", json=hello)).status_code == 200
                    await admin.post("/key/block", json={"key": key})
                    # Pub/sub delivers the change to both instances at once; the other one applies it within
                    # milliseconds (the change poller alone needs about a second): allow 0.5 s on a loaded machine.
                    refused = await refused_within(on_second, hello, 0.5)
    assert refused.status_code == 401


async def test_redis_down_at_startup_then_up(fake: FakeUpstream) -> None:
    server = PrivateRedis()  # not started: the proxy starts without it
    try:
        space = new_space(server.url)
        config = redis_config([openai_model("m", fake)], space)
        async with running_proxy(config) as proxy, proxy.client() as client:
            first = await client.post("/v1/chat/completions", json=chat("q"))
            assert (await client.get("/health/readiness")).json()["redis"] == "unreachable"
            server.start()
            await wait_connected(proxy)
            await client.post("/v1/chat/completions", json=chat("q"))
            hit = await client.post("/v1/chat/completions", json=chat("q"))
    finally:
        server.kill()
        shutil.rmtree(server.dir, ignore_errors=True)
    assert first.status_code == 200
    assert "x-litellm-cache-key" in hit.headers
