"""Background health probes, /health reports and routing around unhealthy deployments."""

from __future__ import annotations

import json
from collections import Counter

import trio
import trio.testing

from edgeproxy.config import Deployment
from edgeproxy.errors import UpstreamConnectionError

from .support import FakeUpstream, dep, http_error, make_router

INTERVAL_S = 30.0


class FakeProbe:
    """A probe that fails for the deployment ids in `failing`, with a message full of secrets."""

    def __init__(self) -> None:
        self.failing: set[str] = set()
        self.hanging: set[str] = set()
        self.probed: Counter[str] = Counter()

    async def __call__(self, deployment: Deployment) -> None:
        self.probed[deployment.deployment_id] += 1
        await trio.sleep(0.25)  # probes take time; latency is recorded
        if deployment.deployment_id in self.hanging:
            await trio.sleep_forever()
        if deployment.deployment_id in self.failing:
            raise UpstreamConnectionError(
                f"cannot connect to {deployment.api_base}/models with key {deployment.api_key}"
            )


def entries(report: dict, key: str) -> dict[str, dict]:  # type: ignore[type-arg]
    return {e["deployment_id"]: e for e in report[key]}


async def settle() -> None:
    # Every probe task is now waiting for its next round (or a probe's own sleep has run out).
    await trio.testing.wait_all_tasks_blocked()


async def test_failing_probe_marks_unhealthy_within_one_interval(autojump_clock: trio.testing.MockClock) -> None:
    router = make_router(
        dep("g", "sick", api_base="http://user:secret@host:1", api_key="sk-supersecret-1234"), dep("g", "well")
    )
    probe = FakeProbe()
    async with trio.open_nursery() as nursery:
        await nursery.start(lambda task_status: router.serve_health_probes(
            probe, interval_s=INTERVAL_S, timeout_s=5, task_status=task_status
        ))  # fmt: skip
        await trio.sleep(1)
        report = router.health_report()
        assert report["healthy_count"] == 2 and report["unhealthy_count"] == 0
        assert probe.probed == {"sick": 1, "well": 1}

        probe.failing.add("sick")
        await trio.sleep(INTERVAL_S)
        report = router.health_report()
        assert (report["healthy_count"], report["unhealthy_count"]) == (1, 1)
        sick = entries(report, "unhealthy_endpoints")["sick"]
        assert sick["model_group"] == "g"
        assert sick["model"] == "mock/test-model"
        assert sick["api_base"] == "http://host:1"
        assert sick["last_error"].startswith("cannot connect to http://host:1/models")
        assert sick["last_latency_s"] is not None
        assert sick["since"]
        assert "secret" not in json.dumps(report)
        assert "secret" not in json.dumps(router.deployment_states())
        well = entries(report, "healthy_endpoints")["well"]
        assert well["last_error"] is None
        assert abs(well["last_latency_s"] - 0.25) < 1e-6
        nursery.cancel_scope.cancel()


async def test_routes_around_unhealthy_deployments(autojump_clock: trio.testing.MockClock) -> None:
    router = make_router(dep("g", "sick"), dep("g", "well"))
    probe = FakeProbe()
    probe.failing.add("sick")
    async with trio.open_nursery() as nursery:
        await nursery.start(lambda task_status: router.serve_health_probes(
            probe, interval_s=INTERVAL_S, timeout_s=5, task_status=task_status
        ))  # fmt: skip
        await trio.sleep(1)
        upstream = FakeUpstream()
        for _ in range(30):
            await router.route("g", upstream)
        assert upstream.counts() == {"well": 30}

        probe.failing.add("well")  # now every deployment is unhealthy: try them anyway
        await trio.sleep(INTERVAL_S)
        assert router.health_report()["unhealthy_count"] == 2
        upstream.calls.clear()
        for _ in range(40):
            await router.route("g", upstream)
        assert set(upstream.counts()) == {"sick", "well"}

        probe.failing.clear()
        await trio.sleep(INTERVAL_S)
        assert router.health_report()["healthy_count"] == 2
        nursery.cancel_scope.cancel()


async def test_a_successful_probe_ends_a_cooldown(autojump_clock: trio.testing.MockClock) -> None:
    router = make_router(dep("g", "flaky"), dep("g", "steady"), allowed_fails=0, cooldown_time=3600)
    probe = FakeProbe()
    async with trio.open_nursery() as nursery:
        await nursery.start(lambda task_status: router.serve_health_probes(
            probe, interval_s=INTERVAL_S, timeout_s=5, task_status=task_status
        ))  # fmt: skip
        await trio.sleep(1)
        upstream = FakeUpstream()
        upstream.script["flaky"] = [http_error(500)]
        while "flaky" not in upstream.calls:
            await router.route("g", upstream)
        assert entries(router.health_report(), "unhealthy_endpoints")["flaky"]["cooling_down_until"]

        await trio.sleep(INTERVAL_S)  # the next probe of flaky passes
        report = router.health_report()
        assert report["unhealthy_count"] == 0
        assert "cooling_down_until" not in entries(report, "healthy_endpoints")["flaky"]
        upstream.calls.clear()
        for _ in range(40):
            await router.route("g", upstream)
        assert upstream.counts()["flaky"] > 5
        nursery.cancel_scope.cancel()


async def test_a_hanging_probe_times_out_without_delaying_others(autojump_clock: trio.testing.MockClock) -> None:
    router = make_router(dep("g", "stuck"), dep("g", "well"))
    probe = FakeProbe()
    probe.hanging.add("stuck")
    async with trio.open_nursery() as nursery:
        await nursery.start(lambda task_status: router.serve_health_probes(
            probe, interval_s=INTERVAL_S, timeout_s=5, task_status=task_status
        ))  # fmt: skip
        await trio.sleep(1)
        assert router.health_report()["healthy_count"] == 2  # well was probed; stuck still pending
        assert router.deployment_states()[1]["health_checked"] is not None
        await trio.sleep(5)
        stuck = entries(router.health_report(), "unhealthy_endpoints")["stuck"]
        assert "timed out" in stuck["last_error"]
        await trio.sleep(INTERVAL_S * 3)
        assert probe.probed == {"stuck": 4, "well": 4}
        nursery.cancel_scope.cancel()


async def test_any_exception_from_a_probe_means_unhealthy(autojump_clock: trio.testing.MockClock) -> None:
    router = make_router(dep("g", "odd", api_base="http://admin:secret@odd:9"))

    async def probe(deployment: Deployment) -> None:
        raise ValueError(f"unexpected reply from {deployment.api_base}")

    async with trio.open_nursery() as nursery:
        await nursery.start(lambda task_status: router.serve_health_probes(
            probe, interval_s=INTERVAL_S, timeout_s=5, task_status=task_status
        ))  # fmt: skip
        await settle()
        report = router.health_report()
        assert report["unhealthy_endpoints"][0]["last_error"] == "unexpected reply from http://odd:9"
        assert "secret" not in json.dumps(report)
        nursery.cancel_scope.cancel()


async def test_health_report_shape_before_any_probe() -> None:
    router = make_router(dep("g", "a"), dep("h", "b"))
    report = router.health_report()
    assert set(report) == {"healthy_endpoints", "unhealthy_endpoints", "healthy_count", "unhealthy_count"}
    assert report["healthy_count"] == 2 and report["unhealthy_endpoints"] == []
    entry = report["healthy_endpoints"][0]
    assert set(entry) == {"model_group", "model", "deployment_id", "api_base", "last_error", "last_latency_s", "since"}
    assert entry["api_base"] == "http://a.test:8000/v1"
