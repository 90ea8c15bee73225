"""Routing strategies: which deployment of a group takes the next call (COMPAT.md, Router).

A strategy sees only candidates the router already filtered (not cooling down, healthy when possible, not
yet failed in this request, best `order` tier). It answers two questions: which of them may take a call at
all (`eligible`: only usage-based routing says no, when a deployment's rpm/tpm for this minute is spent) and
which one to use (`choose`). Ties are broken at random so equal deployments share the load.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Protocol

from edgeproxy.config import Deployment
from edgeproxy.router.state import RouterState


class Strategy(Protocol):
    def eligible(self, candidates: Sequence[Deployment], now: float) -> list[Deployment]: ...

    def choose(self, candidates: Sequence[Deployment], now: float) -> Deployment: ...


class _Base:
    def __init__(self, state: RouterState, rng: random.Random) -> None:
        self.state = state
        self.rng = rng

    def eligible(self, candidates: Sequence[Deployment], now: float) -> list[Deployment]:
        return list(candidates)

    def choose(self, candidates: Sequence[Deployment], now: float) -> Deployment:
        raise NotImplementedError

    def _lowest(self, candidates: Sequence[Deployment], key: Callable[[Deployment], float]) -> Deployment:
        best = min(key(d) for d in candidates)
        return self.rng.choice([d for d in candidates if key(d) == best])


class SimpleShuffle(_Base):
    """Weighted random: by `weight`, else `rpm`, else `tpm`, else uniform.

    A deployment without a `weight` counts as weight 1 when others have one (so `weight: 3` means three
    times the others, as people expect). rpm/tpm are used only when every candidate has them, because a
    missing limit means "unlimited", which no number represents fairly.
    """

    def choose(self, candidates: Sequence[Deployment], now: float) -> Deployment:
        weights = self._weights(candidates)
        if weights is None or sum(weights) <= 0:
            return self.rng.choice(list(candidates))
        return self.rng.choices(list(candidates), weights=weights)[0]

    @staticmethod
    def _weights(candidates: Sequence[Deployment]) -> list[float] | None:
        if any(d.weight is not None for d in candidates):
            return [d.weight if d.weight is not None else 1.0 for d in candidates]
        rpms = [d.rpm for d in candidates]
        if all(r is not None for r in rpms):
            return [float(r or 0) for r in rpms]
        tpms = [d.tpm for d in candidates]
        if all(t is not None for t in tpms):
            return [float(t or 0) for t in tpms]
        return None


class LeastBusy(_Base):
    """Fewest calls in flight in this process."""

    def choose(self, candidates: Sequence[Deployment], now: float) -> Deployment:
        return self._lowest(candidates, lambda d: self.state.in_flight(d.deployment_id))


class UsageBased(_Base):
    """Lowest tokens used this minute, among deployments with rpm and tpm room left this minute.

    Requests count when a call starts; tokens when the caller reports usage (`Router.record_tokens`). Both
    LiteLLM variants (v1 and v2) behave the same here: v2 exists in LiteLLM to fix v1's Redis races, and
    per-process counters have none.
    """

    def eligible(self, candidates: Sequence[Deployment], now: float) -> list[Deployment]:
        return [d for d in candidates if self._has_room(d, now)]

    def choose(self, candidates: Sequence[Deployment], now: float) -> Deployment:
        return self._lowest(candidates, lambda d: self.state.usage(d.deployment_id, now)[1])

    def _has_room(self, deployment: Deployment, now: float) -> bool:
        requests, tokens = self.state.usage(deployment.deployment_id, now)
        if deployment.rpm is not None and requests >= deployment.rpm:
            return False
        return deployment.tpm is None or tokens < deployment.tpm


class LatencyBased(_Base):
    """Lowest recent average seconds per output token; deployments never measured go first.

    Trying untried deployments first is how a new or recovered deployment gets a measurement at all;
    otherwise the first fast-enough deployment would take every call forever.
    """

    def choose(self, candidates: Sequence[Deployment], now: float) -> Deployment:
        untried = [d for d in candidates if self.state.average_latency(d.deployment_id) is None]
        if untried:
            return self.rng.choice(untried)
        return self._lowest(candidates, lambda d: self.state.average_latency(d.deployment_id) or 0.0)


class CostBased(_Base):
    """Lowest input + output price per token; an unpriced deployment (local model) costs 0."""

    def choose(self, candidates: Sequence[Deployment], now: float) -> Deployment:
        return self._lowest(candidates, lambda d: (d.input_cost_per_token or 0.0) + (d.output_cost_per_token or 0.0))


_STRATEGIES: dict[str, type[_Base]] = {
    "simple-shuffle": SimpleShuffle,
    "least-busy": LeastBusy,
    "usage-based-routing": UsageBased,
    "usage-based-routing-v2": UsageBased,
    "latency-based-routing": LatencyBased,
    "cost-based-routing": CostBased,
}


def make_strategy(name: str, state: RouterState, rng: random.Random) -> Strategy:
    try:
        return _STRATEGIES[name](state, rng)
    except KeyError:
        raise ValueError(f"unknown routing strategy {name!r}; one of: {', '.join(_STRATEGIES)}") from None
