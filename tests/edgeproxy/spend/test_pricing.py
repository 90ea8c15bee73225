from __future__ import annotations

import pytest

from edgeproxy.config import parse_config
from edgeproxy.pricing import Pricing
from edgeproxy.providers.base import Usage


def deployment(model: str, **params: object):  # type: ignore[no-untyped-def]
    raw = {"model_list": [{"model_name": "m", "litellm_params": {"model": model, **params}}]}
    return parse_config(raw, env={}).deployments[0]


def test_table_prices_cloud_models_with_cache_tokens() -> None:
    pricing = Pricing()
    claude = deployment("anthropic/claude-sonnet-4-5-20250929")
    usage = Usage(prompt_tokens=1_000_000 + 200, completion_tokens=1_000_000, cache_read_tokens=200)
    # 1M plain input at $3, 200 cache reads at $0.30/M, 1M output at $15
    assert pricing.cost(claude, usage) == pytest.approx(3.0 + 200 * 0.3e-6 + 15.0)
    assert pricing.lookup("deepseek", "deepseek-reasoner") is not None
    assert pricing.lookup("moonshot", "kimi-k2.5") is not None


def test_override_local_and_unknown() -> None:
    pricing = Pricing()
    usage = Usage(prompt_tokens=100, completion_tokens=50)
    custom = deployment("ollama/qwen", input_cost_per_token=0.001, output_cost_per_token=0.002)
    assert pricing.cost(custom, usage) == pytest.approx(0.1 + 0.1)
    assert pricing.cost(deployment("ollama/qwen"), usage) == 0
    assert pricing.cost(deployment("openai/mlx-model", api_base="http://mac:8001/v1"), usage) == 0
    assert pricing.cost(deployment("openai/gpt-4o-mini"), usage) > 0
    mystery = deployment("anthropic/claude-9-ultra")
    assert pricing.cost(mystery, usage) == 0
    assert pricing.cost(mystery, usage) == 0
    assert pricing.unknown["anthropic/claude-9-ultra"] == 2
