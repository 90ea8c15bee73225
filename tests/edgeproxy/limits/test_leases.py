"""Rate-limit leases against the real Redis: exact counts, few script calls, unused requests given back."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest
import trio

from edgeproxy.errors import RateLimitError
from edgeproxy.limits import RateLimiter
from edgeproxy.limits.leases import LEASE_LUA
from edgeproxy.redisclient import Command, RedisBackend
from edgeproxy.redisconfig import RedisSettings
from tests.e2e.redis_support import RedisSpace, redis_space, requires_redis
from tests.edgeproxy.limits.test_limiter import admit_at_once, principal

pytestmark = [pytest.mark.redis, requires_redis]


class Counted(RedisBackend):
    """A backend that counts the pipelines it sends: each is one round trip to Redis."""

    calls = 0

    async def execute(self, commands: Sequence[Command]) -> list[Any]:
        self.calls += 1
        return await super().execute(commands)


@pytest.fixture
async def backends() -> AsyncIterator[tuple[RedisSpace, Counted, Counted]]:
    with redis_space() as space:
        settings = RedisSettings(url=space.url, prefix=space.prefix)
        first, second = Counted(settings), Counted(settings)
        try:
            yield space, first, second
        finally:
            await first.aclose()
            await second.aclose()


def counted(space: RedisSpace, token: str, kind: str = "requests") -> int:
    with space.client() as r:
        return int(r.hget(f"{space.prefix}:{{limits}}:key:{token}:{kind}", "n") or 0)


async def test_a_burst_costs_a_few_script_calls_and_headers_stay_exact(
    backends: tuple[RedisSpace, Counted, Counted],
) -> None:
    space, backend, _ = backends
    limiter = RateLimiter(backend, space.prefix, 600)
    key = principal("burst", rpm_limit=1_000_000)
    started = trio.current_time()
    tickets = [await limiter.admit(key, f"c{i}") for i in range(300)]
    seconds = math.ceil(trio.current_time() - started) + 1
    assert all(t.leased for t in tickets)
    # Grants of 1, 2, 4... within a second, then what the last second took: not one call per request.
    assert backend.calls <= 9 * seconds, (backend.calls, seconds)
    remaining = [int(t.headers["x-ratelimit-remaining-requests"]) for t in tickets]
    assert remaining == [1_000_000 - 1 - i for i in range(300)]  # as exact as one call per request
    await limiter.flush(everything=True)
    assert counted(space, "burst") == 300  # what was reserved and not used went back


async def test_two_instances_admit_exactly_the_limit(backends: tuple[RedisSpace, Counted, Counted]) -> None:
    space, first, second = backends
    limiters = [RateLimiter(backend, space.prefix, 600) for backend in (first, second)]
    admitted, refused = await admit_at_once(limiters, principal("shared", rpm_limit=20), 60)
    assert len(admitted) == 20 and len(refused) == 40
    assert sorted(int(t.headers["x-ratelimit-remaining-requests"]) for t in admitted) == list(range(20))
    assert all("rpm_limit is 20" in error.message for error in refused)
    for limiter in limiters:
        await limiter.flush(everything=True)
    assert counted(space, "shared") == 20


async def test_unused_requests_go_back_and_another_instance_sees_the_exact_count(
    backends: tuple[RedisSpace, Counted, Counted],
) -> None:
    space, first, second = backends
    here, there = RateLimiter(first, space.prefix, 600), RateLimiter(second, space.prefix, 600)
    key = principal("back", rpm_limit=100)
    for i in range(3):
        await here.admit(key, f"c{i}")  # grants of 1, then 2, then 4 (or 1 again in a new second)
    assert counted(space, "back") >= 3  # reserved: more than was used, until given back
    await here.flush(everything=True)
    assert counted(space, "back") == 3
    ticket = await there.admit(key, "elsewhere")
    assert ticket.headers["x-ratelimit-remaining-requests"] == str(100 - 3 - 1)


async def test_tokens_count_here_at_once_and_reach_other_instances_after_a_flush(
    backends: tuple[RedisSpace, Counted, Counted],
) -> None:
    space, first, second = backends
    here, there = RateLimiter(first, space.prefix, 600), RateLimiter(second, space.prefix, 600)
    key = principal("tok", tpm_limit=100)
    ticket = await here.admit(key, "a")
    await ticket.release(70)
    assert (await here.admit(key, "b")).headers["x-ratelimit-remaining-tokens"] == "30"
    await (await here.admit(key, "c")).release(40)
    with pytest.raises(RateLimitError) as refused_here:
        await here.admit(key, "d")  # 110 tokens: refused without asking Redis
    assert "110 tokens" in refused_here.value.message
    assert counted(space, "tok", "tokens") == 0  # not sent yet
    await here.flush()
    assert counted(space, "tok", "tokens") == 110
    with pytest.raises(RateLimitError) as refused_there:
        await there.admit(key, "e")
    assert "tpm_limit is 100" in refused_there.value.message


async def test_a_refusal_holds_for_the_rest_of_the_second(backends: tuple[RedisSpace, Counted, Counted]) -> None:
    space, backend, _ = backends
    limiter = RateLimiter(backend, space.prefix, 600)
    key = principal("over", rpm_limit=2)
    await limiter.admit(key, "a")
    await limiter.admit(key, "b")
    before, started = backend.calls, trio.current_time()
    for i in range(20):
        with pytest.raises(RateLimitError) as refused:
            await limiter.admit(key, f"over-{i}")
        assert refused.value.headers["retry-after"] != "0"
    # Asked once, then once per second crossed.
    assert backend.calls - before <= 1 + math.ceil(trio.current_time() - started)
    assert counted(space, "over") == 2  # refusals count nothing


async def test_serve_gives_everything_back_when_closed(backends: tuple[RedisSpace, Counted, Counted]) -> None:
    space, backend, _ = backends
    limiter = RateLimiter(backend, space.prefix, 600)
    key = principal("closing", rpm_limit=1000, tpm_limit=10_000)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(limiter.serve)
        for i in range(5):
            await (await limiter.admit(key, f"c{i}")).release(10)
        limiter.close()  # serve ends after a last flush
    assert counted(space, "closing") == 5
    assert counted(space, "closing", "tokens") == 50


# Buckets seeded relative to Redis's clock ({age: count}), a give-back of `back` requests to the bucket of age
# `age`, then the hash expected: {age: count} and the summary fields.
GIVE_BACKS = [
    pytest.param({3: 5, 1: 2}, 3, 2, {3: 3, 1: 2}, id="part-of-a-bucket"),
    pytest.param({3: 5, 1: 2}, 3, 5, {1: 2}, id="the-oldest-bucket-whole"),
    pytest.param({3: 5}, 3, 9, {}, id="more-than-is-there"),
    pytest.param({70: 5, 1: 2}, 70, 5, {70: 5, 1: 2}, id="left-the-window"),
    pytest.param({1: 2}, 5, 2, {1: 2}, id="no-such-bucket"),
]


@pytest.mark.parametrize(("ages", "age", "back", "expected"), GIVE_BACKS)
async def test_give_back_keeps_the_sum_and_the_oldest_bucket(
    backends: tuple[RedisSpace, Counted, Counted], ages: dict[int, int], age: int, back: int, expected: dict[int, int]
) -> None:
    space, backend, _ = backends
    script = backend.lua(LEASE_LUA)
    requests, tokens = f"{space.prefix}:{{limits}}:key:gb:requests", f"{space.prefix}:{{limits}}:key:gb:tokens"
    with space.client() as r:
        now = int(r.time()[0])
        r.hset(
            requests,
            mapping={str(now - a): c for a, c in ages.items()} | {"n": sum(ages.values()), "o": now - max(ages)},
        )
    await backend.execute([script.command([requests, tokens], [-1, -1, 0, now - age, back, 0])])
    with space.client() as r:
        stored = {k.decode(): int(v) for k, v in r.hgetall(requests).items()}
    buckets = {now - int(k): v for k, v in stored.items() if k not in ("n", "o")}
    live = {a: c for a, c in expected.items() if a < 60}
    assert {a: c for a, c in buckets.items() if a < 60} == live
    if live:
        assert stored["n"] == sum(c for a, c in buckets.items()) and stored["o"] == now - max(buckets)
    else:
        assert "n" not in stored and "o" not in stored
