"""What each role sees and may change on the admin page: the admin API's rules, enforced on the server."""

from __future__ import annotations

import httpx

from edgeproxy.auth import hash_key
from tests.e2e.conftest import running_proxy
from tests.ui.conftest import api_key, api_user, signed_in, ui_config


async def models_status(proxy_url: str, key: str) -> int:
    async with httpx.AsyncClient(base_url=proxy_url, headers={"authorization": f"Bearer {key}"}) as client:
        return (await client.get("/v1/models")).status_code


async def test_an_internal_user_cannot_see_or_touch_another_users_key() -> None:
    async with running_proxy(ui_config()) as proxy, proxy.client() as admin:
        alice, bob = await api_user(admin, "alice"), await api_user(admin, "bob")
        team = await admin.post("/team/new", json={"team_id": "bobs", "members_with_roles": [{"user_id": "bob"}]})
        assert team.status_code == 200, team.text
        await api_key(admin, key_alias="admins-own")
        page = await signed_in(proxy, alice)
        bob_token = hash_key(bob)

        keys = await page.http.get("/ui/keys")
        assert hash_key(alice) in keys.text
        assert bob_token not in keys.text and "admins-own" not in keys.text
        assert "1 in all, yours only" in keys.text
        searched = await page.http.get("/ui/keys", params={"q": "bob"})
        assert bob_token not in searched.text
        for path in ("/ui/keys/block", "/ui/keys/delete"):
            response = await page.post(path, {"token": bob_token})
            assert response.status_code == 403, path
        assert await models_status(proxy.url, bob) == 200  # untouched

        for path in ("/ui/teams/bobs", "/ui/deployments"):
            assert (await page.http.get(path)).status_code == 403, path
        users = await page.http.get("/ui/users")
        assert 'data-user="alice"' in users.text and 'data-user="bob"' not in users.text
        assert (await page.post("/ui/users/create", {"user_id": "mallory"})).status_code == 403
        assert (await page.post("/ui/users/budget", {"user_id": "alice", "max_budget": "1000"})).status_code == 403
        forged = await page.post("/ui/keys/create", {"key_alias": "for-bob", "user_id": "bob"})
        assert forged.status_code == 403
        assert (await page.post("/ui/teams/bobs/members/add", {"user_id": "alice"})).status_code == 403

        # Her own key: she may stop it, but only an admin may lift a block (as on the API).
        mine = await page.post("/ui/keys/create", {"key_alias": "alice-2"})
        assert mine.status_code == 200, mine.text
        listed = (await admin.get("/key/list", params={"user_id": "alice"})).json()
        assert listed["total_count"] == 2
        second = next(t for t in listed["keys"] if t != hash_key(alice))
        assert (await page.post("/ui/keys/block", {"token": second})).status_code == 303
        assert (await page.post("/ui/keys/unblock", {"token": second})).status_code == 403
        assert (await page.post("/ui/keys/delete", {"token": second})).status_code == 303
        await page.http.aclose()


async def test_viewers_read_but_change_nothing() -> None:
    async with running_proxy(ui_config()) as proxy, proxy.client() as admin:
        viewer = await api_user(admin, "vera", role="proxy_admin_viewer")
        other = await api_key(admin, key_alias="someone-elses")
        page = await signed_in(proxy, viewer)
        keys = await page.http.get("/ui/keys")
        assert other["token"] in keys.text  # reads everything
        assert "/ui/keys/create" not in keys.text and "/ui/keys/block" not in keys.text  # offered nothing
        assert "read-only" in keys.text
        assert (await page.post("/ui/keys/create", {"key_alias": "nope"})).status_code == 403
        assert (await page.post("/ui/keys/block", {"token": other["token"]})).status_code == 403
        assert (await page.post("/ui/teams/create", {"team_id": "nope"})).status_code == 403
        for path in ("/ui/", "/ui/users", "/ui/teams", "/ui/spend", "/ui/spend.csv"):
            assert (await page.http.get(path)).status_code == 200, path
        assert (await page.http.get("/ui/deployments")).status_code == 403  # as GET /health: admins only
        await page.http.aclose()


async def test_a_proxy_admin_user_manages_users_and_teams() -> None:
    async with running_proxy(ui_config()) as proxy, proxy.client() as admin:
        boss = await api_user(admin, "boss", role="proxy_admin")
        page = await signed_in(proxy, boss)
        created = await page.post("/ui/users/create", {"user_id": "carol", "user_role": "internal_user"})
        assert created.status_code == 303  # no key asked for: nothing to show once
        budget = await page.post(
            "/ui/users/budget", {"user_id": "carol", "max_budget": "12.5", "budget_duration": "30d"}
        )
        assert budget.status_code == 303
        info = (await admin.get("/user/info", params={"user_id": "carol"})).json()["user_info"]
        assert info["max_budget"] == 12.5 and info["budget_duration"] == "30d"

        team = await page.post("/ui/teams/create", {"team_id": "ops", "max_budget": "3", "models": "demo"})
        assert team.status_code == 303 and team.headers["location"].startswith("/ui/teams/ops")
        assert (await page.post("/ui/teams/ops/members/add", {"user_id": "carol", "role": "admin"})).status_code == 303
        shown = await page.http.get("/ui/teams/ops")
        assert 'data-user="carol"' in shown.text
        assert (await page.post("/ui/teams/ops/budget", {"max_budget": ""})).status_code == 303  # emptied: no budget
        found = (await admin.get("/team/info", params={"team_id": "ops"})).json()["team_info"]
        assert found["max_budget"] is None and found["models"] == ["demo"]
        assert [m["role"] for m in found["members_with_roles"]] == ["admin"]
        removed = await page.post("/ui/teams/ops/members/remove", {"user_id": "carol"})
        assert removed.status_code == 303
        bad = await page.post("/ui/teams/create", {"team_id": "x", "max_budget": "lots"})
        assert bad.status_code == 400 and "max_budget" in bad.text  # the admin API's own message
        await page.http.aclose()
