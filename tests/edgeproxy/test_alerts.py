"""Alerts: delivery to the webhook, de-duplication across processes, the watchers' transitions, budget texts."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from edgeproxy.alerts import Alert, Alerter, Dedup, DependencyWatch, DeploymentWatch, budget_alert
from edgeproxy.opsconfig import OpsSettings
from edgeproxy.redisclient import open_redis
from edgeproxy.redisconfig import RedisSettings
from edgeproxy.spend.ledger import BudgetCrossing
from tests.e2e.redis_support import redis_space, requires_redis

URL = "https://hooks.slack.example/services/T0/B0/very-secret-token"
SETTINGS = OpsSettings(alerting=("webhook",), webhook_url=URL)


class Recorder:
    def __init__(self, status: int = 200, fail: bool = False) -> None:
        self.bodies: list[Any] = []
        self.status = status
        self.fail = fail

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if self.fail:
            raise httpx.ConnectError("connection refused")
        self.bodies.append(json.loads(request.content))
        return httpx.Response(self.status)


class Sink:
    """Stands in for the Alerter where only the emitted alerts matter."""

    def __init__(self) -> None:
        self.alerts: list[Alert] = []

    def emit(self, alert: Alert) -> None:
        self.alerts.append(alert)

    @property
    def texts(self) -> list[str]:
        return [a.text for a in self.alerts]


async def _deliver(alerter: Alerter, *alerts: Alert, wait_s: float = 0.2) -> None:
    async with trio.open_nursery() as nursery:
        await nursery.start(alerter.serve)
        for alert in alerts:
            alerter.emit(alert)
        await trio.sleep(wait_s)
        nursery.cancel_scope.cancel()


async def test_alerts_go_out_as_slack_json_once_per_key() -> None:
    recorder = Recorder()
    alerter = Alerter(SETTINGS, transport=httpx.MockTransport(recorder), dedup=Dedup(directory=None))
    down = Alert("outage_alerts", "Deployment down: x", "deployment:x:down", 60)
    await _deliver(alerter, down, Alert("llm_too_slow", "not a type we send", "k", 60))
    assert len(recorder.bodies) == 1
    assert recorder.bodies[0]["text"].endswith(": Deployment down: x")
    assert recorder.bodies[0]["text"].startswith("edgeproxy@")
    assert alerter.sent == 1


async def test_failed_delivery_is_logged_not_raised_and_never_shows_the_url(
    caplog: pytest.LogCaptureFixture, autojump_clock: trio.testing.MockClock
) -> None:
    for recorder in (Recorder(status=500), Recorder(fail=True)):
        alerter = Alerter(SETTINGS, transport=httpx.MockTransport(recorder))
        with caplog.at_level(logging.WARNING, logger="edgeproxy.alerts"):
            await _deliver(alerter, Alert("db_exceptions", "The database is unreachable", "d", 60), wait_s=10)
        assert alerter.sent == 0
    assert "alert not delivered: the webhook answered HTTP 500" in caplog.text
    assert "alert not delivered: could not reach the webhook (ConnectError)" in caplog.text
    assert "very-secret-token" not in caplog.text and "hooks.slack" not in caplog.text


async def test_directory_dedup_one_claim_per_key_and_transitions_clear_each_other(tmp_path: Path) -> None:
    first, second = Dedup(directory=tmp_path), Dedup(directory=tmp_path)  # two workers sharing a directory
    assert await first.claim("deployment:x:down", 60, ("deployment:x:up",))
    assert not await second.claim("deployment:x:down", 60, ("deployment:x:up",))
    assert await second.claim("deployment:x:up", 60, ("deployment:x:down",))
    assert not await first.claim("deployment:x:up", 60, ("deployment:x:down",))
    assert await first.claim("deployment:x:down", 60, ("deployment:x:up",))  # down again: a new transition
    assert await first.claim("short", 0.05)
    await trio.sleep(0.1)
    assert await second.claim("short", 0.05)  # expired
    assert await Dedup().claim("anything", 60) and await Dedup().claim("anything", 60)  # one process: no store


@requires_redis
async def test_redis_dedup_across_instances() -> None:
    with redis_space() as space:
        settings = RedisSettings(url=space.url, prefix=space.prefix)
        async with open_redis(settings) as one, open_redis(settings) as two:
            a, b = Dedup(one), Dedup(two)
            assert await a.claim("budget:x:0.8", 60)
            assert not await b.claim("budget:x:0.8", 60)
            assert await b.claim("dependency:redis:up", 60, ("dependency:redis:down",))
            assert space.keys()  # under the instance's prefix, cleaned up with it


def test_deployment_watch_one_alert_per_transition() -> None:
    sink = Sink()
    rows = [_row("a"), _row("b", healthy=False, health_error="connection refused")]
    watch = DeploymentWatch(sink, lambda: rows, ttl_s=60)  # type: ignore[arg-type]
    watch.check()
    watch.check()
    assert sink.texts == ["Deployment down: b (model group g, http://h/v1): its health check fails: connection refused"]
    rows[:] = [_row("a", cooling_down_until="2026-01-01T00:00:00+00:00", last_error="HTTP 500"), _row("b")]
    watch.check()
    watch.check()
    assert [a.key for a in sink.alerts] == ["deployment:b:down", "deployment:a:down", "deployment:b:up"]
    assert "cooling down" in sink.texts[1] and "HTTP 500" in sink.texts[1]
    assert sink.alerts[2].clears == ("deployment:b:down",)
    rows[:] = [_row("b")]  # a removed by a reload: forgotten, no alert
    watch.check()
    assert len(sink.alerts) == 3


def _row(deployment: str, **state: Any) -> dict[str, Any]:
    return {
        "deployment_id": deployment,
        "model_group": "g",
        "api_base": "http://h/v1",
        "healthy": True,
        "cooling_down_until": None,
        **state,
    }


async def test_dependency_watch_down_reminder_and_back() -> None:
    sink = Sink()
    now = [0.0]
    report: dict[str, Any] = {"db": "connected", "db_backend": "postgresql", "redis": "connected", "redis_url": "r"}

    async def readiness() -> dict[str, Any]:
        return report

    watch = DependencyWatch(sink, readiness, repeat_s=600, clock=lambda: now[0])  # type: ignore[arg-type]
    await watch.check()
    report.update(db="unreachable", redis="unreachable", redis_error="ConnectionError: refused")
    for t in (1, 100, 500):
        now[0] = t
        await watch.check()
    assert sink.texts == [
        "The database (postgresql) is unreachable",
        "Redis (r) is unreachable (ConnectionError: refused)",
    ]
    now[0] = 700  # one reminder per repeat interval
    await watch.check()
    now[0] = 800
    await watch.check()
    assert sink.texts[2:] == [
        "The database (postgresql) is still unreachable after 12 min",
        "Redis (r) is still unreachable after 12 min (ConnectionError: refused)",
    ]
    report.update(db="connected", redis="connected")
    now[0] = 900
    await watch.check()
    assert sink.texts[4:] == [
        "The database (postgresql) is reachable again after 15 min",
        "Redis (r) is reachable again after 15 min",
    ]
    assert [a.type for a in sink.alerts] == ["db_exceptions"] * 6


def test_budget_alert_texts_and_keys() -> None:
    now = datetime(2026, 11, 28, 12, tzinfo=UTC)
    reset = now + timedelta(hours=12)
    token = "a" * 64
    eighty = budget_alert(BudgetCrossing(("key", token), "key laptop", 8.5, 10.0, 0.8, reset), now)
    full = budget_alert(BudgetCrossing(("key", token), "key laptop", 10.2, 10.0, 1.0, reset), now)
    soft = budget_alert(BudgetCrossing(("team", "family"), "team family", 5.0, 4.0, None, None), now)
    assert eighty.text == (
        "Budget 80% used: key laptop has spent 8.5000 of its max_budget of 10.00 USD; "
        "the budget resets at 2026-11-29T00:00+00:00"
    )
    assert full.text.startswith("Budget exhausted: key laptop has spent 10.20 USD of its max_budget of 10.00 USD")
    assert "requests are refused" in full.text
    assert soft.text == "Soft budget reached: team family has spent 5.0000 USD, over its soft budget of 4.0000 USD"
    assert eighty.key != full.key and eighty.ttl_s == 12 * 3600
    assert all(token not in a.key and token not in a.text for a in (eighty, full))
    assert {a.type for a in (eighty, full, soft)} == {"budget_alerts"}
