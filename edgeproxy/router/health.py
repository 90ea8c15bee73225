"""Background health probes and the reports built from them (`GET /health`, the admin page).

Each deployment gets its own probing task so one slow or hanging upstream cannot delay the others' checks.
A failed probe marks the deployment unhealthy, and the router routes around it (unless every deployment of
the group is unhealthy: then a probe may simply be wrong, and real traffic is the better test). A passing
probe marks it healthy and ends any cooldown at once: the upstream is back, so there is no reason to keep
sending its share of traffic elsewhere until the cooldown timer runs out.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime
from typing import Any, NoReturn

import trio

from edgeproxy.config import Deployment
from edgeproxy.router.cooldowns import Cooldowns, error_text
from edgeproxy.router.state import RouterState

Probe = Callable[[Deployment], Awaitable[None]]


def wall_iso(trio_time: float | None = None) -> str:
    """Wall-clock ISO time for a trio time (now when None): people read these, the router never does."""
    wall = time.time()
    if trio_time is not None:
        wall += trio_time - trio.current_time()
    return datetime.fromtimestamp(wall, UTC).isoformat(timespec="seconds")


class HealthProber:
    def __init__(self, state: RouterState, cooldowns: Cooldowns) -> None:
        self._state = state
        self._cooldowns = cooldowns

    async def serve(
        self,
        deployments: Iterable[Deployment],
        probe: Probe,
        *,
        interval_s: float,
        timeout_s: float,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> NoReturn:
        async with trio.open_nursery() as nursery:
            for deployment in deployments:
                nursery.start_soon(self._probe_forever, deployment, probe, interval_s, timeout_s)
            task_status.started()
            await trio.sleep_forever()
        raise AssertionError("health probes never return")

    async def _probe_forever(self, deployment: Deployment, probe: Probe, interval_s: float, timeout_s: float) -> None:
        # Deadlines rather than sleeps of interval_s, so a slow probe does not push every later one back.
        deadline = trio.current_time()
        while True:
            await self.probe_once(deployment, probe, timeout_s)
            deadline = max(deadline + interval_s, trio.current_time())
            await trio.sleep_until(deadline)

    async def probe_once(self, deployment: Deployment, probe: Probe, timeout_s: float) -> bool:
        """Run one probe and record its outcome; True when it passed."""
        start = trio.current_time()
        error: str | None = None
        with trio.move_on_after(timeout_s) as scope:
            try:
                await probe(deployment)
            except Exception as exc:  # any failure means unhealthy; Cancelled is a BaseException and passes
                error = error_text(exc, deployment)
        if scope.cancelled_caught:
            error = f"health check timed out after {timeout_s:g} s"
        self.record(deployment, error=error, latency_s=trio.current_time() - start)
        return error is None

    def record(self, deployment: Deployment, *, error: str | None, latency_s: float | None) -> None:
        record = self._state.health(deployment.deployment_id)
        healthy = error is None
        now = wall_iso()
        if record.healthy is not healthy:
            record.since = now
        record.healthy = healthy
        record.last_error = error
        record.last_latency_s = latency_s
        record.last_checked = now
        if healthy:
            self._cooldowns.end(deployment)


def endpoint_report(
    deployment: Deployment, state: RouterState, cooldowns: Cooldowns, now: float, started: str
) -> tuple[bool, dict[str, Any]]:
    """(healthy?, the endpoint as /health shows it). Cooling down counts as unhealthy: it gets no traffic."""
    record = state.health(deployment.deployment_id)
    cooling_until = cooldowns.cooling_until(deployment, now)
    healthy = record.healthy is not False and cooling_until is None
    last_error = record.last_error
    if cooling_until is not None and record.healthy is not False:
        last_error = state.last_error(deployment.deployment_id)
    entry: dict[str, Any] = {
        "model_group": deployment.model_name,
        "model": deployment.litellm_model,
        "deployment_id": deployment.deployment_id,
        "api_base": deployment.public_api_base,
        "last_error": last_error,
        "last_latency_s": record.last_latency_s,
        "since": record.since or started,
    }
    if cooling_until is not None:
        entry["cooling_down_until"] = wall_iso(cooling_until)
    return healthy, entry


def health_report(
    deployments: Iterable[Deployment], state: RouterState, cooldowns: Cooldowns, started: str
) -> dict[str, Any]:
    now = trio.current_time()
    healthy: list[dict[str, Any]] = []
    unhealthy: list[dict[str, Any]] = []
    for deployment in deployments:
        ok, entry = endpoint_report(deployment, state, cooldowns, now, started)
        (healthy if ok else unhealthy).append(entry)
    return {
        "healthy_endpoints": healthy,
        "unhealthy_endpoints": unhealthy,
        "healthy_count": len(healthy),
        "unhealthy_count": len(unhealthy),
    }


def deployment_states(
    deployments: Iterable[Deployment], state: RouterState, cooldowns: Cooldowns
) -> list[dict[str, Any]]:
    """One row per deployment for the admin page."""
    now = trio.current_time()
    rows = []
    for d in deployments:
        record = state.health(d.deployment_id)
        cooling_until = cooldowns.cooling_until(d, now)
        requests, tokens = state.usage(d.deployment_id, now)
        rows.append(
            {
                "deployment_id": d.deployment_id,
                "model_group": d.model_name,
                "model": d.litellm_model,
                "api_base": d.public_api_base,
                "healthy": record.healthy,
                "health_checked": record.last_checked,
                "health_error": record.last_error,
                "cooling_down_until": wall_iso(cooling_until) if cooling_until is not None else None,
                "in_flight": state.in_flight(d.deployment_id),
                "requests_this_minute": requests,
                "tokens_this_minute": tokens,
                "recent_latency_s_per_token": state.average_latency(d.deployment_id),
                "probe_latency_s": record.last_latency_s,
                "last_error": state.last_error(d.deployment_id),
            }
        )
    return rows
