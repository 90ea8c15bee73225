"""User and team administration on a real SQLite database."""

from __future__ import annotations

import pytest

from edgeproxy.admin import keys, teams, users
from edgeproxy.errors import InvalidRequestError, NotFoundError
from storage import Conflict, Storage

from .conftest import MODELS


def test_new_user_creates_a_key_by_default_like_litellm(storage: Storage) -> None:
    result = users.new_user(storage, MODELS, {"user_id": "alice", "user_role": "internal_user", "max_budget": 10})
    assert result["user_id"] == "alice"
    assert result["key"].startswith("sk-")
    assert storage.keys.get(result["token"])["user_id"] == "alice"  # type: ignore[index]
    quiet = users.new_user(storage, MODELS, {"user_id": "bob", "auto_create_key": False})
    assert "key" not in quiet
    assert keys.list_keys(storage, user_id="bob")["total_count"] == 0


def test_new_user_generates_an_id_and_refuses_duplicates(storage: Storage) -> None:
    made = users.new_user(storage, MODELS, {}, auto_create_key=False)
    assert len(made["user_id"]) == 36
    with pytest.raises(Conflict) as caught:
        users.new_user(storage, MODELS, {"user_id": made["user_id"]}, auto_create_key=False)
    assert caught.value.field == "user_id"


def test_new_user_with_unknown_team_creates_nothing(storage: Storage) -> None:
    with pytest.raises(NotFoundError):
        users.new_user(storage, MODELS, {"user_id": "carol", "teams": ["nope"]})
    assert storage.users.get("carol") is None


@pytest.mark.parametrize(
    ("fields", "param"),
    [({"user_role": "root"}, "user_role"), ({"max_budget": -3}, "max_budget"), ({"models": ["x"]}, "models")],
)
def test_user_validation(storage: Storage, fields: dict[str, object], param: str) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        users.new_user(storage, MODELS, {"user_id": "dave", **fields})
    assert caught.value.param == param


def test_user_info_lists_keys_and_teams(storage: Storage) -> None:
    teams.new_team(storage, MODELS, {"team_id": "red"})
    users.new_user(storage, MODELS, {"user_id": "alice", "teams": ["red"]})
    keys.generate_key(storage, MODELS, {"user_id": "alice"})
    info = users.user_info(storage, "alice")
    assert info["user_id"] == "alice"
    assert info["user_info"]["user_role"] == "internal_user"
    assert len(info["keys"]) == 2
    assert [team["team_id"] for team in info["teams"]] == ["red"]
    with pytest.raises(NotFoundError):
        users.user_info(storage, "nobody")


def test_update_and_delete_user(storage: Storage) -> None:
    created = users.new_user(storage, MODELS, {"user_id": "alice"})
    updated = users.update_user(storage, MODELS, {"user_id": "alice", "user_role": "proxy_admin_viewer"})
    assert updated["user_role"] == "proxy_admin_viewer"
    with pytest.raises(InvalidRequestError) as caught:
        users.update_user(storage, MODELS, {"max_budget": 1})
    assert caught.value.param == "user_id"
    with pytest.raises(NotFoundError):
        users.delete_users(storage, ["alice", "ghost"])
    assert users.delete_users(storage, ["alice"]) == ["alice"]
    assert storage.keys.get(created["token"]) is None  # a deleted user's keys stop existing


def test_list_users_shape(storage: Storage) -> None:
    for name in ("a", "b", "c"):
        users.new_user(storage, MODELS, {"user_id": name}, auto_create_key=False)
    listed = users.list_users(storage, page=1, size=2)
    assert [u["user_id"] for u in listed["users"]] == ["a", "b"]
    assert (listed["total"], listed["page"], listed["page_size"], listed["total_pages"]) == (3, 1, 2, 2)


def test_team_with_members_and_admin_check(storage: Storage) -> None:
    team = teams.new_team(
        storage,
        MODELS,
        {"team_id": "red", "models": ["gpt-small"], "members_with_roles": [{"user_id": "alice", "role": "admin"}]},
    )
    assert team["members_with_roles"][0]["user_id"] == "alice"
    assert teams.is_team_admin(storage, "red", "alice")
    added = teams.add_members(storage, "red", [{"user_id": "bob"}, {"user_id": "carol", "role": "admin"}], 2.5)
    assert [m["user_id"] for m in added["updated_team_memberships"]] == ["bob", "carol"]
    assert all(m["max_budget_in_team"] == 2.5 for m in added["updated_team_memberships"])
    assert not teams.is_team_admin(storage, "red", "bob")
    assert teams.is_team_member(storage, "red", "bob")
    with pytest.raises(Conflict):
        teams.add_members(storage, "red", {"user_id": "bob"})
    removed = teams.remove_member(storage, "red", "bob")
    assert [m["user_id"] for m in removed["members_with_roles"]] == ["alice", "carol"]
    assert [t["team_id"] for t in teams.list_teams(storage, user_id="carol")] == ["red"]


def test_team_member_validation(storage: Storage) -> None:
    teams.new_team(storage, MODELS, {"team_id": "red"})
    with pytest.raises(InvalidRequestError) as caught:
        teams.add_members(storage, "red", {"user_id": "bob", "role": "owner"})
    assert caught.value.param == "member.role"
    with pytest.raises(InvalidRequestError) as caught:
        teams.add_members(storage, "red", [{"role": "user"}])
    assert caught.value.param == "member[0].user_id"
    with pytest.raises(NotFoundError):
        teams.add_members(storage, "blue", {"user_id": "bob"})


def test_team_info_update_block_delete(storage: Storage) -> None:
    teams.new_team(storage, MODELS, {"team_id": "red", "team_alias": "Red"})
    key = keys.generate_key(storage, MODELS, {"team_id": "red"})
    info = teams.team_info(storage, "red")
    assert info["team_info"]["team_alias"] == "Red"
    assert [k["token"] for k in info["keys"]] == [key["token"]]
    assert teams.update_team(storage, MODELS, {"team_id": "red", "max_budget": 9})["max_budget"] == 9
    assert teams.set_team_blocked(storage, "red", True)["blocked"] is True
    with pytest.raises(Conflict):
        teams.new_team(storage, MODELS, {"team_id": "blue", "team_alias": "Red"})
    assert teams.delete_teams(storage, ["red"]) == ["red"]
    assert storage.keys.get(key["token"]) is None
    with pytest.raises(NotFoundError):
        teams.team_info(storage, "red")
