"""Metrics: label children bound once, gauges follow state (and forget removed deployments), no secrets."""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import pytest
from prometheus_client import values
from prometheus_client.parser import text_string_to_metric_families

from edgeproxy.auth import Principal
from edgeproxy.calls import CallRecord
from edgeproxy.config import parse_config
from edgeproxy.metrics import Metrics
from edgeproxy.providers.base import CallType, Usage

CONFIG = parse_config({"model_list": [{"model_name": "m", "litellm_params": {"model": "mock/x"}}]}, env={})
DEPLOYMENT = CONFIG.deployments[0]


def samples(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(metrics.render().decode()):
        for s in family.samples:
            found[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return found


def call(**fields: object) -> CallRecord:
    principal = Principal(token="t" * 64, key_alias="laptop", team_id="fam")
    return CallRecord("c", CallType.CHAT, principal, "m", "m", {}, **fields)  # type: ignore[arg-type]


def test_calls_are_counted_with_children_bound_once() -> None:
    metrics = Metrics(per_key=True, multiprocess=False)
    for _ in range(3):
        metrics.observe_call(call(deployment=DEPLOYMENT, usage=Usage(2, 3, cache_read_tokens=1), cost=0.5))
    metrics.observe_call(call(cache_hit=True, usage=Usage(2, 3)))
    metrics.observe_call(call(status="failure"))
    assert len(metrics._bound) == 3  # (m, m-0, success), (m, cache, success), (m, none, failure)
    found = samples(metrics)
    assert (
        found[("edgeproxy_requests_total", (("deployment", "m-0"), ("model_group", "m"), ("status", "success")))] == 3
    )
    assert (
        found[("edgeproxy_requests_total", (("deployment", "cache"), ("model_group", "m"), ("status", "success")))] == 1
    )
    assert (
        found[("edgeproxy_requests_total", (("deployment", "none"), ("model_group", "m"), ("status", "failure")))] == 1
    )
    assert found[("edgeproxy_tokens_total", (("kind", "cache_read"), ("model_group", "m")))] == 3
    assert found[("edgeproxy_spend_usd_total", (("model_group", "m"),))] == 1.5
    assert found[("edgeproxy_key_spend_usd_total", (("key_alias", "laptop"),))] == 1.5
    assert found[("edgeproxy_team_spend_usd_total", (("team", "fam"),))] == 1.5
    assert found[("edgeproxy_request_duration_seconds_count", (("model_group", "m"),))] == 5
    assert not any("t" * 64 in value for key in found for _, value in key[1])


def test_gauges_follow_state_and_drop_removed_deployments() -> None:
    metrics = Metrics(per_key=True, multiprocess=False)
    row = {"model_group": "m", "deployment_id": "a", "healthy": False, "cooling_down_until": "2026-01-01T00:00:00"}
    metrics.refresh([row, {**row, "deployment_id": "b", "healthy": None, "cooling_down_until": None}], 7, [("k", 2.5)])
    found = samples(metrics)
    assert found[("edgeproxy_deployment_healthy", (("deployment", "a"), ("model_group", "m")))] == 0
    assert found[("edgeproxy_deployment_healthy", (("deployment", "b"), ("model_group", "m")))] == 1  # not probed yet
    assert found[("edgeproxy_deployment_cooldown", (("deployment", "a"), ("model_group", "m")))] == 1
    assert found[("edgeproxy_spend_queue_depth", ())] == 7
    assert found[("edgeproxy_budget_remaining_usd", (("key_alias", "k"),))] == 2.5
    metrics.refresh([{**row, "deployment_id": "b"}], 0)  # a reload removed "a"
    assert ("edgeproxy_deployment_healthy", (("deployment", "a"), ("model_group", "m"))) not in samples(metrics)


def test_per_key_families_are_opt_in() -> None:
    metrics = Metrics(multiprocess=False)
    metrics.observe_call(call(deployment=DEPLOYMENT, usage=Usage(1, 1), cost=1.0))
    metrics.refresh([], 0, [("k", 1.0)])
    text = metrics.render().decode()
    assert "key_alias" not in text and "laptop" not in text


def test_the_grafana_dashboard_uses_only_families_we_export() -> None:
    dashboard = json.loads((Path(__file__).parents[2] / "packaging" / "grafana-dashboard.json").read_text())
    expressions = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    used = {name for expr in expressions for name in re.findall(r"edgeproxy_[a-z_]+", expr)}
    metrics = Metrics(per_key=True, multiprocess=False)
    metrics.observe_call(call(deployment=DEPLOYMENT, usage=Usage(1, 1), cost=1.0, ttft_s=0.1))
    metrics.refresh([{"model_group": "m", "deployment_id": "a", "healthy": True, "cooling_down_until": None}], 0, [])
    metrics.budget_remaining.labels("k").set(1)  # type: ignore[union-attr]
    exported = {name for name, _ in samples(metrics)}
    assert used and used <= exported, used - exported
    assert {"edgeproxy_requests_total", "edgeproxy_team_spend_usd_total", "edgeproxy_budget_remaining_usd"} <= used


def test_workers_refresh_gauges_without_warnings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Multiprocess mode (`--workers N`): prometheus-client cannot drop a series from its files and warns on
    every clear(), which printed a warning at each worker's start. Refreshing, also after a reload, warns not."""
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    # Chosen when prometheus-client is imported, before this test set the directory: the workers' file values.
    monkeypatch.setattr(values, "ValueClass", values.MultiProcessValue())
    metrics = Metrics(multiprocess=True)
    row = {"model_group": "m", "deployment_id": "a", "healthy": False, "cooling_down_until": None}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        metrics.refresh([row], 0)
        metrics.refresh([{**row, "deployment_id": "b", "healthy": True}], 0)  # a reload replaced "a" with "b"
        found = samples(metrics)
    assert found[("edgeproxy_deployment_healthy", (("deployment", "b"), ("model_group", "m")))] == 1
    # What the files cannot forget (README, Metrics): "a" keeps its last value until the restart.
    assert found[("edgeproxy_deployment_healthy", (("deployment", "a"), ("model_group", "m")))] == 0
