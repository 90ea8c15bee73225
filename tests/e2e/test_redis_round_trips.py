"""The hot path's Redis budget, counted by a private redis-server: one script call for limits, one GET."""

from __future__ import annotations

import math
import shutil

import pytest
import redis
import trio

from edgeproxy import redisclient
from tests.e2e.conftest import create_key, openai_model, running_proxy
from tests.e2e.redis_support import key_tracking_on, new_space, private_redis, redis_config
from tests.fakes import FakeUpstream

pytestmark = [
    pytest.mark.redis,
    pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server is not installed"),
]
CHAT = {"model": "m", "messages": [{"role": "user", "content": "count my round trips"}]}


@pytest.fixture(autouse=True)
def deferred_commands_leave_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Counted per request: each request's deferred commands (settlement, store) leave before the next request,
    rather than riding with its pipeline as they may within RedisBackend's window."""
    monkeypatch.setattr(redisclient, "DEFER_WINDOW_S", 0.0)


# Commands the rate-limit scripts run inside Redis (counted by commandstats, but no round trip of ours).
IN_SCRIPTS = {
    *("time", "hget", "hmget", "hgetall", "hset", "hsetnx", "hdel", "hincrby", "hexists", "expire", "exists"),
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
    # PING: the key tracker's keep-alive on its own connection (cache/tracking.py), not a request's.
    ignored = ("config|resetstat", "info", "ping")
    return {name: n for name, n in calls.items() if name not in IN_SCRIPTS and name not in ignored}


@pytest.mark.parametrize("tracking", [True, False], ids=["key-tracking", "no-key-tracking"])
async def test_a_cache_hit_costs_one_script_call_and_one_get(fake: FakeUpstream, tracking: bool) -> None:
    """The exact path, for keys with max_parallel_requests: a script call per request, one more when it ends.
    With key tracking, a miss does not ask Redis for the entry."""
    with private_redis() as server, redis.Redis(port=server.port) as client:
        params = {"track_keys": tracking}
        config = redis_config([openai_model("m", fake)], new_space(server.url), cache_params=params)
        url = config.general.database_url
        assert url is not None
        parallel = create_key(url, "sk-round-trips-par-0001", rpm_limit=100, max_parallel_requests=10)
        async with running_proxy(config) as proxy, proxy.client(parallel) as caller:
            if tracking:
                await key_tracking_on(proxy)
            await caller.post("/v1/chat/completions", json=CHAT)  # the miss that fills the cache
            await caller.post("/v1/chat/completions", json={**CHAT, "user": "warm"})  # a hit
            # Wait for the miss's deferred store, and two EVALs: the admit script loaded, one settlement sent.
            await ran(client, "set", 1)
            await ran(client, "eval", 2)
            client.config_resetstat()
            answer = await caller.post("/v1/chat/completions", json=CHAT)
            await ran(client, "eval", 1)  # the hit's settlement (its parallel slot) leaves after the answer
            hit = round_trips(client)
            client.config_resetstat()
            before = reads(client)
            await caller.post("/v1/chat/completions", json={**CHAT, "messages": [{"role": "user", "content": "new"}]})
            polls = await ran(client, "set", 1)  # the answer leaves before its store and settlement
            miss_reads = reads(client) - before - 1 - polls
            miss = round_trips(client)
    # Admit and look up; then, unanswered (CLIENT REPLY SKIP before each), settle (the slot) and, for a miss,
    # store the answer; the script sent with its text: a NOSCRIPT would go unseen.
    assert "x-litellm-cache-key" in answer.headers
    assert hit == {"evalsha": 1, "get": 1, "client|reply": 1, "eval": 1}
    lookup = {} if tracking else {"get": 1}
    assert miss == {"evalsha": 1, **lookup, "client|reply": 2, "set": 1, "eval": 1}
    # Pipelined: the lookup (if any) goes with the admission; the settlement and the store, deferred, in one more.
    assert miss_reads == 2


async def test_leased_limits_cost_a_script_call_per_second_not_per_request(fake: FakeUpstream) -> None:
    """Keys without max_parallel_requests: requests admitted against leases (edgeproxy/limits/leases.py)."""
    with private_redis() as server, redis.Redis(port=server.port) as client:
        config = redis_config([openai_model("m", fake)], new_space(server.url))
        url = config.general.database_url
        assert url is not None
        key = create_key(url, "sk-round-trips-lease-01", rpm_limit=1_000_000, tpm_limit=10_000_000)
        async with running_proxy(config) as proxy, proxy.client(key) as caller:
            first = await caller.post("/v1/chat/completions", json=CHAT)  # the miss that fills the cache
            await ran(client, "set", 1)
            client.config_resetstat()
            started = trio.current_time()
            hits = [await caller.post("/v1/chat/completions", json=CHAT) for _ in range(100)]
            seconds = math.ceil(trio.current_time() - started) + 1
            during = round_trips(client)
    assert first.status_code == 200 and all("x-litellm-cache-key" in hit.headers for hit in hits)
    assert during["get"] == 100  # one lookup per request...
    # ...and the limits' script: grants of 1, 2, 4... within a second, then one per second, plus the flusher's
    # (what a second's grant did not use, the calls' tokens) once a second at most.
    assert 1 <= during.get("evalsha", 0) <= 9 * seconds, (during, seconds)
    assert set(during) <= {"get", "evalsha"}
