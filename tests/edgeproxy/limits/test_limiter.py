"""Rate limits: the per-process algorithm under a fake clock, and the Redis script against the real server."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio

from edgeproxy.auth import Principal
from edgeproxy.errors import RateLimitError
from edgeproxy.limits import LocalWindows, RateLimiter, Ticket, limits_of
from edgeproxy.redisclient import RedisBackend
from edgeproxy.redisconfig import RedisSettings
from tests.e2e.redis_support import RedisSpace, redis_space, requires_redis


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def principal(token: str = "t1", user: dict[str, Any] | None = None, **limits: Any) -> Principal:
    key = {"token": token, "key_alias": f"alias-{token}", **limits}
    return Principal(token=token, key=key, user=user, user_id=(user or {}).get("user_id"))


def local_limiter(clock: Clock, lease_s: float = 600) -> RateLimiter:
    return RateLimiter(None, "test", lease_s, local=LocalWindows(clock))


def test_only_limited_entities_count() -> None:
    user = {"user_id": "u1", "rpm_limit": 5}
    found = limits_of(principal(user=user, tpm_limit=100))
    assert [(limit.entity, limit.id, limit.rpm, limit.tpm) for limit in found] == [
        ("key", "t1", None, 100),
        ("user", "u1", 5, None),
    ]
    assert found[0].label == "key alias-t1"
    assert limits_of(principal()) == [] and limits_of(Principal(is_master=True)) == []


async def test_rpm_is_a_sliding_minute() -> None:
    clock = Clock()
    limiter = local_limiter(clock)
    key = principal(rpm_limit=3)
    tickets = []
    for i in range(3):
        tickets.append(await limiter.admit(key, f"c{i}"))
        clock.now += 10
    assert [t.headers["x-ratelimit-remaining-requests"] for t in tickets] == ["2", "1", "0"]
    assert tickets[0].headers["x-ratelimit-reset-requests"] == "1m0s"
    with pytest.raises(RateLimitError) as refused:
        await limiter.admit(key, "c3")  # 30 s after the first: it leaves the window in 30 s
    assert refused.value.headers["retry-after"] == "30"
    assert refused.value.headers["x-ratelimit-remaining-requests"] == "0"
    clock.now += 30
    assert (await limiter.admit(key, "c4")).headers["x-ratelimit-remaining-requests"] == "0"


async def test_tpm_counts_tokens_when_calls_end() -> None:
    clock = Clock()
    limiter = local_limiter(clock)
    key = principal(tpm_limit=100)
    first = await limiter.admit(key, "a")
    assert first.headers["x-ratelimit-remaining-tokens"] == "100"
    await first.release(60)
    await first.release(60)  # once only
    second = await limiter.admit(key, "b")
    assert second.headers["x-ratelimit-remaining-tokens"] == "40"
    await second.release(50)
    with pytest.raises(RateLimitError) as refused:
        await limiter.admit(key, "c")
    assert "tpm_limit is 100" in refused.value.message
    clock.now += 60
    await limiter.admit(key, "d")


async def test_parallel_slots_are_released_or_expire() -> None:
    clock = Clock()
    limiter = local_limiter(clock, lease_s=100)
    key = principal(max_parallel_requests=2)
    one, _two = await limiter.admit(key, "1"), await limiter.admit(key, "2")
    with pytest.raises(RateLimitError) as refused:
        await limiter.admit(key, "3")
    assert refused.value.headers["retry-after"] == "1"
    await one.release(0)
    await limiter.admit(key, "4")
    clock.now += 101  # a slot whose holder never came back is forgotten after the lease
    await limiter.admit(key, "5")


async def test_a_users_limit_spans_their_keys_and_refusals_count_nothing() -> None:
    clock = Clock()
    limiter = local_limiter(clock)
    user = {"user_id": "u1", "rpm_limit": 2}
    await limiter.admit(principal("k1", user=user, rpm_limit=10), "a")
    await limiter.admit(principal("k2", user=user), "b")
    with pytest.raises(RateLimitError) as refused:
        await limiter.admit(principal("k1", user=user, rpm_limit=10), "c")
    assert "user u1" in refused.value.message
    # k1 was not counted for the refused request: 1 of its 10 used.
    clock.now += 60
    ticket = await limiter.admit(principal("k1", user=user, rpm_limit=10), "d")
    assert ticket.headers["x-ratelimit-remaining-requests"] == "1"  # the user's 2 is the tightest


async def admit_at_once(
    limiters: list[RateLimiter], key: Principal, count: int
) -> tuple[list[Ticket], list[RateLimitError]]:
    """`count` admissions started at once, alternating between the limiters (instances)."""
    admitted: list[Ticket] = []
    refused: list[RateLimitError] = []

    async def try_once(i: int) -> None:
        try:
            admitted.append(await limiters[i % len(limiters)].admit(key, f"call-{i}"))
        except RateLimitError as error:
            refused.append(error)

    async with trio.open_nursery() as nursery:
        for i in range(count):
            nursery.start_soon(try_once, i)
    return admitted, refused


@pytest.fixture
async def redis_backends() -> AsyncIterator[tuple[RedisSpace, RedisBackend, RedisBackend]]:
    with redis_space() as space:
        settings = RedisSettings(url=space.url, prefix=space.prefix)
        # Two backends: two instances' worth of connections.
        first, second = RedisBackend(settings), RedisBackend(settings)
        try:
            yield space, first, second
        finally:
            await first.aclose()
            await second.aclose()


@pytest.mark.redis
@requires_redis
async def test_redis_admits_exactly_the_limit_under_concurrency(
    redis_backends: tuple[RedisSpace, RedisBackend, RedisBackend],
) -> None:
    space, first, second = redis_backends
    limiters = [RateLimiter(backend, space.prefix, 600) for backend in (first, second)]
    key = principal(rpm_limit=10, max_parallel_requests=7)
    admitted, refused = await admit_at_once(limiters, key, 30)
    assert len(admitted) == 7 and len(refused) == 23  # parallel 7 binds before rpm 10
    assert all(t.shared for t in admitted)
    for ticket in admitted:
        await ticket.release(5)
    for backend in (first, second):  # releases leave with the next pipeline, or a moment later
        await backend.flush_deferred()
    more = [await limiters[i % 2].admit(key, f"more-{i}") for i in range(3)]
    assert more[-1].headers["x-ratelimit-remaining-requests"] == "0"
    with pytest.raises(RateLimitError) as error:
        await limiters[0].admit(key, "over")
    assert "rpm_limit is 10" in error.value.message
    with space.client() as r:
        assert r.zcard(f"{space.prefix}:{{limits}}:key:t1:parallel") == 3


@pytest.mark.redis
@requires_redis
async def test_redis_counts_tokens_for_every_limited_entity(
    redis_backends: tuple[RedisSpace, RedisBackend, RedisBackend],
) -> None:
    space, first, _ = redis_backends
    limiter = RateLimiter(first, space.prefix, 600)
    team = {"team_id": "blue", "tpm_limit": 50}
    key = Principal(token="t9", key={"token": "t9", "tpm_limit": 1000}, team=team, team_id="blue")
    for _ in range(2):
        ticket = await limiter.admit(key, "x")
        await ticket.release(30)
    with pytest.raises(RateLimitError) as refused:
        await limiter.admit(key, "y")
    assert "team blue" in refused.value.message  # at once: this process counts its calls' tokens itself
    await limiter.flush()  # Redis gets them with the entities' next call, or the flusher's within a second
    with space.client() as r:
        assert int(r.hget(f"{space.prefix}:{{limits}}:key:t9:tokens", "n")) == 60
        assert 0 < r.ttl(f"{space.prefix}:{{limits}}:team:blue:tokens") <= 120


# Seeded counters, seconds relative to Redis's clock: (buckets {age: count}, with the "n"/"o" summary or not,
# then what the admission must see: requests in the window, age of the oldest counted bucket or None).
AGED_WINDOWS = [
    pytest.param({70: 5, 30: 2, 1: 3}, True, 5, 30, id="buckets-leave-the-window"),
    pytest.param({100: 4}, True, 0, None, id="every-bucket-gone"),
    pytest.param({500: 9, 10: 2}, True, 2, 10, id="oldest-far-behind-rebuilds"),
    pytest.param({80: 1, 10: 3}, False, 3, 10, id="no-summary-rebuilds"),
]


@pytest.mark.redis
@requires_redis
@pytest.mark.parametrize(("ages", "summary", "counted", "oldest_age"), AGED_WINDOWS)
async def test_redis_window_drops_what_left_the_minute(
    redis_backends: tuple[RedisSpace, RedisBackend, RedisBackend],
    ages: dict[int, int],
    summary: bool,
    counted: int,
    oldest_age: int | None,
) -> None:
    space, backend, _ = redis_backends
    limiter = RateLimiter(backend, space.prefix, 600)
    key = principal(token="aged", rpm_limit=100)
    requests = f"{space.prefix}:{{limits}}:key:aged:requests"
    with space.client() as r:
        now = int(r.time()[0])
        fields: dict[str, int] = {str(now - age): count for age, count in ages.items()}
        if summary:
            fields |= {"n": sum(ages.values()), "o": now - max(ages)}
        r.hset(requests, mapping=fields)
    ticket = await limiter.admit(key, "c1")
    assert ticket.headers["x-ratelimit-remaining-requests"] == str(100 - counted - 1)
    with space.client() as r:
        stored = {k.decode(): int(v) for k, v in r.hgetall(requests).items()}
        sec = int(r.time()[0])
    buckets = {int(k): v for k, v in stored.items() if k not in ("n", "o")}
    assert all(b >= sec - 60 for b in buckets)  # what left the window is gone from the hash
    assert stored["n"] == sum(buckets.values()) == counted + 1  # this request counted, the sum kept exact
    assert stored["o"] == min(buckets)
    if oldest_age is not None:
        assert stored["o"] == now - oldest_age
