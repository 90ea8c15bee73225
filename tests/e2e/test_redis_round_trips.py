"""The hot path's Redis budget, counted by a private redis-server: one script call for limits, one GET."""

from __future__ import annotations

import shutil

import pytest
import redis
import trio

from tests.e2e.conftest import create_key, openai_model, running_proxy
from tests.e2e.redis_support import new_space, private_redis, redis_config
from tests.fakes import FakeUpstream

pytestmark = [
    pytest.mark.redis,
    pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server is not installed"),
]
CHAT = {"model": "m", "messages": [{"role": "user", "content": "count my round trips"}]}


# Commands the rate-limit scripts run inside Redis (counted by commandstats, but no round trip of ours).
IN_SCRIPTS = {
    *("time", "hmget", "hgetall", "hset", "hsetnx", "hdel", "hincrby", "expire", "exists"),
    *("zremrangebyscore", "zcard", "zadd", "pexpire", "zrem"),
}


def reads(client: redis.Redis) -> int:
    """Read events the server has processed: one per pipeline it received (small ones arrive in one piece)."""
    return int(client.info("stats")["total_reads_processed"])


async def ran(client: redis.Redis, command: str, count: int) -> int:
    """Wait (at most 2 s) until Redis has run `command` `count` times since the last reset; returns the INFOs
    it took. The settlement and the store of a call leave in one pipeline, settlement first, after the answer."""
    polls = 0
    with trio.move_on_after(2):
        while True:
            polls += 1
            if int(client.info("commandstats").get(f"cmdstat_{command}", {}).get("calls", 0)) >= count:
                break
            await trio.sleep(0.005)
    return polls


def round_trips(client: redis.Redis) -> dict[str, int]:
    """Commands received since the last reset, without those run by scripts and the reset itself."""
    stats = client.info("commandstats")
    calls = {name.removeprefix("cmdstat_"): int(values["calls"]) for name, values in stats.items()}
    return {name: n for name, n in calls.items() if name not in IN_SCRIPTS and name not in ("config|resetstat", "info")}


async def test_a_cache_hit_costs_one_script_call_and_one_get(fake: FakeUpstream) -> None:
    with private_redis() as server, redis.Redis(port=server.port) as client:
        config = redis_config([openai_model("m", fake)], new_space(server.url))
        url = config.general.database_url
        assert url is not None
        rpm_only = create_key(url, "sk-round-trips-rpm-0001", rpm_limit=100)
        with_tpm = create_key(url, "sk-round-trips-tpm-0001", rpm_limit=100, tpm_limit=10_000)
        async with running_proxy(config) as proxy, proxy.client(rpm_only) as first, proxy.client(with_tpm) as second:
            await first.post("/v1/chat/completions", json=CHAT)  # the miss that fills the cache
            await second.post("/v1/chat/completions", json={**CHAT, "user": "warm"})  # a hit: loads the admit script
            await second.post("/v1/chat/completions", json={**CHAT, "n": 1})  # a miss: loads the settle script
            # Wait for the two misses' deferred stores, and two EVALs: the admit script loaded, one settlement.
            await ran(client, "set", 2)
            await ran(client, "eval", 2)
            client.config_resetstat()
            before = reads(client)
            hit = await first.post("/v1/chat/completions", json=CHAT)
            hit_reads = reads(client) - before - 1  # less this INFO's own read
            rpm_only_hit = round_trips(client)
            client.config_resetstat()
            await second.post("/v1/chat/completions", json=CHAT)
            tpm_hit = round_trips(client)
            client.config_resetstat()
            before = reads(client)
            await second.post("/v1/chat/completions", json={**CHAT, "messages": [{"role": "user", "content": "new"}]})
            polls = await ran(client, "set", 1)  # the answer leaves before its store and settlement
            miss_reads = reads(client) - before - 1 - polls
            tpm_miss = round_trips(client)
    assert "x-litellm-cache-key" in hit.headers
    assert rpm_only_hit == {"evalsha": 1, "get": 1}
    assert tpm_hit == {"evalsha": 1, "get": 1}  # a hit uses no tokens: nothing to settle afterwards
    # Admit and look up; then, unanswered (CLIENT REPLY SKIP before each), store and count the call's tokens,
    # the script sent with its text: a NOSCRIPT would go unseen.
    assert tpm_miss == {"evalsha": 1, "get": 1, "client|reply": 2, "set": 1, "eval": 1}
    # Pipelined: the lookup goes with the admission; the settlement and the store, deferred, in one more send.
    assert hit_reads == 1
    assert miss_reads == 2
