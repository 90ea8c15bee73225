"""Prometheus metrics (`GET /metrics`), counted as calls finish and refreshed from router state when scraped.

Two modes, picked once per process:
- one process: the families live in this object's own `CollectorRegistry` (not prometheus-client's global one:
  no module-level state, and several gateways in one test process must not collide);
- `--workers N`: `run_workers` points `PROMETHEUS_MULTIPROC_DIR` at a fresh directory before the workers start,
  so prometheus-client keeps every value in a per-process file there, and a scrape, which reaches any one
  worker, adds up every worker's files (`MultiProcessCollector`). Gauges say how to combine workers: health
  takes the worst view (`livemin`), cooldown any worker's (`livemax`), the spend queue the sum (`livesum`).
  A worker's own gauges are written by `refresh()`: at each scrape for the worker answering it, and every
  `REFRESH_INTERVAL_S` for all of them (`serve_refresh`).

The hot path (`observe_call`) does one dict lookup for label children bound in advance per (model group,
deployment, status) and a few increments: no label resolution, no allocation after the first call of a kind.
No label ever holds a key or a secret: keys appear only as their `key_alias`, and only when
`metrics_per_key` is on.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import trio
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)

if TYPE_CHECKING:
    from edgeproxy.calls import CallRecord

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
REFRESH_INTERVAL_S = 2.0
CONTENT_TYPE = CONTENT_TYPE_LATEST
# LLM calls take from tens of milliseconds (a cache hit, an embedding) to minutes (a long local generation).
DURATION_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0)
TTFT_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0)
NO_DEPLOYMENT = "none"  # the call failed before any deployment answered
CACHE_DEPLOYMENT = "cache"  # answered from the response cache
NO_ALIAS = "(no alias)"


@dataclass(slots=True)
class _Bound:
    """Label children for one (model group, deployment, status), bound once."""

    requests: Any
    duration: Any
    ttft: Any
    prompt_tokens: Any
    completion_tokens: Any
    cache_read_tokens: Any
    spend: Any


class Metrics:
    def __init__(self, *, per_key: bool = False, multiprocess: bool | None = None) -> None:
        self.multiprocess = bool(os.environ.get(MULTIPROC_ENV)) if multiprocess is None else multiprocess
        # `*_created` timestamps would double the series a scrape stores; Prometheus detects counter resets
        # without them. A process-wide switch of the library, and this process's only user of it is us.
        disable_created_metrics()
        self.per_key = per_key
        # Multiprocess: registered nowhere; the values are in files that `render` collects from every worker.
        registry = None if self.multiprocess else CollectorRegistry()
        self._registry = registry
        group = ["model_group"]
        self.requests = Counter(
            "edgeproxy_requests_total",
            "LLM calls finished, by model group, deployment (cache: answered from the cache) and status",
            ["model_group", "deployment", "status"],
            registry=registry,
        )
        self.duration = Histogram(
            "edgeproxy_request_duration_seconds",
            "Time from the request's arrival to the end of its answer (the whole stream for streams)",
            group,
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        self.ttft = Histogram(
            "edgeproxy_time_to_first_token_seconds",
            "Time from a streamed request's arrival to its first chunk from the upstream",
            group,
            buckets=TTFT_BUCKETS,
            registry=registry,
        )
        self.tokens = Counter(
            "edgeproxy_tokens_total", "Tokens by kind (prompt, completion, cache_read)", ["model_group", "kind"],
            registry=registry,
        )  # fmt: skip
        self.spend = Counter("edgeproxy_spend_usd_total", "Spend in USD", group, registry=registry)
        self.team_spend = Counter("edgeproxy_team_spend_usd_total", "Spend in USD by team", ["team"], registry=registry)
        self.healthy = Gauge(
            "edgeproxy_deployment_healthy",
            "1 unless the deployment's last health probe failed",
            ["model_group", "deployment"],
            registry=registry,
            multiprocess_mode="livemin",
        )
        self.cooldown = Gauge(
            "edgeproxy_deployment_cooldown",
            "1 while the deployment is cooling down after failures (it gets no traffic)",
            ["model_group", "deployment"],
            registry=registry,
            multiprocess_mode="livemax",
        )
        cache = Counter(
            "edgeproxy_cache_requests_total", "Response cache lookups by result (hit, miss)", ["result"],
            registry=registry,
        )  # fmt: skip
        self._cache_hit, self._cache_miss = cache.labels("hit"), cache.labels("miss")
        self._rate_limited = Counter(
            "edgeproxy_rate_limited_total",
            "Requests refused by a key, user or team rate limit (rpm, tpm, parallel)",
            registry=registry,
        )
        self.spend_queue = Gauge(
            "edgeproxy_spend_queue_depth",
            "Spend records waiting to be written to the database",
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.key_spend: Counter | None = None
        self.budget_remaining: Gauge | None = None
        if per_key:
            self.key_spend = Counter(
                "edgeproxy_key_spend_usd_total", "Spend in USD by key alias", ["key_alias"], registry=registry
            )
            self.budget_remaining = Gauge(
                "edgeproxy_budget_remaining_usd",
                "max_budget minus spend, for keys with an alias and a max_budget",
                ["key_alias"],
                registry=registry,
                multiprocess_mode="livemin",
            )
        self._bound: dict[tuple[str, str, str], _Bound] = {}
        self._teams: dict[str, Any] = {}
        self._keys: dict[str, Any] = {}
        self._deployments: frozenset[tuple[str, str]] = frozenset()
        # Its own limiter: trio's default one is shared with DNS lookups (DESIGN.md).
        self.render_limiter = trio.CapacityLimiter(1)

    # ---------------------------------------------------------------- the hot path

    def observe_call(self, record: CallRecord) -> None:
        """One finished call (the accounting calls this once per record, after pricing it)."""
        deployment = record.deployment
        if deployment is not None:
            name = deployment.deployment_id
        else:
            name = CACHE_DEPLOYMENT if record.cache_hit else NO_DEPLOYMENT
        key = (record.model_group, name, record.status)
        bound = self._bound.get(key)
        if bound is None:
            bound = self._bind(key)
        bound.requests.inc()
        bound.duration.observe(time.monotonic() - record.start_monotonic)
        if record.ttft_s is not None:
            bound.ttft.observe(record.ttft_s)
        usage = record.usage
        if usage is not None:
            if usage.prompt_tokens:
                bound.prompt_tokens.inc(usage.prompt_tokens)
            if usage.completion_tokens:
                bound.completion_tokens.inc(usage.completion_tokens)
            if usage.cache_read_tokens:
                bound.cache_read_tokens.inc(usage.cache_read_tokens)
        cost = record.cost
        if cost > 0:
            bound.spend.inc(cost)
            self._spend_by_owner(record, cost)

    def _bind(self, key: tuple[str, str, str]) -> _Bound:
        group = key[0]
        bound = self._bound[key] = _Bound(
            requests=self.requests.labels(*key),
            duration=self.duration.labels(group),
            ttft=self.ttft.labels(group),
            prompt_tokens=self.tokens.labels(group, "prompt"),
            completion_tokens=self.tokens.labels(group, "completion"),
            cache_read_tokens=self.tokens.labels(group, "cache_read"),
            spend=self.spend.labels(group),
        )
        return bound

    def _spend_by_owner(self, record: CallRecord, cost: float) -> None:
        team = record.principal.team_id
        if team is not None:
            child = self._teams.get(team)
            if child is None:
                child = self._teams[team] = self.team_spend.labels(team)
            child.inc(cost)
        if self.key_spend is not None:
            alias = record.principal.key_alias or NO_ALIAS
            child = self._keys.get(alias)
            if child is None:
                child = self._keys[alias] = self.key_spend.labels(alias)
            child.inc(cost)

    def cache_lookup(self, hit: bool) -> None:
        (self._cache_hit if hit else self._cache_miss).inc()

    def rate_limited(self) -> None:
        self._rate_limited.inc()

    # ---------------------------------------------------------------- gauges, from state

    def refresh(
        self,
        deployments: Iterable[Mapping[str, Any]],
        spend_queue_depth: int,
        budgets: Iterable[tuple[str, float]] = (),
    ) -> None:
        """Set the gauges from router state (`Router.deployment_states()`), the spend writer and the ledger."""
        rows = list(deployments)
        current = frozenset((row["model_group"], row["deployment_id"]) for row in rows)
        if current != self._deployments:
            # After a config reload: drop deployments that are gone (children are re-created below; this
            # happens only when the set changes, so the multiprocess value objects do not pile up). Not on the
            # first refresh, with nothing to drop; not with workers, where the values live in files that
            # prometheus-client cannot remove from (it only warns), so a removed deployment keeps its last
            # value there until the restart (README, Metrics).
            if self._deployments and not self.multiprocess:
                self.healthy.clear()
                self.cooldown.clear()
            self._deployments = current
        for row in rows:
            labels = (row["model_group"], row["deployment_id"])
            self.healthy.labels(*labels).set(0 if row["healthy"] is False else 1)
            self.cooldown.labels(*labels).set(1 if row["cooling_down_until"] else 0)
        self.spend_queue.set(spend_queue_depth)
        if self.budget_remaining is not None:
            for alias, remaining in budgets:
                self.budget_remaining.labels(alias).set(remaining)

    def render(self) -> bytes:
        """The exposition text (sync: the API runs it in a thread, since multiprocess mode reads files)."""
        if self._registry is not None:
            return generate_latest(self._registry)
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry)


async def serve_refresh(refresh: Callable[[], None], interval_s: float = REFRESH_INTERVAL_S) -> None:
    """Multiprocess mode: write this worker's gauges now and then, since a scrape may reach another worker."""
    while True:
        refresh()
        await trio.sleep(interval_s)
