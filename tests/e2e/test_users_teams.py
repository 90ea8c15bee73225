"""Users, teams and roles through the real server."""

from __future__ import annotations

from typing import Any

from edgeproxy.config import Config
from tests.e2e.conftest import MASTER_KEY, Proxy, make_config, openai_model, running_proxy
from tests.fakes import FakeUpstream

HELLO = [{"role": "user", "content": "hi"}]


def three_models(fake: FakeUpstream) -> Config:
    return make_config([openai_model("m1", fake), openai_model("m2", fake), openai_model("m3", fake)])


async def post(proxy: Proxy, path: str, body: Any, key: str = MASTER_KEY) -> tuple[int, Any]:
    async with proxy.client(key) as client:
        response = await client.post(path, json=body)
    return response.status_code, response.json()


async def get(proxy: Proxy, path: str, key: str = MASTER_KEY, **params: Any) -> tuple[int, Any]:
    """GET with query parameters; `key_` stands for the query parameter `key` (`key` is the caller)."""
    if "key_" in params:
        params["key"] = params.pop("key_")
    async with proxy.client(key) as client:
        response = await client.get(path, params=params)
    return response.status_code, response.json()


async def ok(proxy: Proxy, path: str, body: Any, key: str = MASTER_KEY) -> Any:
    status, answer = await post(proxy, path, body, key)
    assert status == 200, (path, answer)
    return answer


async def chat(proxy: Proxy, key: str, model: str = "m1") -> int:
    async with proxy.client(key) as client:
        response = await client.post("/v1/chat/completions", json={"model": model, "messages": HELLO})
    return response.status_code


async def user_key(proxy: Proxy, user_id: str, role: str) -> str:
    created = await ok(proxy, "/user/new", {"user_id": user_id, "user_role": role})
    key: str = created["key"]
    return key


async def test_user_crud(fake: FakeUpstream) -> None:
    async with running_proxy(three_models(fake)) as proxy:
        created = await ok(proxy, "/user/new", {"user_id": "alice", "user_email": "a@example.com", "max_budget": 4})
        assert (created["user_id"], created["user_role"], created["max_budget"]) == ("alice", "internal_user", 4)
        assert await chat(proxy, created["key"]) == 200  # /user/new made a key, as LiteLLM does
        status, info = await get(proxy, "/user/info", user_id="alice")
        assert status == 200
        assert info["user_info"]["user_email"] == "a@example.com"
        assert [k["token"] for k in info["keys"]] == [created["token"]]
        updated = await ok(proxy, "/user/update", {"user_id": "alice", "models": ["m2"]})
        assert updated["models"] == ["m2"]
        assert await chat(proxy, created["key"], "m1") == 403  # the user's models apply at once
        status, listed = await get(proxy, "/user/list")
        assert (status, [u["user_id"] for u in listed["users"]], listed["total"]) == (200, ["alice"], 1)
        status, duplicate = await post(proxy, "/user/new", {"user_id": "alice"})
        assert (status, duplicate["error"]["type"]) == (409, "conflict_error")
        assert await ok(proxy, "/user/delete", {"user_ids": ["alice"]}) == {"deleted_users": ["alice"]}
        assert await chat(proxy, created["key"], "m2") == 401  # a deleted user's keys stop working
        assert (await get(proxy, "/user/info", user_id="alice"))[0] == 404


async def test_team_crud_and_model_intersection(fake: FakeUpstream) -> None:
    async with running_proxy(three_models(fake)) as proxy:
        team = await ok(proxy, "/team/new", {"team_id": "red", "team_alias": "Red", "models": ["m1", "m2"]})
        assert (team["team_id"], team["models"], team["members_with_roles"]) == ("red", ["m1", "m2"], [])
        key = (await ok(proxy, "/key/generate", {"team_id": "red", "models": ["m2", "m3"]}))["key"]
        async with proxy.client(key) as client:
            visible = [m["id"] for m in (await client.get("/v1/models")).json()["data"]]
        assert visible == ["m2"]  # key models ∩ team models
        assert [await chat(proxy, key, model) for model in ("m1", "m2", "m3")] == [403, 200, 403]
        status, info = await get(proxy, "/team/info", team_id="red")
        assert status == 200
        assert info["team_info"]["team_alias"] == "Red"
        assert len(info["keys"]) == 1
        await ok(proxy, "/team/update", {"team_id": "red", "models": ["m1", "m2", "m3"]})
        assert await chat(proxy, key, "m3") == 200
        status, teams = await get(proxy, "/team/list")
        assert (status, [t["team_id"] for t in teams]) == (200, ["red"])
        assert await ok(proxy, "/team/delete", {"team_ids": ["red"]}) == {"deleted_teams": ["red"]}
        assert await chat(proxy, key, "m2") == 401
        status, missing = await get(proxy, "/team/info", team_id="red")
        assert (status, missing["error"]["type"]) == (404, "not_found_error")


async def test_blocked_team_refuses_its_keys(fake: FakeUpstream) -> None:
    async with running_proxy(three_models(fake)) as proxy:
        await ok(proxy, "/team/new", {"team_id": "red"})
        key = (await ok(proxy, "/key/generate", {"team_id": "red"}))["key"]
        assert await chat(proxy, key) == 200
        await ok(proxy, "/team/block", {"team_id": "red"})
        async with proxy.client(key) as client:
            response = await client.post("/v1/chat/completions", json={"model": "m1", "messages": HELLO})
        assert response.status_code == 401
        assert "team red is blocked" in response.json()["error"]["message"]
        await ok(proxy, "/team/unblock", {"team_id": "red"})
        assert await chat(proxy, key) == 200


async def test_internal_user_manages_only_their_own_keys(fake: FakeUpstream) -> None:
    async with running_proxy(three_models(fake)) as proxy:
        alice = await user_key(proxy, "alice", "internal_user")
        bob = await user_key(proxy, "bob", "internal_user")
        extra = await ok(proxy, "/key/generate", {}, key=alice)
        assert extra["user_id"] == "alice"  # forced to the caller
        status, listed = await get(proxy, "/key/list", key=alice, return_full_object="true")
        assert status == 200
        assert {k["user_id"] for k in listed["keys"]} == {"alice"}
        assert listed["total_count"] == 2
        assert (await get(proxy, "/key/list", key=alice, user_id="bob"))[0] == 403
        assert (await post(proxy, "/key/generate", {"user_id": "bob"}, key=alice))[0] == 403
        assert (await get(proxy, "/key/info", key=alice, key_=bob))[0] == 403
        assert (await post(proxy, "/key/delete", {"keys": [bob]}, key=alice))[0] == 403
        assert (await get(proxy, "/user/info", key=alice))[1]["user_id"] == "alice"
        assert (await get(proxy, "/user/info", key=alice, user_id="bob"))[0] == 403
        assert (await get(proxy, "/user/list", key=alice))[0] == 403
        # Owners may stop their own key, but lifting a block is for admins.
        await ok(proxy, "/key/block", {"key": extra["key"]}, key=alice)
        assert await chat(proxy, extra["key"]) == 401
        assert (await post(proxy, "/key/unblock", {"key": extra["key"]}, key=alice))[0] == 403
        assert await ok(proxy, "/key/delete", {"keys": [extra["key"]]}, key=alice) == {"deleted_keys": [extra["key"]]}
        assert await chat(proxy, bob) == 200


async def test_viewers_read_but_never_write(fake: FakeUpstream) -> None:
    async with running_proxy(three_models(fake)) as proxy:
        viewer = await user_key(proxy, "vera", "proxy_admin_viewer")
        other = (await ok(proxy, "/key/generate", {"user_id": "someone"}))["key"]
        await ok(proxy, "/team/new", {"team_id": "red"})
        for path, params in [
            ("/key/list", {}),
            ("/key/info", {"key_": other}),
            ("/user/list", {}),
            ("/user/info", {"user_id": "someone"}),
            ("/team/list", {}),
            ("/team/info", {"team_id": "red"}),
        ]:
            assert (await get(proxy, path, key=viewer, **params))[0] == 200, path
        for path, body in [
            ("/key/generate", {}),
            ("/key/block", {"key": other}),
            ("/key/delete", {"keys": [other]}),
            ("/user/new", {"user_id": "x"}),
            ("/team/new", {"team_id": "x"}),
            ("/team/block", {"team_id": "red"}),
        ]:
            status, answer = await post(proxy, path, body, key=viewer)
            assert (status, answer["error"]["type"]) == (403, "permission_error"), path
        assert await chat(proxy, other) == 200
        reader = await user_key(proxy, "rita", "internal_user_viewer")
        assert (await get(proxy, "/key/list", key=reader))[1]["total_count"] == 1
        assert (await post(proxy, "/key/generate", {}, key=reader))[0] == 403


async def test_proxy_admin_user_is_an_admin(fake: FakeUpstream) -> None:
    async with running_proxy(three_models(fake)) as proxy:
        admin = await user_key(proxy, "root", "proxy_admin")
        created = await ok(proxy, "/user/new", {"user_id": "newbie", "auto_create_key": False}, key=admin)
        assert "key" not in created
        made = await ok(proxy, "/key/generate", {"user_id": "newbie"}, key=admin)
        assert (made["user_id"], made["created_by"]) == ("newbie", "root")
        assert (await get(proxy, "/user/list", key=admin))[1]["total"] == 2


async def test_team_admins_manage_their_members(fake: FakeUpstream) -> None:
    async with running_proxy(three_models(fake)) as proxy:
        alice = await user_key(proxy, "alice", "internal_user")
        bob = await user_key(proxy, "bob", "internal_user")
        await ok(proxy, "/team/new", {"team_id": "red", "members_with_roles": [{"user_id": "alice", "role": "admin"}]})
        await ok(proxy, "/team/new", {"team_id": "blue"})
        added = await ok(
            proxy, "/team/member_add", {"team_id": "red", "member": {"user_id": "bob"}, "max_budget_in_team": 2}, alice
        )
        assert [m["user_id"] for m in added["members_with_roles"]] == ["alice", "bob"]
        assert added["updated_team_memberships"][0]["max_budget_in_team"] == 2
        status, _ = await post(proxy, "/team/member_add", {"team_id": "red", "member": {"user_id": "carl"}}, bob)
        assert status == 403  # bob is a plain member
        assert (await post(proxy, "/team/member_add", {"team_id": "blue", "member": {"user_id": "x"}}, alice))[0] == 403
        assert (await ok(proxy, "/team/update", {"team_id": "red", "team_alias": "Reds"}, alice))[
            "team_alias"
        ] == "Reds"
        status, refused = await post(proxy, "/team/update", {"team_id": "red", "max_budget": 1000}, alice)
        assert (status, refused["error"]["param"]) == (403, "max_budget")
        assert (await get(proxy, "/team/info", key=bob, team_id="red"))[0] == 200  # members may read their team
        assert (await get(proxy, "/team/info", key=bob, team_id="blue"))[0] == 403
        removed = await ok(proxy, "/team/member_delete", {"team_id": "red", "user_id": "bob"}, alice)
        assert [m["user_id"] for m in removed["members_with_roles"]] == ["alice"]
        status, duplicate = await post(proxy, "/team/member_add", {"team_id": "red", "member": {"user_id": "alice"}})
        assert (status, duplicate["error"]["type"]) == (409, "conflict_error")
        status, missing = await post(proxy, "/team/member_add", {"team_id": "nope", "member": {"user_id": "x"}})
        assert (status, missing["error"]["param"]) == (404, "team_id")
