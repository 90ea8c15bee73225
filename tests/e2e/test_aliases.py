"""Model aliases through the real server: served, billed, cached and logged as the target group; access rules
apply to the target; key aliases beat team aliases beat the config's; hidden aliases stay out of /v1/models."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import trio

from edgeproxy.auth import hash_key
from edgeproxy.config import Config
from storage import Storage
from tests.e2e.conftest import MASTER_KEY, Proxy, make_config, openai_model, running_proxy
from tests.fakes import FakeUpstream

HELLO = [{"role": "user", "content": "hi"}]
LOCAL_PRICE = (0.001, 0.002)  # fake.usage is (10, 5) tokens
CLOUD_PRICE = (0.01, 0.02)
LOCAL_COST = 10 * LOCAL_PRICE[0] + 5 * LOCAL_PRICE[1]


def config(fake: FakeUpstream, **litellm: Any) -> Config:
    def group(name: str, price: tuple[float, float]) -> dict[str, Any]:
        model = openai_model(name, fake, input_cost_per_token=price[0], output_cost_per_token=price[1])
        model["litellm_params"]["model"] = f"openai/{name}-model"  # what reaches the upstream tells them apart
        return model

    aliases = {"gpt-4o": "local", "quiet": {"model": "local", "hidden": True}, "premium": "cloud"}
    return make_config(
        [group("local", LOCAL_PRICE), group("cloud", CLOUD_PRICE), group("other", (0.0, 0.0))],
        router_settings={"model_group_alias": aliases},
        general_settings={"proxy_batch_write_at": 0.05},
        **({"litellm_settings": litellm} if litellm else {}),
    )


async def post(proxy: Proxy, path: str, body: dict[str, Any], key: str = MASTER_KEY) -> httpx.Response:
    async with proxy.client(key) as client:
        return await client.post(path, json=body)


async def new_key(proxy: Proxy, **fields: Any) -> str:
    response = await post(proxy, "/key/generate", fields)
    assert response.status_code == 200, response.text
    return str(response.json()["key"])


async def chat(proxy: Proxy, key: str, model: str) -> httpx.Response:
    return await post(proxy, "/v1/chat/completions", {"model": model, "messages": HELLO}, key)


async def served_by(proxy: Proxy, fake: FakeUpstream, key: str, model: str) -> str:
    """The model group that answered (header), checked against what the upstream was asked for."""
    response = await chat(proxy, key, model)
    assert response.status_code == 200, response.text
    group = response.headers["x-litellm-model-group"]
    assert fake.requests[-1].json["model"] == f"{group}-model"
    return group


async def spend_logs(url: str, token: str, count: int) -> list[dict[str, Any]]:
    """Poll the database (bounded) until the spend writer has flushed `count` rows for the key."""
    with trio.fail_after(10):
        while True:
            with Storage.open(url) as storage:
                rows, total = storage.spend.logs(api_key=token)
            if total >= count:
                return [dict(row) for row in rows]
            await trio.sleep(0.05)


async def test_an_alias_is_served_billed_and_logged_as_its_target(fake: FakeUpstream) -> None:
    cfg = config(fake, cache=True, cache_params={"type": "local"})
    async with running_proxy(cfg) as proxy:
        key = await new_key(proxy)
        response = await chat(proxy, key, "gpt-4o")
        assert response.status_code == 200, response.text
        assert response.headers["x-litellm-model-group"] == "local"
        assert response.headers["x-litellm-model-id"] == "local-0"
        assert fake.requests[-1].json["model"] == "local-model"
        assert float(response.headers["x-litellm-response-cost"]) == pytest.approx(LOCAL_COST)
        assert response.json()["model"] == "gpt-4o"  # the client sees the name it asked for
        # The cache key is computed on the target group: the group's own name hits the alias's entry.
        hit = await chat(proxy, key, "local")
        assert "x-litellm-cache-key" in hit.headers and len(fake.requests) == 1
        assert await served_by(proxy, fake, key, "premium") == "cloud"
        rows = await spend_logs(cfg.general.database_url or "", hash_key(key), 3)
        async with proxy.client() as admin:
            metrics = (await admin.get("/metrics")).text
    # Metrics are labelled with the target group; no series carries the alias.
    assert 'model_group="local"' in metrics and 'model_group="cloud"' in metrics
    assert 'model_group="gpt-4o"' not in metrics and 'model_group="premium"' not in metrics
    by_group = sorted((row["model_group"], row["cache_hit"], row["cost"]) for row in rows)
    assert by_group[0][:2] == ("cloud", False)
    assert by_group[1:] == [("local", False, pytest.approx(LOCAL_COST)), ("local", True, 0.0)]


async def test_the_allow_list_applies_to_what_the_alias_resolves_to(fake: FakeUpstream) -> None:
    async with running_proxy(config(fake)) as proxy:
        cloud_only = await new_key(proxy, models=["cloud"])
        refused = await chat(proxy, cloud_only, "gpt-4o")  # gpt-4o is served by local
        assert refused.status_code == 403, refused.text
        assert refused.json()["error"]["type"] == "permission_error"
        assert "'local'" in refused.json()["error"]["message"]
        assert await served_by(proxy, fake, cloud_only, "premium") == "cloud"
        # A key's own alias cannot reach past its allow-list either.
        sneaky = await new_key(proxy, models=["cloud"], aliases={"cloud-ish": "other"})
        assert (await chat(proxy, sneaky, "cloud-ish")).status_code == 403
        local_only = await new_key(proxy, models=["local"])
        assert await served_by(proxy, fake, local_only, "gpt-4o") == "local"
        # A config alias in an allow-list stands for its target group, under either name.
        by_alias = await new_key(proxy, models=["gpt-4o"])
        assert await served_by(proxy, fake, by_alias, "gpt-4o") == "local"
        assert await served_by(proxy, fake, by_alias, "local") == "local"
        assert (await chat(proxy, by_alias, "cloud")).status_code == 403


async def test_key_aliases_beat_team_aliases_beat_the_config(fake: FakeUpstream) -> None:
    async with running_proxy(config(fake)) as proxy:
        team = await post(proxy, "/team/new", {"team_id": "red", "model_aliases": {"gpt-4o": "cloud"}})
        assert team.status_code == 200, team.text
        plain = await new_key(proxy)
        in_team = await new_key(proxy, team_id="red")
        own = await new_key(proxy, team_id="red", aliases={"gpt-4o": "other"})
        assert await served_by(proxy, fake, plain, "gpt-4o") == "local"
        assert await served_by(proxy, fake, in_team, "gpt-4o") == "cloud"
        assert await served_by(proxy, fake, own, "gpt-4o") == "other"
        # Changes apply to the next request, and /key/info and /team/info show them.
        assert (await post(proxy, "/key/update", {"key": own, "aliases": {}})).status_code == 200
        assert await served_by(proxy, fake, own, "gpt-4o") == "cloud"
        updated = await post(proxy, "/team/update", {"team_id": "red", "model_aliases": {"gpt-4o": "other"}})
        assert updated.status_code == 200, updated.text
        assert await served_by(proxy, fake, in_team, "gpt-4o") == "other"
        async with proxy.client() as client:
            team_info = (await client.get("/team/info", params={"team_id": "red"})).json()
            aliased = await new_key(proxy, aliases={"fast": {"model": "cloud", "hidden": True}})
            key_info = (await client.get("/key/info", params={"key": aliased})).json()
        assert team_info["team_info"]["model_aliases"] == {"gpt-4o": "other"}
        assert key_info["info"]["aliases"] == {"fast": {"model": "cloud", "hidden": True}}


async def test_alias_input_is_checked(fake: FakeUpstream) -> None:
    async with running_proxy(config(fake)) as proxy:
        for path, field, extra in (("/key/generate", "aliases", {}), ("/team/new", "model_aliases", {})):
            for value, param in (
                ({"x": "missing"}, f"{field}.x"),
                ({"x": "gpt-4o"}, f"{field}.x"),  # an alias, not a group
                ("local", field),
            ):
                response = await post(proxy, path, {field: value, **extra})
                assert response.status_code == 400, response.text
                assert response.json()["error"]["param"] == param


async def test_models_lists_visible_aliases_of_the_key(fake: FakeUpstream) -> None:
    async with running_proxy(config(fake)) as proxy:

        async def listed(key: str) -> list[str]:
            async with proxy.client(key) as client:
                return [m["id"] for m in (await client.get("/v1/models")).json()["data"]]

        everything = await new_key(proxy, aliases={"mine": "other", "mine-hidden": {"model": "other", "hidden": True}})
        assert await listed(everything) == ["local", "cloud", "other", "gpt-4o", "premium", "mine"]
        local_only = await new_key(proxy, models=["local"])
        assert await listed(local_only) == ["local", "gpt-4o"]
        # Hidden aliases are served all the same.
        assert await served_by(proxy, fake, everything, "quiet") == "local"
        assert await served_by(proxy, fake, everything, "mine-hidden") == "other"
        unknown = await chat(proxy, local_only, "nope")
        assert unknown.status_code == 400 and "available: local, gpt-4o" in unknown.json()["error"]["message"]
