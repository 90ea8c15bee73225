"""Two instances on one Redis route as one: a deployment cooled down by one is skipped by the other."""

from __future__ import annotations

import pytest
import trio

from tests.e2e.conftest import openai_model, running_proxy
from tests.e2e.redis_support import redis_config, redis_space, requires_redis
from tests.fakes import open_fake_upstream

CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


@pytest.mark.redis
@requires_redis
async def test_a_cooldown_started_on_one_instance_applies_on_the_other() -> None:
    async with open_fake_upstream() as bad, open_fake_upstream() as good:
        bad.fail_always(status=500)
        models = [
            {**openai_model("m", bad, order=1), "model_info": {"id": "bad"}},  # tried first while it is usable
            {**openai_model("m", good, order=2), "model_info": {"id": "good"}},
        ]
        with redis_space() as space:
            router = {"allowed_fails": 0, "cooldown_time": 60, "num_retries": 1}
            config = redis_config(models, space, cache=False, router_settings=router)
            async with (
                running_proxy(config) as first,
                running_proxy(config) as second,
                first.client() as a,
                second.client() as b,
            ):
                assert (await a.post("/v1/chat/completions", json=CHAT)).status_code == 200
                assert len(bad.requests) == 1  # the first instance failed there once and cooled it down
                with trio.fail_after(5):  # the other instance hears of it (a condition, bounded)
                    while not (await b.get("/health")).json()["unhealthy_endpoints"]:
                        await trio.sleep(0.02)
                unhealthy = (await b.get("/health")).json()["unhealthy_endpoints"]
                answers = [await b.post("/v1/chat/completions", json=CHAT) for _ in range(3)]
    assert [e["deployment_id"] for e in unhealthy] == ["bad"] and "cooling_down_until" in unhealthy[0]
    assert all(r.status_code == 200 and r.headers["x-litellm-model-id"] == "good" for r in answers)
    assert len(bad.requests) == 1  # the second instance never tried it
