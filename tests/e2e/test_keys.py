"""Virtual keys through the real server: generate over HTTP, use them with the openai client, revoke them."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import openai
import pytest
import trio

from edgeproxy.app import create_app
from edgeproxy.config import Config
from edgeproxy.gateway import open_gateway
from tests.e2e.conftest import MASTER_KEY, Proxy, make_config, openai_model, running_proxy
from tests.fakes import FakeUpstream
from tests.storage.pg import temporary_pg_url

HELLO = [{"role": "user", "content": "hi"}]
KEY_FORMAT = re.compile(r"^sk-[A-Za-z0-9_-]{22}$")


def two_models(fake: FakeUpstream, **general: Any) -> Config:
    return make_config([openai_model("m1", fake), openai_model("m2", fake)], general_settings=general)


async def generate(proxy: Proxy, **fields: Any) -> dict[str, Any]:
    async with proxy.client() as client:
        response = await client.post("/key/generate", json=fields)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def chat_status(proxy: Proxy, key: str, model: str = "m1") -> tuple[int, dict[str, Any]]:
    async with proxy.client(key) as client:
        response = await client.post("/v1/chat/completions", json={"model": model, "messages": HELLO})
    return response.status_code, response.json()


async def admin_post(proxy: Proxy, path: str, body: Any, key: str = MASTER_KEY) -> tuple[int, Any]:
    async with proxy.client(key) as client:
        response = await client.post(path, json=body)
    return response.status_code, response.json()


async def test_generated_key_works_with_the_openai_client(fake: FakeUpstream) -> None:
    async with running_proxy(two_models(fake)) as proxy:
        created = await generate(proxy, key_alias="ci", metadata={"team": "qa"})
        assert KEY_FORMAT.match(created["key"])
        assert created["key_name"] == "sk-..." + created["key"][-4:]
        assert re.fullmatch(r"[0-9a-f]{64}", created["token"])
        assert created["key_alias"] == "ci"
        assert created["expires"] is None
        client = proxy.openai(created["key"])
        reply = await client.chat.completions.create(model="m1", messages=HELLO)  # type: ignore[arg-type]
        assert reply.choices[0].message.content == fake.reply_text


async def test_model_restrictions(fake: FakeUpstream) -> None:
    async with running_proxy(two_models(fake)) as proxy:
        created = await generate(proxy, models=["m1"])
        client = proxy.openai(created["key"])
        assert [m.id async for m in client.models.list()] == ["m1"]
        with pytest.raises(openai.PermissionDeniedError) as caught:
            await client.chat.completions.create(model="m2", messages=HELLO)  # type: ignore[arg-type]
        assert caught.value.status_code == 403
        assert (await client.chat.completions.create(model="m1", messages=HELLO)).choices  # type: ignore[arg-type]
        # Widening the list applies to the very next request (this instance dropped its cached entry).
        status, _ = await admin_post(proxy, "/key/update", {"key": created["key"], "models": []})
        assert status == 200
        assert (await client.chat.completions.create(model="m2", messages=HELLO)).choices  # type: ignore[arg-type]


async def test_block_unblock_and_delete_apply_to_the_next_request(fake: FakeUpstream) -> None:
    async with running_proxy(two_models(fake)) as proxy:
        key = (await generate(proxy))["key"]
        assert (await chat_status(proxy, key))[0] == 200  # now cached
        assert (await admin_post(proxy, "/key/block", {"key": key}))[0] == 200
        status, body = await chat_status(proxy, key)
        assert status == 401
        assert body["error"]["type"] == "authentication_error"
        assert "blocked" in body["error"]["message"]
        assert (await admin_post(proxy, "/key/unblock", {"key": key}))[0] == 200
        assert (await chat_status(proxy, key))[0] == 200
        status, body = await admin_post(proxy, "/key/delete", {"keys": [key]})
        assert (status, body) == (200, {"deleted_keys": [key]})
        status, body = await chat_status(proxy, key)
        assert status == 401
        assert "invalid" in body["error"]["message"]


async def test_delete_by_alias_and_unknown_key(fake: FakeUpstream) -> None:
    async with running_proxy(two_models(fake)) as proxy:
        key = (await generate(proxy, key_alias="doomed"))["key"]
        status, body = await admin_post(proxy, "/key/delete", {"keys": ["sk-no-such-key-00000000000"]})
        assert status == 404
        assert body["error"]["type"] == "not_found_error"
        assert (await admin_post(proxy, "/key/delete", {"key_aliases": ["doomed"]})) == (
            200,
            {"deleted_keys": ["doomed"]},
        )
        assert (await chat_status(proxy, key))[0] == 401


async def test_expired_key_is_refused(fake: FakeUpstream) -> None:
    async with running_proxy(two_models(fake)) as proxy:
        created = await generate(proxy, duration="1h")
        assert (await chat_status(proxy, created["key"]))[0] == 200
        update = {"key": created["token"], "expires": "2001-01-01T00:00:00Z"}
        assert (await admin_post(proxy, "/key/update", update))[0] == 200
        status, body = await chat_status(proxy, created["key"])
        assert status == 401
        assert "expired" in body["error"]["message"]


async def test_key_info_for_the_key_itself_and_the_admin(fake: FakeUpstream) -> None:
    async with running_proxy(two_models(fake)) as proxy:
        mine = await generate(proxy, max_budget=3.5, models=["m2"])
        other = await generate(proxy)
        async with proxy.client(mine["key"]) as client:
            own = await client.get("/key/info")
            by_param = await client.get("/key/info", params={"key": mine["key"]})
            foreign = await client.get("/key/info", params={"key": other["key"]})
        assert own.status_code == by_param.status_code == 200
        assert own.json() == by_param.json()
        info = own.json()["info"]
        assert (info["max_budget"], info["models"], info["blocked"]) == (3.5, ["m2"], False)
        assert mine["key"] not in own.text  # the secret is never repeated
        assert foreign.status_code == 403
        async with proxy.client() as client:
            by_token = await client.get("/key/info", params={"key": mine["token"]})
            missing = await client.get("/key/info", params={"key": "sk-not-a-key-000000000000"})
        assert by_token.json()["info"]["token"] == mine["token"]
        assert missing.status_code == 404


async def test_a_plain_key_is_not_an_admin(fake: FakeUpstream) -> None:
    async with running_proxy(two_models(fake)) as proxy:
        key = (await generate(proxy))["key"]
        for path, body in [
            ("/key/generate", {}),
            ("/key/update", {"key": key, "max_budget": 100}),
            ("/key/block", {"key": key}),
            ("/user/new", {"user_id": "x"}),
            ("/team/new", {"team_id": "x"}),
        ]:
            status, answer = await admin_post(proxy, path, body, key=key)
            assert status == 403, path
            assert answer["error"]["type"] == "permission_error"
        async with proxy.client(key) as client:
            assert (await client.get("/key/list")).status_code == 403


async def test_bad_input_is_a_400_with_param(fake: FakeUpstream) -> None:
    async with running_proxy(two_models(fake)) as proxy:
        cases = [
            ({"max_budget": -1}, "max_budget"),
            ({"duration": "3x"}, "duration"),
            ({"models": ["gpt-9"]}, "models"),
            ({"rpm_limit": "fast"}, "rpm_limit"),
            ({"bogus_field": 1}, "bogus_field"),
        ]
        for fields, param in cases:
            status, body = await admin_post(proxy, "/key/generate", fields)
            assert status == 400, fields
            assert (body["error"]["type"], body["error"]["param"], body["error"]["code"]) == (
                "invalid_request_error",
                param,
                "400",
            )
        async with proxy.client() as client:
            response = await client.post("/key/generate", content=b"{not json", headers={"content-type": "x"})
        assert response.status_code == 400
        status, body = await admin_post(proxy, "/key/generate", {"team_id": "nope"})
        assert (status, body["error"]["type"]) == (404, "not_found_error")
        await generate(proxy, key_alias="taken")
        status, body = await admin_post(proxy, "/key/generate", {"key_alias": "taken"})
        assert (status, body["error"]["type"], body["error"]["param"]) == (409, "conflict_error", "key_alias")
        async with proxy.client(key=None) as client:
            assert (await client.post("/key/generate", json={})).status_code == 401


async def test_regenerate(fake: FakeUpstream) -> None:
    async with running_proxy(two_models(fake)) as proxy:
        created = await generate(proxy, key_alias="rot")
        assert (await chat_status(proxy, created["key"]))[0] == 200
        status, fresh = await admin_post(proxy, "/key/regenerate", {"key": created["key"], "max_budget": 2})
        assert status == 200
        assert KEY_FORMAT.match(fresh["key"]) and fresh["key"] != created["key"]
        assert (fresh["key_alias"], fresh["max_budget"]) == ("rot", 2)
        assert (await chat_status(proxy, created["key"]))[0] == 401
        assert (await chat_status(proxy, fresh["key"]))[0] == 200
        status, again = await admin_post(proxy, f"/key/{fresh['token']}/regenerate", None)
        assert status == 200
        assert (await chat_status(proxy, fresh["key"]))[0] == 401
        assert (await chat_status(proxy, again["key"]))[0] == 200


async def test_key_list(fake: FakeUpstream) -> None:
    async with running_proxy(two_models(fake)) as proxy:
        made = [await generate(proxy, user_id="alice" if i < 3 else "bob") for i in range(4)]
        async with proxy.client() as client:
            tokens = (await client.get("/key/list", params={"user_id": "alice", "size": 2})).json()
            full = (await client.get("/key/list", params={"return_full_object": "true", "page": 2, "size": 2})).json()
            bad = await client.get("/key/list", params={"size": "many"})
        assert tokens["keys"] == [made[0]["token"], made[1]["token"]]
        assert (tokens["total_count"], tokens["current_page"], tokens["total_pages"]) == (3, 1, 2)
        assert [k["user_id"] for k in full["keys"]] == ["alice", "bob"]
        assert all(m["key"] not in str(full) for m in made)
        assert (bad.status_code, bad.json()["error"]["param"]) == (400, "size")


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def test_keys_survive_a_restart(fake: FakeUpstream, backend: str, tmp_path: Path) -> None:
    async def run_twice(config: Config) -> None:
        async with running_proxy(config) as proxy:
            created = await generate(proxy, models=["m1"], max_budget=10)
            assert (await chat_status(proxy, created["key"]))[0] == 200
        async with running_proxy(config) as proxy:
            assert (await chat_status(proxy, created["key"]))[0] == 200
            assert (await chat_status(proxy, created["key"], model="m2"))[0] == 403
            async with proxy.client() as client:
                info = (await client.get("/key/info", params={"key": created["key"]})).json()["info"]
            assert info["max_budget"] == 10

    if backend == "sqlite":
        await run_twice(two_models(fake))
        return
    with temporary_pg_url() as url:
        await run_twice(two_models(fake, database_url=url, spend_journal=str(tmp_path / "spend.journal")))


async def test_a_known_key_costs_no_database_round_trip(fake: FakeUpstream) -> None:
    """The hot path: after its first request a key is answered from memory (DESIGN.md, The hot path)."""
    async with open_gateway(two_models(fake)) as gw:
        client = create_app(gw).test_client()
        master = {"authorization": f"Bearer {MASTER_KEY}"}
        created = await (await client.post("/key/generate", json={"models": ["m1"]}, headers=master)).get_json()
        auth = {"authorization": f"Bearer {created['key']}"}
        assert gw.keys.loads == 0
        with trio.fail_after(20):
            for i in range(20):
                if i % 2:
                    response = await client.get("/v1/models", headers=auth)
                else:
                    body = {"model": "m1", "messages": HELLO}
                    response = await client.post("/v1/chat/completions", json=body, headers=auth)
                assert response.status_code == 200
        assert gw.keys.loads == 1
        # A change made through this instance drops the entry at once: the next request loads it again.
        blocked = await client.post("/key/block", json={"key": created["key"]}, headers=master)
        assert blocked.status_code == 200
        assert (await client.get("/v1/models", headers=auth)).status_code == 401
        assert gw.keys.loads == 2
