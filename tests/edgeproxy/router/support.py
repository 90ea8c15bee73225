"""Building blocks for router tests: configs from plain dicts and a scriptable fake upstream."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable
from typing import Any

from edgeproxy.config import Config, Deployment, parse_config
from edgeproxy.errors import UpstreamError, UpstreamHTTPError
from edgeproxy.router import Router


def dep(group: str, deployment_id: str, **params: Any) -> dict[str, Any]:
    """One model_list entry, as it would appear in config.yaml."""
    litellm_params = {"model": "mock/test-model", "api_base": f"http://{deployment_id}.test:8000/v1", **params}
    return {"model_name": group, "litellm_params": litellm_params, "model_info": {"id": deployment_id}}


def make_config(*deployments: dict[str, Any], **router_settings: Any) -> Config:
    return parse_config({"model_list": list(deployments), "router_settings": router_settings}, env={})


def make_router(*deployments: dict[str, Any], seed: int = 7, **router_settings: Any) -> Router:
    return Router(make_config(*deployments, **router_settings), rng=random.Random(seed))


def http_error(status: int = 500, **kwargs: Any) -> Callable[[], UpstreamError]:
    return lambda: UpstreamHTTPError(f"upstream said {status}", upstream_status=status, **kwargs)


class FakeUpstream:
    """An `attempt` function: answers with the deployment id unless told to fail for that deployment.

    `failures[id]` makes a fresh exception per call; `script[id]` is a list of outcomes used up in order
    (None = succeed), after which the deployment succeeds.
    """

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.failures: dict[str, Callable[[], UpstreamError]] = {}
        self.script: dict[str, list[Callable[[], UpstreamError] | None]] = {}

    async def __call__(self, deployment: Deployment) -> str:
        deployment_id = deployment.deployment_id
        self.calls.append(deployment_id)
        queued = self.script.get(deployment_id)
        if queued:
            outcome = queued.pop(0)
            if outcome is not None:
                raise outcome()
            return deployment_id
        failure = self.failures.get(deployment_id)
        if failure is not None:
            raise failure()
        return deployment_id

    def counts(self) -> Counter[str]:
        return Counter(self.calls)
