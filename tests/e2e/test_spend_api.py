"""/spend/logs and /global/spend/report over real traffic: the real server, the real database, fake upstreams."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any

import httpx
import pytest
import trio

from edgeproxy.auth import hash_key
from tests.e2e.conftest import MASTER_KEY, make_config, openai_model, running_proxy
from tests.fakes import FakeUpstream

# USD per token; chosen so that every cost is distinct: 10 * 2e-6 + 5 * 1e-5 = 7e-5 per default call.
PRICED = {"input_cost_per_token": 2e-6, "output_cost_per_token": 1e-5}
CHEAP = {"input_cost_per_token": 1e-7, "output_cost_per_token": 3e-7}


def config_for(fake: FakeUpstream) -> Any:
    models = [openai_model("priced", fake, **PRICED), openai_model("cheap", fake, **CHEAP)]
    return make_config(models, general_settings={"proxy_batch_write_at": 0.05})


def cost(prices: dict[str, float], prompt: int, completion: int) -> float:
    return prompt * prices["input_cost_per_token"] + completion * prices["output_cost_per_token"]


async def call(client: httpx.AsyncClient, model: str) -> str:
    """One chat call; returns its request id (x-litellm-call-id)."""
    response = await client.post(
        "/v1/chat/completions", json={"model": model, "messages": [{"role": "user", "content": "hi"}]}
    )
    assert response.status_code == 200, response.text
    call_id: str = response.headers["x-litellm-call-id"]
    return call_id


async def wait_for_logs(client: httpx.AsyncClient, count: int, **params: str) -> dict[str, Any]:
    """Poll /spend/logs (bounded in time) until `count` rows match: spend is written in batches."""
    with trio.fail_after(10):
        while True:
            response = await client.get("/spend/logs", params=params)
            assert response.status_code == 200, response.text
            body: dict[str, Any] = response.json()
            if body["total_count"] >= count:
                return body
            await trio.sleep(0.02)


async def new_key(admin: httpx.AsyncClient, **fields: Any) -> str:
    response = await admin.post("/key/generate", json=fields)
    assert response.status_code == 200, response.text
    key: str = response.json()["key"]
    return key


async def new_user(admin: httpx.AsyncClient, user_id: str, role: str) -> None:
    response = await admin.post("/user/new", json={"user_id": user_id, "user_role": role})
    assert response.status_code == 200, response.text


def assert_error(response: httpx.Response, status: int, error_type: str, param: str | None = None) -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["type"] == error_type
    assert error["code"] == str(status)
    if param is not None:
        assert error["param"] == param


async def test_logs_show_each_call_with_its_cost_and_filter(fake: FakeUpstream) -> None:
    async with running_proxy(config_for(fake)) as proxy, proxy.client() as admin:
        first = await call(admin, "priced")
        second = await call(admin, "priced")
        fake.usage = (7, 3)
        third = await call(admin, "cheap")

        body = await wait_for_logs(admin, 3)
        assert body["total_count"] == 3
        assert body["current_page"] == 1 and body["total_pages"] == 1
        rows = {row["request_id"]: row for row in body["logs"]}
        assert set(rows) == {first, second, third}
        for request_id in (first, second):
            row = rows[request_id]
            assert (row["prompt_tokens"], row["completion_tokens"], row["total_tokens"]) == (10, 5, 15)
            assert row["cost"] == pytest.approx(cost(PRICED, 10, 5), rel=1e-9)
            assert row["spend"] == row["cost"]  # LiteLLM's name
            assert row["model_group"] == "priced"
        cheap_row = rows[third]
        assert (cheap_row["prompt_tokens"], cheap_row["completion_tokens"]) == (7, 3)
        assert cheap_row["cost"] == pytest.approx(cost(CHEAP, 7, 3), rel=1e-9)
        assert cheap_row["api_key"] == "master" and cheap_row["status"] == "success"
        # Newest first, datetimes as ISO strings.
        starts = [datetime.fromisoformat(row["start_time"]) for row in body["logs"]]
        assert starts == sorted(starts, reverse=True)
        assert body["logs"][0]["request_id"] == third

        async def logs(**params: str) -> dict[str, Any]:
            response = await admin.get("/spend/logs", params=params)
            assert response.status_code == 200, response.text
            found: dict[str, Any] = response.json()
            return found

        assert [r["request_id"] for r in (await logs(model="cheap"))["logs"]] == [third]
        assert [r["request_id"] for r in (await logs(request_id=second))["logs"]] == [second]
        assert (await logs(api_key=MASTER_KEY))["total_count"] == 3
        assert (await logs(api_key="sk-nobody-has-this-key-000"))["total_count"] == 0

        day = starts[0].date()
        same_day = await logs(start_date=day.isoformat(), end_date=day.isoformat())  # the end day is included
        assert same_day["total_count"] == 3
        after = await logs(start_date=(day + timedelta(days=1)).isoformat())
        before = await logs(end_date=(day - timedelta(days=1)).isoformat())
        assert after["total_count"] == before["total_count"] == 0
        assert after["logs"] == []
        # An ISO datetime bound just after the second call leaves only the third.
        later = await logs(start_date=starts[0].isoformat())
        assert [r["request_id"] for r in later["logs"]] == [third]

        page_one = await logs(page_size="2")
        page_two = await logs(page_size="2", page="2")
        assert (page_one["total_pages"], page_two["current_page"]) == (2, 2)
        assert len(page_one["logs"]) == 2 and len(page_two["logs"]) == 1
        paged = [r["request_id"] for r in page_one["logs"] + page_two["logs"]]
        assert paged == [r["request_id"] for r in body["logs"]]

        assert_error(await admin.get("/spend/logs?start_date=yesterday"), 400, "invalid_request_error", "start_date")
        assert_error(await admin.get("/spend/logs?page_size=5000"), 400, "invalid_request_error", "page_size")
        bad_range = await admin.get("/spend/logs", params={"start_date": "2030-01-02", "end_date": "2030-01-01"})
        assert_error(bad_range, 400, "invalid_request_error", "start_date")


async def test_report_groups_spend_by_model_and_key(fake: FakeUpstream) -> None:
    async with running_proxy(config_for(fake)) as proxy, proxy.client() as admin:
        key = await new_key(admin, key_alias="ci-bot")
        await call(admin, "priced")
        await call(admin, "priced")
        async with proxy.client(key) as bot:
            fake.usage = (20, 8)
            await call(bot, "cheap")
            await call(bot, "priced")
        logs = await wait_for_logs(admin, 4)
        day = datetime.fromisoformat(logs["logs"][0]["start_time"]).date().isoformat()
        master_spend = 2 * cost(PRICED, 10, 5)
        bot_spend = cost(CHEAP, 20, 8) + cost(PRICED, 20, 8)

        async def report(**params: str) -> list[dict[str, Any]]:
            response = await admin.get("/global/spend/report", params={"start_date": day, "end_date": day, **params})
            assert response.status_code == 200, response.text
            found: list[dict[str, Any]] = response.json()
            return found

        by_model = await report(group_by="model")
        assert [d["group_by_day"] for d in by_model] == [day]
        models = {m["name"]: m for m in by_model[0]["models"]}
        assert set(models) == {"priced", "cheap"}
        assert models["priced"]["total_spend"] == pytest.approx(master_spend + cost(PRICED, 20, 8), rel=1e-9)
        assert (models["priced"]["requests"], models["priced"]["prompt_tokens"]) == (3, 40)
        assert models["priced"]["completion_tokens"] == 18
        assert models["cheap"]["total_spend"] == pytest.approx(cost(CHEAP, 20, 8), rel=1e-9)
        assert models["cheap"]["requests"] == 1
        assert by_model[0]["total_spend"] == pytest.approx(master_spend + bot_spend, rel=1e-9)

        by_key = await report(group_by="api_key")
        keys = {k["name"]: k for k in by_key[0]["api_keys"]}
        assert set(keys) == {"master", hash_key(key)}
        assert keys[hash_key(key)]["key_alias"] == "ci-bot"
        assert keys[hash_key(key)]["total_spend"] == pytest.approx(bot_spend, rel=1e-9)
        assert keys[hash_key(key)]["requests"] == 2
        assert keys["master"]["total_spend"] == pytest.approx(master_spend, rel=1e-9)

        # Defaults: grouped by team over the last 30 days; no team here, so one unnamed group with everything.
        default = (await admin.get("/global/spend/report")).json()
        assert [d["group_by_day"] for d in default] == [day]
        assert [t["name"] for t in default[0]["teams"]] == [None]
        assert default[0]["teams"][0]["requests"] == 4

        previous = (date.fromisoformat(day) - timedelta(days=1)).isoformat()
        assert await report(start_date=previous, end_date=previous) == []

        top = (await admin.get("/global/spend/models")).json()
        assert [m["model"] for m in top] == ["priced", "cheap"]

        assert_error(await admin.get("/global/spend/report?group_by=color"), 400, "invalid_request_error", "group_by")
        assert_error(
            await admin.get("/global/spend/report?end_date=2024-13-01"), 400, "invalid_request_error", "end_date"
        )


async def test_who_may_read_spend(fake: FakeUpstream) -> None:
    async with running_proxy(config_for(fake)) as proxy, proxy.client() as admin:
        await new_user(admin, "ann", "internal_user")
        await new_user(admin, "vic", "proxy_admin_viewer")
        ann_key = await new_key(admin, user_id="ann")
        vic_key = await new_key(admin, user_id="vic")
        orphan_key = await new_key(admin, key_alias="no-user")
        async with proxy.client(ann_key) as ann, proxy.client(vic_key) as vic, proxy.client(orphan_key) as orphan:
            ann_call = await call(ann, "priced")
            await call(admin, "priced")
            await call(orphan, "cheap")
            await wait_for_logs(admin, 3)

            own = (await ann.get("/spend/logs")).json()
            assert [row["request_id"] for row in own["logs"]] == [ann_call]
            assert own["logs"][0]["user_id"] == "ann" and own["total_count"] == 1
            assert_error(await ann.get("/spend/logs?user_id=vic"), 403, "permission_error", "user_id")
            assert_error(await ann.get("/global/spend/report"), 403, "permission_error")

            assert_error(await orphan.get("/spend/logs"), 403, "permission_error")
            assert_error(await orphan.get("/global/spend/report?group_by=model"), 403, "permission_error")
            assert_error(await orphan.get("/global/spend/models"), 403, "permission_error")

            assert (await vic.get("/spend/logs")).json()["total_count"] == 3
            report = await vic.get("/global/spend/report", params={"group_by": "user"})
            assert report.status_code == 200, report.text
            users = {u["name"]: u["requests"] for u in report.json()[0]["users"]}
            assert users == {"ann": 1, None: 2}

        async with proxy.client(None) as anonymous:
            assert_error(await anonymous.get("/spend/logs"), 401, "authentication_error")
