from __future__ import annotations

import pytest

from storage import Conflict, NotFound, Storage


def test_create_get_list(storage: Storage) -> None:
    created = storage.teams.create(
        {"team_id": "t1", "team_alias": "ml", "models": ["qwen"], "max_budget": 100.0, "tpm_limit": 5000}
    )
    assert created["team_alias"] == "ml" and created["models"] == ["qwen"] and created["tpm_limit"] == 5000
    assert created["model_aliases"] == {} and created["spend"] == 0.0
    assert storage.teams.get("t1") == created
    assert storage.teams.get("t2") is None
    storage.teams.create({"team_id": "t2"})
    storage.teams.create({"team_id": "t3"})
    page, total = storage.teams.list(page=2, size=2)
    assert total == 3 and len(page) == 1
    assert {row["team_id"] for row in storage.teams.list()[0]} == {"t1", "t2", "t3"}


def test_conflicts(storage: Storage) -> None:
    storage.teams.create({"team_id": "t1", "team_alias": "ml"})
    with pytest.raises(Conflict) as info:
        storage.teams.create({"team_id": "t2", "team_alias": "ml"})
    assert info.value.field == "team_alias"
    with pytest.raises(Conflict) as info:
        storage.teams.create({"team_id": "t1"})
    assert info.value.field == "team_id"


def test_update_and_block(storage: Storage) -> None:
    storage.teams.create({"team_id": "t1"})
    updated = storage.teams.update("t1", {"model_aliases": {"fast": "qwen"}, "rpm_limit": 10})
    assert updated["model_aliases"] == {"fast": "qwen"} and updated["rpm_limit"] == 10
    assert storage.teams.set_blocked("t1", True)["blocked"] is True
    assert storage.teams.get("t1")["blocked"] is True  # type: ignore[index]
    with pytest.raises(NotFound):
        storage.teams.update("nope", {"rpm_limit": 1})
    with pytest.raises(NotFound):
        storage.teams.set_blocked("nope", False)


def test_members(storage: Storage) -> None:
    storage.teams.create({"team_id": "t1"})
    storage.teams.create({"team_id": "t2"})
    storage.users.create({"user_id": "alice", "user_role": "proxy_admin"})
    member = storage.teams.add_member("t1", "alice", role="admin", max_budget_in_team=3.0)
    assert member["role"] == "admin" and member["max_budget_in_team"] == 3.0 and member["spend"] == 0.0
    # Unknown users are created on the fly, as LiteLLM's /team/member_add does.
    storage.teams.add_member("t1", "bob")
    bob = storage.users.get("bob")
    assert bob is not None and bob["user_role"] == "internal_user"
    storage.teams.add_member("t2", "bob")
    assert storage.users.get("alice")["user_role"] == "proxy_admin"  # type: ignore[index]

    assert [(m["user_id"], m["role"]) for m in storage.teams.members("t1")] == [("alice", "admin"), ("bob", "user")]
    teams_of_bob = storage.teams.teams_of_user("bob")
    assert [team["team_id"] for team in teams_of_bob] == ["t1", "t2"]
    assert {team["member_role"] for team in teams_of_bob} == {"user"}
    assert storage.teams.teams_of_user("carol") == []

    with pytest.raises(Conflict, match="already a member"):
        storage.teams.add_member("t1", "bob")
    with pytest.raises(NotFound):
        storage.teams.add_member("nope", "bob")
    with pytest.raises(ValueError, match="role"):
        storage.teams.add_member("t2", "alice", role="owner")
    with pytest.raises(NotFound):
        storage.teams.members("nope")

    assert storage.teams.update_member("t1", "bob", {"role": "admin"})["role"] == "admin"
    with pytest.raises(NotFound):
        storage.teams.update_member("t2", "alice", {"role": "user"})

    storage.teams.remove_member("t1", "bob")
    assert [m["user_id"] for m in storage.teams.members("t1")] == ["alice"]
    with pytest.raises(NotFound):
        storage.teams.remove_member("t1", "bob")


def test_delete_removes_memberships_and_team_keys(storage: Storage) -> None:
    storage.teams.create({"team_id": "t1"})
    storage.teams.create({"team_id": "t2"})
    storage.teams.add_member("t1", "alice")
    storage.teams.add_member("t2", "alice")
    storage.keys.create({"token": "a" * 64, "team_id": "t1"})
    storage.keys.create({"token": "b" * 64, "team_id": "t2"})

    assert storage.teams.delete(["t1", "ghost"]) == ["t1"]
    assert storage.teams.get("t1") is None
    assert [team["team_id"] for team in storage.teams.teams_of_user("alice")] == ["t2"]
    assert storage.keys.get("a" * 64) is None and storage.keys.get("b" * 64) is not None
    assert storage.users.get("alice") is not None
