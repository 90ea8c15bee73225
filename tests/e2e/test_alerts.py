"""Alerts reach a webhook: one per budget threshold, one down/up pair for a deployment that dies and returns."""

from __future__ import annotations

import trio

from tests.e2e.conftest import create_key, make_config, openai_model, running_proxy
from tests.e2e.webhook import open_webhook_receiver
from tests.fakes import FakeUpstream, open_fake_upstream

HELLO = [{"role": "user", "content": "hi"}]
KEY = "sk-alerts-budget-key-0001"


def _alerting(url: str, **extra: object) -> dict[str, object]:
    return {
        "alerting": ["webhook"],
        "alerting_webhook_url": url,
        "alerting_args": {"check_interval": 0.05},
        **extra,
    }


async def test_one_alert_per_budget_threshold(fake: FakeUpstream) -> None:
    fake.usage = (3, 2)  # 5 tokens at 0.001 USD: 0.005 USD a call; 80 % of 0.05 after 8 calls, 100 % after 10
    priced = openai_model("m", fake, input_cost_per_token=0.001, output_cost_per_token=0.001, max_tokens=2)
    async with open_webhook_receiver() as hook:
        config = make_config([priced], general_settings=_alerting(hook.url))
        assert config.general.database_url is not None
        create_key(config.general.database_url, KEY, key_alias="budget-key", max_budget=0.05)
        async with running_proxy(config) as proxy, proxy.client(KEY) as client:
            statuses = []
            for _ in range(13):
                response = await client.post("/v1/chat/completions", json={"model": "m", "messages": HELLO})
                statuses.append(response.status_code)
            await hook.wait_for(lambda: len(hook.matching("budget-key")) >= 2)
            await trio.sleep(0.3)  # time for any duplicate to arrive
    assert statuses[:10] == [200] * 10
    assert set(statuses[10:]) == {422}  # the budget is used up
    assert len(hook.matching("Budget 80% used", "key budget-key")) == 1
    assert len(hook.matching("Budget exhausted", "key budget-key")) == 1
    assert len(hook.matching("budget-key")) == 2
    assert all(KEY not in text for text in hook.texts)


async def test_deployment_down_and_back_up_alerts_once_each(fake: FakeUpstream) -> None:
    async with open_webhook_receiver() as hook, open_fake_upstream() as flaky:
        health = {"background_health_checks": True, "health_check_interval": 0.1, "health_check_timeout": 1}
        models = [openai_model("m", fake), {**openai_model("flaky", flaky), "model_info": {"id": "flaky-box"}}]
        config = make_config(models, general_settings=_alerting(hook.url, **health))
        async with running_proxy(config):
            await trio.sleep(0.5)  # healthy: nothing to say
            assert hook.texts == []
            await flaky.stop()
            await hook.wait_for(lambda: bool(hook.matching("Deployment down", "flaky-box")))
            await trio.sleep(0.5)  # still down: no repeat
            await flaky.start()
            await hook.wait_for(lambda: bool(hook.matching("Deployment back up", "flaky-box")))
            await trio.sleep(0.5)
    assert len(hook.matching("Deployment down", "flaky-box")) == 1
    assert len(hook.matching("Deployment back up", "flaky-box")) == 1
    assert len(hook.texts) == 2  # the healthy deployment never alerted
    assert hook.texts[0].startswith("edgeproxy@")
