"""What a call costs: the built-in price table (a data file in the package), overridden per deployment.

Local models (Ollama, mock, OpenAI-compatible servers that are not OpenAI's) cost 0 unless priced in the
config. A cloud model missing from the table costs 0 too, and is counted and logged once so it is noticed.
"""

from __future__ import annotations

import json
import logging
import re
from collections import Counter
from dataclasses import dataclass
from importlib import resources
from typing import Any
from urllib.parse import urlsplit

from edgeproxy.config import Deployment
from edgeproxy.providers.base import Usage

log = logging.getLogger("edgeproxy.pricing")
PER_MILLION = 1_000_000
_LOCAL_PROVIDERS = frozenset({"ollama", "ollama_chat", "mock"})
_CLOUD_HOSTS = {"openai": "api.openai.com"}
_DATE_SUFFIX = re.compile(r"-(\d{8}|\d{4}-\d{2}-\d{2}|latest)$")


@dataclass(frozen=True, slots=True)
class Price:
    """USD per token."""

    input: float = 0.0
    output: float = 0.0
    cache_read: float = 0.0
    cache_write: float = 0.0

    @property
    def is_free(self) -> bool:
        return not (self.input or self.output or self.cache_read or self.cache_write)

    def cost(self, usage: Usage) -> float:
        # Providers count cache reads and writes inside prompt_tokens; bill those at their own price.
        plain_input = max(0, usage.prompt_tokens - usage.cache_read_tokens - usage.cache_write_tokens)
        return (
            plain_input * self.input
            + usage.cache_read_tokens * self.cache_read
            + usage.cache_write_tokens * self.cache_write
            + usage.completion_tokens * self.output
        )


FREE = Price()


def load_price_table() -> dict[str, Price]:
    raw: dict[str, Any] = json.loads(resources.files("edgeproxy").joinpath("data/prices.json").read_text())
    return {
        name: Price(*(value / PER_MILLION for value in values))
        for name, values in raw.items()
        if not name.startswith("_")
    }


def is_local(deployment: Deployment) -> bool:
    if deployment.provider in _LOCAL_PROVIDERS:
        return True
    cloud_host = _CLOUD_HOSTS.get(deployment.provider)
    return cloud_host is not None and urlsplit(deployment.api_base).hostname != cloud_host


class Pricing:
    def __init__(self, table: dict[str, Price] | None = None) -> None:
        self.table = load_price_table() if table is None else table
        self.unknown: Counter[str] = Counter()  # calls of cloud models we had no price for

    def lookup(self, provider: str, model: str) -> Price | None:
        name = f"{provider}/{model}"
        if name in self.table:
            return self.table[name]
        undated = _DATE_SUFFIX.sub("", name)  # claude-3-5-sonnet-20241022 → claude-3-5-sonnet
        return self.table.get(undated)

    def price(self, deployment: Deployment) -> Price:
        if deployment.input_cost_per_token is not None or deployment.output_cost_per_token is not None:
            return Price(input=deployment.input_cost_per_token or 0.0, output=deployment.output_cost_per_token or 0.0)
        if is_local(deployment):
            return FREE
        found = self.lookup(deployment.provider, deployment.model)
        if found is not None:
            return found
        if deployment.litellm_model not in self.unknown:
            log.warning(
                "no price known for %s: its calls cost 0 (set input/output_cost_per_token)", deployment.litellm_model
            )
        self.unknown[deployment.litellm_model] += 1
        return FREE

    def cost(self, deployment: Deployment, usage: Usage) -> float:
        return self.price(deployment).cost(usage)

    def max_price(self, deployments: tuple[Deployment, ...]) -> Price:
        """The dearest deployment of a group: what a reservation must assume before routing picks one."""
        prices = [self.price(d) for d in deployments] or [FREE]
        return max(prices, key=lambda p: (p.input + p.output, p.output))
