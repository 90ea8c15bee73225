"""Each routing strategy picks the deployment COMPAT.md says it should."""

from __future__ import annotations

from collections import Counter

import pytest
import trio
import trio.testing

from edgeproxy.config import Deployment
from edgeproxy.errors import RateLimitError
from edgeproxy.router import Router

from .support import FakeUpstream, dep, http_error, make_router


async def pick_many(router: Router, n: int, group: str = "g") -> Counter[str]:
    upstream = FakeUpstream()
    for _ in range(n):
        await router.route(group, upstream)
    return upstream.counts()


# ---------------------------------------------------------------- simple-shuffle


async def test_simple_shuffle_follows_weights() -> None:
    router = make_router(dep("g", "light", weight=1), dep("g", "heavy", weight=3))
    counts = await pick_many(router, 2000)
    # Expected 500 light picks; the standard deviation is about 19, so these bounds are ~4 sigma.
    assert 420 <= counts["light"] <= 580
    assert counts["light"] + counts["heavy"] == 2000


async def test_simple_shuffle_missing_weight_counts_as_one() -> None:
    router = make_router(dep("g", "plain"), dep("g", "heavy", weight=3))
    counts = await pick_many(router, 2000)
    assert 420 <= counts["plain"] <= 580


async def test_simple_shuffle_uses_rpm_without_weights() -> None:
    router = make_router(dep("g", "small", rpm=100), dep("g", "big", rpm=300))
    counts = await pick_many(router, 2000)
    assert 420 <= counts["small"] <= 580


async def test_simple_shuffle_uses_tpm_without_weights_or_rpm() -> None:
    router = make_router(dep("g", "small", tpm=1000), dep("g", "big", tpm=3000))
    counts = await pick_many(router, 2000)
    assert 420 <= counts["small"] <= 580


async def test_simple_shuffle_uniform_without_hints() -> None:
    router = make_router(dep("g", "a"), dep("g", "b"), dep("g", "c"))
    counts = await pick_many(router, 2000)
    # Expected 667 each, standard deviation about 21.
    assert all(580 <= counts[name] <= 750 for name in "abc")


async def test_simple_shuffle_is_reproducible_with_a_seed() -> None:
    first = make_router(dep("g", "a"), dep("g", "b"), seed=42)
    second = make_router(dep("g", "a"), dep("g", "b"), seed=42)
    up1, up2 = FakeUpstream(), FakeUpstream()
    for _ in range(50):
        await first.route("g", up1)
        await second.route("g", up2)
    assert up1.calls == up2.calls


# ---------------------------------------------------------------- least-busy


async def test_least_busy_avoids_deployments_with_calls_in_flight() -> None:
    router = make_router(dep("g", "a"), dep("g", "b"), dep("g", "c"), routing_strategy="least-busy")
    release = trio.Event()
    started: list[str] = []

    async def held(deployment: Deployment) -> str:
        started.append(deployment.deployment_id)
        await release.wait()
        return deployment.deployment_id

    async with trio.open_nursery() as nursery:
        for expected_in_flight in (1, 2, 3):
            nursery.start_soon(router.route, "g", held)
            await trio.testing.wait_all_tasks_blocked()
            assert len(started) == expected_in_flight
        # Each of the three calls went to a different deployment: each time, the others were busier.
        assert sorted(started) == ["a", "b", "c"]
        states = {s["deployment_id"]: s["in_flight"] for s in router.deployment_states()}
        assert states == {"a": 1, "b": 1, "c": 1}
        release.set()
    states = {s["deployment_id"]: s["in_flight"] for s in router.deployment_states()}
    assert states == {"a": 0, "b": 0, "c": 0}


async def test_least_busy_spreads_ties_at_random() -> None:
    router = make_router(dep("g", "a"), dep("g", "b"), routing_strategy="least-busy")
    counts = await pick_many(router, 400)
    assert 140 <= counts["a"] <= 260


# ---------------------------------------------------------------- usage-based


@pytest.mark.parametrize("strategy", ["usage-based-routing", "usage-based-routing-v2"])
async def test_usage_based_picks_the_least_used(strategy: str) -> None:
    router = make_router(dep("g", "a", tpm=10_000), dep("g", "b", tpm=10_000), routing_strategy=strategy)
    deployments = {d.deployment_id: d for d in router.deployments("g")}
    router.record_tokens(deployments["a"], 500)
    assert (await pick_many(router, 3)) == Counter({"b": 3})
    router.record_tokens(deployments["b"], 800)
    assert (await pick_many(router, 3)) == Counter({"a": 3})


async def test_usage_based_skips_deployments_at_their_tpm_limit() -> None:
    router = make_router(dep("g", "a", tpm=1000), dep("g", "b", tpm=5000), routing_strategy="usage-based-routing")
    deployments = {d.deployment_id: d for d in router.deployments("g")}
    router.record_tokens(deployments["a"], 1000)  # a is full
    router.record_tokens(deployments["b"], 3000)  # b used more, but has room
    assert (await pick_many(router, 2)) == Counter({"b": 2})


async def test_usage_based_429s_when_all_are_full_until_the_next_minute(autojump_clock: trio.testing.MockClock) -> None:
    router = make_router(dep("g", "a", rpm=2), dep("g", "b", rpm=2), routing_strategy="usage-based-routing-v2")
    await trio.sleep(15)  # 15 s into the minute
    assert (await pick_many(router, 4)) == Counter({"a": 2, "b": 2})
    upstream = FakeUpstream()
    with pytest.raises(RateLimitError) as caught:
        await router.route("g", upstream)
    assert caught.value.status == 429
    assert caught.value.headers == {"retry-after": "45"}
    assert upstream.calls == []
    await trio.sleep(45)  # a new minute: the counters start again
    assert sum((await pick_many(router, 4)).values()) == 4


# ---------------------------------------------------------------- latency-based


async def test_latency_based_prefers_the_faster(autojump_clock: trio.testing.MockClock) -> None:
    router = make_router(dep("g", "fast"), dep("g", "slow"), routing_strategy="latency-based-routing")
    seconds = {"fast": 1.0, "slow": 5.0}
    calls: list[str] = []

    async def timed(deployment: Deployment) -> str:
        calls.append(deployment.deployment_id)
        await trio.sleep(seconds[deployment.deployment_id])
        return deployment.deployment_id

    for _ in range(12):
        await router.route("g", timed)
    # Untried deployments go first, so each is measured once; after that only the faster one is used.
    assert sorted(calls[:2]) == ["fast", "slow"]
    assert calls[2:] == ["fast"] * 10


async def test_latency_based_measures_seconds_per_output_token(autojump_clock: trio.testing.MockClock) -> None:
    router = make_router(dep("g", "terse"), dep("g", "wordy"), routing_strategy="latency-based-routing")
    # wordy takes longer but produces 100x the tokens: 0.05 s/token against terse's 1 s/token.
    behaviour = {"terse": (1.0, 1), "wordy": (5.0, 100)}

    async def timed(deployment: Deployment) -> tuple[str, int]:
        seconds, tokens = behaviour[deployment.deployment_id]
        await trio.sleep(seconds)
        return deployment.deployment_id, tokens

    served = []
    for _ in range(8):
        routed = await router.route("g", timed, output_tokens=lambda value: value[1])
        served.append(routed.deployment.deployment_id)
    assert served[2:] == ["wordy"] * 6


# ---------------------------------------------------------------- cost-based


async def test_cost_based_picks_the_cheapest() -> None:
    router = make_router(
        dep("g", "pricey", input_cost_per_token=3e-6, output_cost_per_token=15e-6),
        dep("g", "cheap", input_cost_per_token=1e-7, output_cost_per_token=4e-7),
        dep("g", "middle", input_cost_per_token=1e-6, output_cost_per_token=1e-6),
        routing_strategy="cost-based-routing",
    )
    assert (await pick_many(router, 20)) == Counter({"cheap": 20})


async def test_cost_based_treats_unpriced_as_free() -> None:
    router = make_router(
        dep("g", "cloud", input_cost_per_token=1e-7, output_cost_per_token=1e-7),
        dep("g", "local"),
        routing_strategy="cost-based-routing",
    )
    assert (await pick_many(router, 10)) == Counter({"local": 10})


async def test_cost_based_falls_to_the_next_cheapest_on_failure() -> None:
    router = make_router(
        dep("g", "cheap", input_cost_per_token=1e-7),
        dep("g", "dear", input_cost_per_token=1e-5),
        routing_strategy="cost-based-routing",
    )
    upstream = FakeUpstream()
    upstream.failures["cheap"] = http_error(503)
    routed = await router.route("g", upstream)
    assert routed.deployment.deployment_id == "dear"
    assert upstream.calls == ["cheap", "dear"]


# ---------------------------------------------------------------- order tiers


async def test_order_prefers_the_lowest_tier() -> None:
    router = make_router(dep("g", "backup", order=2), dep("g", "primary", order=1), dep("g", "unordered"))
    assert (await pick_many(router, 30)) == Counter({"primary": 30})


async def test_order_spills_to_the_next_tier_only_when_the_tier_failed() -> None:
    router = make_router(
        dep("g", "p1", order=1), dep("g", "p2", order=1), dep("g", "backup", order=2), dep("g", "last"),
        num_retries=3,
    )  # fmt: skip
    upstream = FakeUpstream()
    upstream.failures["p1"] = http_error(500)
    upstream.failures["p2"] = http_error(500)
    routed = await router.route("g", upstream)
    assert sorted(upstream.calls[:2]) == ["p1", "p2"]
    assert upstream.calls[2:] == ["backup"]
    assert routed.deployment.deployment_id == "backup"
    assert routed.attempted_retries == 2


async def test_unordered_deployments_come_after_every_numbered_tier() -> None:
    router = make_router(dep("g", "free"), dep("g", "ordered", order=5), num_retries=1)
    upstream = FakeUpstream()
    upstream.failures["ordered"] = http_error(502)
    routed = await router.route("g", upstream)
    assert upstream.calls == ["ordered", "free"]
    assert routed.deployment.deployment_id == "free"
