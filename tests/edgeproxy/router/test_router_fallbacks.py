"""Fallbacks between model groups, and what route() raises when everything fails."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from edgeproxy.errors import InvalidRequestError, PermissionDeniedError, RateLimitError, UpstreamHTTPError

from .support import FakeUpstream, dep, http_error, make_router


async def test_fallbacks_in_order_then_default_fallbacks(autojump_clock: trio.testing.MockClock) -> None:
    router = make_router(
        dep("a", "a1"), dep("b", "b1"), dep("c", "c1"), dep("d", "d1"),
        num_retries=1, fallbacks=[{"a": ["b", "c"]}], default_fallbacks=["d"],
    )  # fmt: skip
    upstream = FakeUpstream()
    for name in ("a1", "b1", "c1"):
        upstream.failures[name] = http_error(503)
    routed = await router.route("a", upstream)
    # Each group gets its own retries (num_retries=1: two attempts) before the next one is tried.
    assert upstream.calls == ["a1", "a1", "b1", "b1", "c1", "c1", "d1"]
    assert routed.group == "d"
    assert routed.attempted_fallbacks == 3
    assert routed.attempted_retries == 3


async def test_first_working_fallback_serves() -> None:
    router = make_router(dep("a", "a1"), dep("b", "b1"), dep("c", "c1"), num_retries=0, fallbacks=[{"a": ["b", "c"]}])
    upstream = FakeUpstream()
    upstream.failures["a1"] = http_error(500)
    routed = await router.route("a", upstream)
    assert upstream.calls == ["a1", "b1"]
    assert (routed.group, routed.value, routed.attempted_fallbacks) == ("b", "b1", 1)


async def test_last_upstream_error_when_everything_fails() -> None:
    router = make_router(dep("a", "a1"), dep("b", "b1"), num_retries=0, default_fallbacks=["b"])
    upstream = FakeUpstream()
    upstream.failures["a1"] = http_error(500)
    upstream.failures["b1"] = http_error(503)
    with pytest.raises(UpstreamHTTPError) as caught:
        await router.route("a", upstream)
    assert caught.value.upstream_status == 503
    assert getattr(caught.value, "attempted_fallbacks", None) == 1
    assert getattr(caught.value, "attempted_retries", None) == 0


async def test_default_fallbacks_never_loop_back() -> None:
    router = make_router(dep("a", "a1"), dep("b", "b1"), num_retries=0, default_fallbacks=["a", "b"])
    upstream = FakeUpstream()
    upstream.failures["a1"] = upstream.failures["b1"] = http_error(500)
    with pytest.raises(UpstreamHTTPError):
        await router.route("b", upstream)
    assert upstream.calls == ["b1", "a1"]


async def test_at_most_five_fallback_hops() -> None:
    names = [f"g{i}" for i in range(8)]
    router = make_router(*(dep(name, f"{name}-d") for name in names), num_retries=0, fallbacks=[{"g0": names[1:]}])
    upstream = FakeUpstream()
    for name in names:
        upstream.failures[f"{name}-d"] = http_error(500)
    with pytest.raises(UpstreamHTTPError) as caught:
        await router.route("g0", upstream)
    assert upstream.calls == [f"{name}-d" for name in names[:6]]
    assert getattr(caught.value, "attempted_fallbacks", None) == 5


async def test_context_window_errors_go_to_context_window_fallbacks() -> None:
    router = make_router(
        dep("small", "s1"), dep("small", "s2"), dep("big", "b1"), dep("other", "o1"),
        fallbacks=[{"small": ["other"]}], context_window_fallbacks=[{"small": ["big"]}],
    )  # fmt: skip
    upstream = FakeUpstream()
    overflow = http_error(400, context_window=True)
    upstream.failures["s1"] = upstream.failures["s2"] = overflow
    routed = await router.route("small", upstream)
    # No retry in the group (the same prompt would overflow again) and no ordinary fallback.
    assert len(upstream.calls) == 2
    assert upstream.calls[1] == "b1"
    assert routed.group == "big"
    assert (routed.attempted_retries, routed.attempted_fallbacks) == (0, 1)


async def test_context_window_error_without_fallbacks_propagates() -> None:
    router = make_router(dep("small", "s1"), dep("other", "o1"), fallbacks=[{"small": ["other"]}])
    upstream = FakeUpstream()
    upstream.failures["s1"] = http_error(400, context_window=True)
    with pytest.raises(UpstreamHTTPError) as caught:
        await router.route("small", upstream)
    assert caught.value.context_window
    assert upstream.calls == ["s1"]


async def test_allow_group_skips_forbidden_fallbacks() -> None:
    router = make_router(
        dep("a", "a1"), dep("secret", "x1"), dep("c", "c1"), num_retries=0, fallbacks=[{"a": ["secret", "c"]}]
    )
    upstream = FakeUpstream()
    upstream.failures["a1"] = http_error(500)
    asked: list[str] = []

    def allow(group: str) -> None:
        asked.append(group)
        if group == "secret":
            raise PermissionDeniedError("key may not use secret")

    routed = await router.route("a", upstream, allow_group=allow)
    assert upstream.calls == ["a1", "c1"]
    assert asked == ["secret", "c"]
    assert (routed.group, routed.attempted_fallbacks) == ("c", 1)


async def test_all_cooling_down_raises_rate_limit_with_retry_after(autojump_clock: trio.testing.MockClock) -> None:
    router = make_router(dep("g", "a"), dep("g", "b"), allowed_fails=0, cooldown_time=60)
    upstream = FakeUpstream()
    upstream.failures["a"] = upstream.failures["b"] = http_error(500)
    with pytest.raises(UpstreamHTTPError):
        await router.route("g", upstream)  # both fail once and are cooled down
    await trio.sleep(10)
    upstream.calls.clear()
    with pytest.raises(RateLimitError) as caught:
        await router.route("g", upstream)
    assert upstream.calls == []
    assert caught.value.status == 429
    assert caught.value.headers == {"retry-after": "50"}
    assert "'g'" in caught.value.message
    report = router.health_report()
    assert report["unhealthy_count"] == 2
    assert report["healthy_count"] == 0


async def test_all_cooling_down_tries_fallbacks_first(autojump_clock: trio.testing.MockClock) -> None:
    router = make_router(
        dep("g", "a"), dep("spare", "s"), allowed_fails=0, num_retries=0, cooldown_time=60,
        fallbacks=[{"g": ["spare"]}],
    )  # fmt: skip
    upstream = FakeUpstream()
    upstream.script["a"] = [http_error(500)]
    await router.route("g", upstream)  # a fails and cools down; spare serves
    routed = await router.route("g", upstream)
    assert routed.group == "spare"
    assert upstream.calls == ["a", "s", "s"]


async def test_all_cooling_down_everywhere_reports_the_earliest_retry(autojump_clock: trio.testing.MockClock) -> None:
    router = make_router(
        dep("g", "a"), dep("spare", "s1"), dep("spare", "s2"), allowed_fails=0, num_retries=1,
        fallbacks=[{"g": ["spare"]}],
    )  # fmt: skip
    upstream = FakeUpstream()
    upstream.failures["a"] = http_error(500)
    upstream.failures["s1"] = upstream.failures["s2"] = http_error(429, retry_after_s=20)
    with pytest.raises(UpstreamHTTPError):
        await router.route("g", upstream)  # a cools for 60 s, s1 and s2 for 20 s
    assert upstream.counts() == {"a": 1, "s1": 1, "s2": 1}
    with pytest.raises(RateLimitError) as caught:
        await router.route("g", upstream)
    assert caught.value.headers["retry-after"] == "20"
    assert getattr(caught.value, "attempted_fallbacks", None) == 1


async def test_unknown_group_is_a_bad_request() -> None:
    router = make_router(dep("g", "a"))
    with pytest.raises(InvalidRequestError) as caught:
        await router.route("nope", FakeUpstream())
    assert caught.value.param == "model"
    assert router.has_group("g") and not router.has_group("nope")
    assert router.group_names() == ["g"]
