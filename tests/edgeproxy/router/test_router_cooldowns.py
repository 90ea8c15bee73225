"""Cooldowns, retries, backoff and cancellation within one model group."""

from __future__ import annotations

import itertools

import pytest
import trio
import trio.testing

from edgeproxy.config import Deployment
from edgeproxy.errors import UpstreamConnectionError, UpstreamError, UpstreamHTTPError, UpstreamTimeoutError

from .support import FakeUpstream, dep, http_error, make_router


def cooling(router, deployment_id: str) -> bool:  # type: ignore[no-untyped-def]
    states = {s["deployment_id"]: s for s in router.deployment_states()}
    return states[deployment_id]["cooling_down_until"] is not None


@pytest.mark.parametrize(
    "failure",
    [
        http_error(500),
        http_error(503),
        http_error(429),
        lambda: UpstreamConnectionError("connection refused"),
        lambda: UpstreamTimeoutError("read timed out"),
    ],
)
async def test_one_dead_deployment_among_two_is_cooled_down(failure) -> None:  # type: ignore[no-untyped-def]
    router = make_router(dep("g", "dead"), dep("g", "alive"), allowed_fails=3, num_retries=2)
    upstream = FakeUpstream()
    upstream.failures["dead"] = failure
    for _ in range(60):
        routed = await router.route("g", upstream)
        assert routed.deployment.deployment_id == "alive"
    # allowed_fails failures are tolerated; the next one starts the cooldown and the dead one gets no more.
    assert 1 <= upstream.counts()["dead"] <= 4
    assert cooling(router, "dead")
    report = router.health_report()
    assert [e["deployment_id"] for e in report["unhealthy_endpoints"]] == ["dead"]
    assert "cooling_down_until" in report["unhealthy_endpoints"][0]
    assert report["unhealthy_endpoints"][0]["last_error"]


async def test_failures_older_than_a_minute_do_not_count(autojump_clock: trio.testing.MockClock) -> None:
    router = make_router(dep("g", "flaky"), dep("g", "other"), allowed_fails=1, routing_strategy="cost-based-routing")
    upstream = FakeUpstream()
    # cost-based with equal prices picks at random; make "flaky" fail whenever it is chosen.
    upstream.failures["flaky"] = http_error(500)
    while upstream.counts()["flaky"] < 1:
        await router.route("g", upstream)
    await trio.sleep(61)
    while upstream.counts()["flaky"] < 2:
        await router.route("g", upstream)
    assert not cooling(router, "flaky")  # 1 failure per minute never exceeds allowed_fails=1


async def test_cooldown_ends_on_time(autojump_clock: trio.testing.MockClock) -> None:
    router = make_router(dep("g", "a"), dep("g", "b"), allowed_fails=0, cooldown_time=30)
    upstream = FakeUpstream()
    upstream.script["a"] = [http_error(500)]  # fails once, then recovers
    while "a" not in upstream.calls:
        await router.route("g", upstream)
    assert cooling(router, "a")
    start = trio.current_time()
    await trio.sleep(29.5)
    upstream.calls.clear()
    for _ in range(30):
        await router.route("g", upstream)
    assert upstream.counts()["a"] == 0
    await trio.sleep(30 - (trio.current_time() - start))
    assert not cooling(router, "a")
    upstream.calls.clear()
    for _ in range(40):
        await router.route("g", upstream)
    assert upstream.counts()["a"] > 5


async def test_retry_after_sets_the_cooldown_length(autojump_clock: trio.testing.MockClock) -> None:
    router = make_router(dep("g", "a"), dep("g", "b"), allowed_fails=0, cooldown_time=600)
    upstream = FakeUpstream()
    upstream.script["a"] = [http_error(429, retry_after_s=5)]
    while "a" not in upstream.calls:
        await router.route("g", upstream)
    assert cooling(router, "a")
    await trio.sleep(4.9)
    assert cooling(router, "a")
    await trio.sleep(0.2)
    assert not cooling(router, "a")


async def test_retry_after_sets_the_backoff(autojump_clock: trio.testing.MockClock) -> None:
    router = make_router(dep("solo", "only"), num_retries=2)
    upstream = FakeUpstream()
    upstream.script["only"] = [http_error(429, retry_after_s=3)]
    start = trio.current_time()
    routed = await router.route("solo", upstream)
    assert trio.current_time() - start == pytest.approx(3.0)
    assert routed.attempted_retries == 1
    assert upstream.calls == ["only", "only"]


async def test_backoff_is_exponential_with_jitter(autojump_clock: trio.testing.MockClock) -> None:
    router = make_router(dep("solo", "only"), num_retries=4)
    times: list[float] = []

    async def failing(deployment: Deployment) -> str:
        times.append(trio.current_time())
        raise UpstreamHTTPError("overloaded", upstream_status=503)

    with pytest.raises(UpstreamError) as caught:
        await router.route("solo", failing)
    assert len(times) == 5
    gaps = [b - a for a, b in itertools.pairwise(times)]
    for n, gap in enumerate(gaps):
        nominal = min(8.0, 0.5 * 2**n)
        assert nominal / 2 <= gap <= nominal
    assert getattr(caught.value, "attempted_retries", None) == 4


async def test_backoff_is_capped(autojump_clock: trio.testing.MockClock) -> None:
    router = make_router(dep("solo", "only"), num_retries=8)
    times: list[float] = []

    async def failing(deployment: Deployment) -> str:
        times.append(trio.current_time())
        raise UpstreamConnectionError("refused")

    with pytest.raises(UpstreamConnectionError):
        await router.route("solo", failing)
    assert max(b - a for a, b in itertools.pairwise(times)) <= 8.0


async def test_a_fresh_deployment_is_retried_at_once(autojump_clock: trio.testing.MockClock) -> None:
    router = make_router(dep("g", "a"), dep("g", "b"), dep("g", "c"), num_retries=2)
    upstream = FakeUpstream()
    upstream.failures["a"] = http_error(500)
    upstream.failures["b"] = http_error(500)
    start = trio.current_time()
    for _ in range(3):
        routed = await router.route("g", upstream)
        assert routed.deployment.deployment_id == "c"
    assert trio.current_time() == start  # no backoff while an untried deployment remained


async def test_a_retry_never_repeats_a_failed_deployment_while_another_remains() -> None:
    router = make_router(dep("g", "a"), dep("g", "b"), num_retries=1)
    upstream = FakeUpstream()
    upstream.failures["a"] = http_error(500)
    upstream.failures["b"] = http_error(500)
    with pytest.raises(UpstreamHTTPError):
        await router.route("g", upstream)
    assert sorted(upstream.calls) == ["a", "b"]


async def test_only_deployment_without_fallbacks_is_never_cooled(autojump_clock: trio.testing.MockClock) -> None:
    router = make_router(dep("solo", "only"), allowed_fails=0, num_retries=0)
    upstream = FakeUpstream()
    upstream.failures["only"] = http_error(500)
    for _ in range(10):
        with pytest.raises(UpstreamHTTPError):
            await router.route("solo", upstream)
    assert upstream.calls == ["only"] * 10
    assert not cooling(router, "only")


async def test_only_deployment_with_fallbacks_is_cooled(autojump_clock: trio.testing.MockClock) -> None:
    router = make_router(
        dep("solo", "only"), dep("backup", "b"), allowed_fails=0, num_retries=0, fallbacks=[{"solo": ["backup"]}]
    )
    upstream = FakeUpstream()
    upstream.failures["only"] = http_error(500)
    for _ in range(5):
        routed = await router.route("solo", upstream)
        assert routed.group == "backup"
    assert upstream.counts()["only"] == 1
    assert cooling(router, "only")


async def test_bad_request_propagates_at_once_without_cooldown() -> None:
    router = make_router(dep("g", "a"), dep("g", "b"), dep("other", "o"), allowed_fails=0, fallbacks=[{"g": ["other"]}])
    upstream = FakeUpstream()
    upstream.failures["a"] = upstream.failures["b"] = http_error(400)
    with pytest.raises(UpstreamHTTPError) as caught:
        await router.route("g", upstream)
    assert caught.value.status == 400
    assert len(upstream.calls) == 1
    assert not cooling(router, upstream.calls[0])
    assert all(s["last_error"] is None for s in router.deployment_states())


async def test_auth_error_moves_to_another_deployment_without_backoff(autojump_clock: trio.testing.MockClock) -> None:
    router = make_router(dep("g", "badkey"), dep("g", "good"), routing_strategy="cost-based-routing")
    upstream = FakeUpstream()
    upstream.failures["badkey"] = http_error(401)
    start = trio.current_time()
    for _ in range(10):
        routed = await router.route("g", upstream)
        assert routed.deployment.deployment_id == "good"
    assert trio.current_time() == start
    # A 401 is not worth repeating on the same deployment: with nothing else left, it propagates.
    solo = make_router(dep("solo", "badkey"), num_retries=3)
    with pytest.raises(UpstreamHTTPError):
        await solo.route("solo", upstream)
    assert upstream.counts()["badkey"] <= 5


async def test_cancellation_propagates_and_leaves_no_trace(autojump_clock: trio.testing.MockClock) -> None:
    router = make_router(dep("g", "a"), dep("g", "b"), allowed_fails=0, routing_strategy="least-busy")

    async def hangs(deployment: Deployment) -> str:
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    with trio.move_on_after(5) as scope:
        await router.route("g", hangs)
    assert scope.cancelled_caught
    for state in router.deployment_states():
        assert state["in_flight"] == 0
        assert state["last_error"] is None
        assert state["cooling_down_until"] is None


async def test_cancellation_during_backoff_propagates(autojump_clock: trio.testing.MockClock) -> None:
    router = make_router(dep("solo", "only"), num_retries=3)
    upstream = FakeUpstream()
    upstream.failures["only"] = http_error(429, retry_after_s=30)
    with trio.move_on_after(10) as scope:
        await router.route("solo", upstream)
    assert scope.cancelled_caught
    assert upstream.calls == ["only"]
    assert trio.current_time() == pytest.approx(10)


async def test_other_exceptions_propagate_untouched() -> None:
    router = make_router(dep("g", "a"), dep("g", "b"))

    async def broken(deployment: Deployment) -> str:
        raise KeyError("bug in the provider")

    with pytest.raises(KeyError):
        await router.route("g", broken)
    assert all(s["in_flight"] == 0 for s in router.deployment_states())
