"""What alerts are about: budget crossings (from the ledger), deployments and dependencies (polled).

Deployments and dependencies are polled rather than hooked: the router's state and `/health/readiness` already
say everything needed, a poll every few seconds costs nothing next to the probes themselves, and the request
path stays untouched.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import trio

from edgeproxy.alerts.alerter import Alert, Alerter
from edgeproxy.spend.ledger import BudgetCrossing

LIFETIME_BUDGET_TTL_S = 30 * 86400.0  # a budget without a window: the alert is not repeated for a month
States = Callable[[], Iterable[Mapping[str, Any]]]
Readiness = Callable[[], Awaitable[Mapping[str, Any]]]


def _usd(amount: float) -> str:
    return f"{amount:,.2f}" if abs(amount) >= 10 else f"{amount:.4f}"


def budget_alert(crossing: BudgetCrossing, now: datetime | None = None) -> Alert:
    now = now or datetime.now(UTC)
    label, spend, budget = crossing.label, _usd(crossing.spend), _usd(crossing.budget)
    resets = f"; the budget resets at {crossing.reset_at.isoformat(timespec='minutes')}" if crossing.reset_at else ""
    if crossing.threshold is None:
        text = f"Soft budget reached: {label} has spent {spend} USD, over its soft budget of {budget} USD{resets}"
        level = "soft"
    elif crossing.threshold >= 1.0:
        text = (
            f"Budget exhausted: {label} has spent {spend} USD of its max_budget of {budget} USD "
            f"({crossing.threshold:.0%}); its requests are refused{resets}"
        )
        level = f"{crossing.threshold:g}"
    else:
        text = f"Budget {crossing.threshold:.0%} used: {label} has spent {spend} of its max_budget of {budget} USD"
        text += resets
        level = f"{crossing.threshold:g}"
    window = crossing.reset_at.isoformat() if crossing.reset_at else "lifetime"
    ttl = (crossing.reset_at - now).total_seconds() if crossing.reset_at else LIFETIME_BUDGET_TTL_S
    # The entity id may be a key's hash: only a digest of it goes into the shared store's key names.
    owner = hashlib.sha256(f"{crossing.entity[0]}:{crossing.entity[1]}".encode()).hexdigest()[:24]
    key = f"budget:{owner}:{crossing.budget!r}:{level}:{window}"
    return Alert("budget_alerts", text, key, max(60.0, ttl))


class DeploymentWatch:
    """A deployment is down while its last probe failed or it is cooling down; one alert per transition."""

    def __init__(self, alerter: Alerter, states: States, ttl_s: float) -> None:
        self._alerter = alerter
        self._states = states
        self._ttl_s = ttl_s
        self._down: dict[str, bool] = {}

    def check(self) -> None:
        seen: dict[str, bool] = {}
        for row in self._states():
            deployment = row["deployment_id"]
            down = row["healthy"] is False or row["cooling_down_until"] is not None
            seen[deployment] = down
            was_down = self._down.get(deployment, False)  # unknown counts as up: a dead one at start alerts
            if down and not was_down:
                self._alerter.emit(self._down_alert(row))
            elif was_down and not down:
                self._alerter.emit(self._up_alert(row))
        self._down = seen  # deployments removed by a config reload are forgotten

    def _down_alert(self, row: Mapping[str, Any]) -> Alert:
        deployment = row["deployment_id"]
        if row["healthy"] is False:
            why = f"its health check fails: {row.get('health_error') or 'no detail'}"
        else:
            why = f"it is cooling down after failures until {row['cooling_down_until']}: {row.get('last_error')}"
        text = f"Deployment down: {deployment} (model group {row['model_group']}, {row['api_base']}): {why}"
        return _transition("outage_alerts", f"deployment:{deployment}", "down", text, self._ttl_s)

    def _up_alert(self, row: Mapping[str, Any]) -> Alert:
        deployment = row["deployment_id"]
        text = f"Deployment back up: {deployment} (model group {row['model_group']}) is serving again"
        return _transition("outage_alerts", f"deployment:{deployment}", "up", text, self._ttl_s)


class DependencyWatch:
    """The database and Redis, from the readiness report: down, still down (once per interval), back."""

    def __init__(
        self, alerter: Alerter, readiness: Readiness, repeat_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._alerter = alerter
        self._readiness = readiness
        self._repeat_s = repeat_s
        self._clock = clock
        self._down_since: dict[str, float] = {}
        self._last_sent: dict[str, float] = {}

    async def check(self) -> None:
        report = await self._readiness()
        backend = report.get("db_backend") or "database"
        self.note("database", f"The database ({backend})", report.get("db") != "connected", None)
        if "redis" in report:
            what = f"Redis ({report.get('redis_url')})"
            self.note("redis", what, report["redis"] != "connected", report.get("redis_error"))

    def note(self, name: str, what: str, down: bool, detail: Any) -> None:
        now = self._clock()
        since = self._down_since.get(name)
        detail_text = f" ({detail})" if detail else ""
        if down and since is None:
            self._down_since[name] = self._last_sent[name] = now
            text = f"{what} is unreachable{detail_text}"
            self._alerter.emit(_transition("db_exceptions", f"dependency:{name}", "down", text, self._repeat_s))
        elif down and since is not None and now - self._last_sent[name] >= self._repeat_s:
            self._last_sent[name] = now
            text = f"{what} is still unreachable after {_duration(now - since)}{detail_text}"
            window = int(time.time() // self._repeat_s)  # one reminder per interval, whichever worker sends it
            self._alerter.emit(Alert("db_exceptions", text, f"dependency:{name}:still:{window}", self._repeat_s))
        elif not down and since is not None:
            del self._down_since[name]
            text = f"{what} is reachable again after {_duration(now - since)}"
            self._alerter.emit(_transition("db_exceptions", f"dependency:{name}", "up", text, self._repeat_s))


def _transition(alert_type: str, subject: str, state: str, text: str, ttl_s: float) -> Alert:
    """A down or up alert; each clears the other's key, so the next transition is sent again."""
    other = "up" if state == "down" else "down"
    return Alert(alert_type, text, f"{subject}:{state}", ttl_s, (f"{subject}:{other}",))


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


async def serve_watchers(
    alerter: Alerter, states: States, readiness: Readiness, *, interval_s: float, repeat_s: float
) -> None:
    """Poll deployments and dependencies every `interval_s` (never returns)."""
    deployments = DeploymentWatch(alerter, states, repeat_s)
    dependencies = DependencyWatch(alerter, readiness, repeat_s)
    while True:
        deployments.check()
        await dependencies.check()
        await trio.sleep(interval_s)
