"""The router: pick a deployment, retry within the group, fall back to other groups (COMPAT.md, Router).

The router does no I/O of its own. `route()` is handed an `attempt` coroutine function that makes one call
to one deployment and either returns a value or raises `UpstreamError`; for a stream, `attempt` returns once
the first byte arrived, so retries and fallbacks end exactly when bytes could reach the client.

Error handling, in the order it is decided after a failed attempt:
- context-window errors go straight to `context_window_fallbacks` (a retry would fail the same way);
- errors about the request itself (400, 403, 413, 422...: neither retryable nor counting for cooldown)
  propagate at once: no deployment or group would answer differently;
- 401/404 count for cooldown but are not retried in place: they mean "this deployment is misconfigured",
  so another deployment of the group is tried when one has not failed yet, and then fallbacks;
- 408/409/429/5xx/connection errors/timeouts are retried up to `num_retries` times, on a deployment that
  has not failed this request when one exists (at once), else after an exponential backoff;
- then fallback groups, each with its own retries, up to `MAX_FALLBACKS` hops.
Cancellation is never caught: only `UpstreamError` (and `ProxyError` from `allow_group`) is.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, NoReturn, TypeVar

import trio

from edgeproxy.config import Config, Deployment
from edgeproxy.errors import InvalidRequestError, ProxyError, RateLimitError, UpstreamError
from edgeproxy.router.cooldowns import Cooldowns, retry_after_header
from edgeproxy.router.health import HealthProber, Probe, deployment_states, health_report, wall_iso
from edgeproxy.router.state import RouterState
from edgeproxy.router.strategies import make_strategy

T = TypeVar("T")

# LiteLLM's limit too: a long chain of fallbacks only adds latency before the error the client gets anyway.
MAX_FALLBACKS = 5
# Waiting longer than this inside one request is worse than trying a fallback group or failing fast.
MAX_HONOURED_RETRY_AFTER_S = 60.0


@dataclass(frozen=True, slots=True)
class Routed(Generic[T]):
    value: T
    deployment: Deployment
    group: str  # the group that served the call (differs from the requested one after a fallback)
    attempted_retries: int
    attempted_fallbacks: int


class _Unavailable(Exception):
    """No deployment of a group may take a call now (all cooling down, or all at their rpm/tpm limit)."""

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after_s = retry_after_s


@dataclass(slots=True)
class _Walk:
    """What happened so far in one route() call."""

    retries: int = 0
    fallbacks: int = 0
    last_error: UpstreamError | None = None
    unavailable: list[_Unavailable] = field(default_factory=list)


class Router:
    def __init__(self, config: Config, *, rng: random.Random | None = None, state: RouterState | None = None) -> None:
        self._settings = config.router
        self._groups = config.model_groups
        self._deployments = config.deployments
        self._rng = rng or random.Random()
        self.state = state or RouterState()
        self._cooldowns = Cooldowns(self._settings, self.state, self._never_cooled())
        self._strategy = make_strategy(self._settings.routing_strategy, self.state, self._rng)
        self._prober = HealthProber(self.state, self._cooldowns)
        self._started = wall_iso()  # "since" for deployments not probed yet

    # ---------------------------------------------------------------- groups

    def has_group(self, name: str) -> bool:
        return name in self._groups

    def group_names(self) -> list[str]:
        return list(self._groups)

    def deployments(self, group: str) -> tuple[Deployment, ...]:
        return self._groups.get(group, ())

    def _has_fallbacks(self, group: str) -> bool:
        targets = (*self._settings.fallbacks.get(group, ()), *self._settings.default_fallbacks)
        return any(t != group for t in targets)

    def _never_cooled(self) -> frozenset[str]:
        return frozenset(
            deployments[0].deployment_id
            for group, deployments in self._groups.items()
            if len(deployments) == 1 and not self._has_fallbacks(group)
        )

    # ---------------------------------------------------------------- routing

    async def route(
        self,
        group: str,
        attempt: Callable[[Deployment], Awaitable[T]],
        *,
        allow_group: Callable[[str], None] | None = None,
        output_tokens: Callable[[T], int | None] | None = None,
    ) -> Routed[T]:
        """Run `attempt` on a deployment of `group`, retrying and falling back as configured.

        `allow_group(name)` is called before a fallback group is used; a `ProxyError` from it skips that
        group (the key may not use it). `output_tokens(value)` tells latency-based routing how many tokens
        the call produced; leave it out (or return None) for streams, whose attempt time is the time to the
        first token. Raises the last `UpstreamError` (with `attempted_retries`/`attempted_fallbacks`
        attributes) or, when no deployment could be tried at all, a `RateLimitError` with retry-after.
        """
        if group not in self._groups:
            raise InvalidRequestError(f"Invalid model name passed in model={group}", param="model")
        walk = _Walk()
        tried = {group}
        pending: list[str] | None = None  # fallback groups still to try, built when first needed
        in_context_fallbacks = False
        current = group
        while True:
            try:
                value, deployment = await self._serve_group(current, attempt, output_tokens, walk)
                return Routed(value, deployment, current, walk.retries, walk.fallbacks)
            except _Unavailable as gone:
                walk.unavailable.append(gone)
            except UpstreamError as err:
                walk.last_error = err
                if err.context_window:
                    # Only a model with a bigger context can help; ordinary fallbacks are not tried.
                    windows = self._settings.context_window_fallbacks
                    chain = [*windows.get(current, ()), *windows.get(group, ())]
                    pending = chain + (pending or []) if in_context_fallbacks else chain
                    in_context_fallbacks = True
                elif not (err.retryable or err.counts_for_cooldown):
                    _annotate(err, walk)
                    raise
            if pending is None:
                pending = [*self._settings.fallbacks.get(group, ()), *self._settings.default_fallbacks]
            next_group = self._next_fallback(pending, tried, allow_group, walk)
            if next_group is None:
                self._give_up(group, walk)
            tried.add(next_group)
            walk.fallbacks += 1
            current = next_group

    def _next_fallback(
        self, pending: list[str], tried: set[str], allow_group: Callable[[str], None] | None, walk: _Walk
    ) -> str | None:
        while pending and walk.fallbacks < MAX_FALLBACKS:
            name = pending.pop(0)
            if name in tried or name not in self._groups:
                continue
            if allow_group is not None:
                try:
                    allow_group(name)
                except ProxyError:
                    tried.add(name)  # asking again would give the same answer
                    continue
            return name
        return None

    def _give_up(self, group: str, walk: _Walk) -> NoReturn:
        if walk.last_error is not None:
            raise _annotate(walk.last_error, walk)
        first = walk.unavailable[0]
        retry_after = min(u.retry_after_s for u in walk.unavailable)
        message = first.message
        if walk.fallbacks:
            message += f" (fallbacks tried: {walk.fallbacks}, none available)"
        error = RateLimitError(message, headers=retry_after_header(retry_after))
        raise _annotate(error, walk)

    async def _serve_group(
        self,
        group: str,
        attempt: Callable[[Deployment], Awaitable[T]],
        output_tokens: Callable[[T], int | None] | None,
        walk: _Walk,
    ) -> tuple[T, Deployment]:
        failed: set[str] = set()
        retries_left = self._settings.num_retries
        backoffs = 0
        while True:
            deployment = self._pick(group, failed, trio.current_time())
            try:
                value = await self._call(deployment, attempt, output_tokens)
            except UpstreamError as err:
                failed.add(deployment.deployment_id)
                walk.last_error = err
                self._cooldowns.record_failure(deployment, err, trio.current_time())
                if err.context_window or not (err.retryable or err.counts_for_cooldown) or retries_left <= 0:
                    raise
                available = self._available(group, trio.current_time())
                if not any(d.deployment_id not in failed for d in available):
                    if not available or not err.retryable:
                        raise  # nothing in this group can help now: on to fallbacks
                    backoffs += 1
                    delay = self._backoff_s(backoffs, err.retry_after_s)
                    if delay is None:
                        raise
                    await trio.sleep(delay)
                retries_left -= 1
                walk.retries += 1
                continue
            return value, deployment

    async def _call(
        self,
        deployment: Deployment,
        attempt: Callable[[Deployment], Awaitable[T]],
        output_tokens: Callable[[T], int | None] | None,
    ) -> T:
        deployment_id = deployment.deployment_id
        start = trio.current_time()
        self.state.start_call(deployment_id, start)
        try:
            value = await attempt(deployment)
        finally:
            self.state.end_call(deployment_id)
        tokens = output_tokens(value) if output_tokens is not None else None
        elapsed = trio.current_time() - start
        self.state.add_latency(deployment_id, elapsed / max(1, tokens or 1))
        return value

    def _backoff_s(self, n: int, retry_after_s: float | None) -> float | None:
        """The wait before the n-th in-place retry, or None when the upstream asks for too long a wait."""
        if retry_after_s is not None and retry_after_s > 0:
            return retry_after_s if retry_after_s <= MAX_HONOURED_RETRY_AFTER_S else None
        base = self._settings.retry_backoff_base_s
        delay = min(self._settings.retry_backoff_max_s, base * 2 ** (n - 1))
        # Equal jitter: spreads out clients that failed together without ever retrying at once.
        return delay / 2 + self._rng.uniform(0, delay / 2)

    # ---------------------------------------------------------------- choosing a deployment

    def _available(self, group: str, now: float) -> list[Deployment]:
        """Deployments not cooling down; unhealthy ones only when every such deployment is unhealthy."""
        live = [d for d in self._groups[group] if not self._cooldowns.is_cooling(d, now)]
        healthy = [d for d in live if self.state.health(d.deployment_id).healthy is not False]
        return healthy or live

    def _pick(self, group: str, failed: set[str], now: float) -> Deployment:
        available = self._available(group, now)
        if not available:
            deployments = self._groups[group]
            raise _Unavailable(
                f"No deployments available for model group {group!r}: all {len(deployments)} are cooling down",
                self._cooldowns.retry_after_s(deployments, now),
            )
        fresh = [d for d in available if d.deployment_id not in failed]
        candidates = fresh or available
        for tier in _order_tiers(candidates):
            eligible = self._strategy.eligible(tier, now)
            if eligible:
                return self._strategy.choose(eligible, now)
        raise _Unavailable(
            f"No deployments available for model group {group!r}: every deployment has reached its rpm/tpm "
            "limit for this minute",
            60.0 - now % 60.0,
        )

    # ---------------------------------------------------------------- usage, health, reports

    def record_tokens(self, deployment: Deployment, tokens: int) -> None:
        """Count a finished call's tokens against its deployment's tpm for this minute."""
        self.state.add_tokens(deployment.deployment_id, tokens, trio.current_time())

    async def serve_health_probes(
        self,
        probe: Probe,
        *,
        interval_s: float,
        timeout_s: float,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> NoReturn:
        """Probe every deployment now and then every `interval_s`, one task each; never returns."""
        await self._prober.serve(
            self._deployments, probe, interval_s=interval_s, timeout_s=timeout_s, task_status=task_status
        )

    def health_report(self) -> dict[str, Any]:
        return health_report(self._deployments, self.state, self._cooldowns, self._started)

    def deployment_states(self) -> list[dict[str, Any]]:
        return deployment_states(self._deployments, self.state, self._cooldowns)


def _order_tiers(candidates: Sequence[Deployment]) -> list[list[Deployment]]:
    """Candidates grouped by `order`, best first: lower is preferred, no order comes after every number."""
    tiers: dict[tuple[bool, int], list[Deployment]] = {}
    for d in candidates:
        tiers.setdefault((d.order is None, d.order or 0), []).append(d)
    return [tiers[key] for key in sorted(tiers)]


def _annotate(error: ProxyError, walk: _Walk) -> ProxyError:
    # For the x-litellm-attempted-retries / -fallbacks headers on error responses too.
    setattr(error, "attempted_retries", walk.retries)  # noqa: B010
    setattr(error, "attempted_fallbacks", walk.fallbacks)  # noqa: B010
    return error
