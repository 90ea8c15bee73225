from __future__ import annotations

import pytest

from storage import Conflict, NotFound, Storage


def test_create_get_with_defaults(storage: Storage) -> None:
    created = storage.users.create(
        {"user_id": "u1", "user_email": "a@example.com", "max_budget": 10.0, "models": ["qwen"]}
    )
    assert created["user_role"] == "internal_user"
    assert created["models"] == ["qwen"] and created["metadata"] == {}
    assert created["spend"] == 0.0 and created["blocked"] is False
    assert storage.users.get("u1") == created
    assert storage.users.get("nobody") is None


def test_duplicate_user_conflicts(storage: Storage) -> None:
    storage.users.create({"user_id": "u1"})
    with pytest.raises(Conflict) as info:
        storage.users.create({"user_id": "u1", "user_alias": "again"})
    assert info.value.field == "user_id" and "user_id" in str(info.value)


def test_roles_are_validated(storage: Storage) -> None:
    for role in ("proxy_admin", "proxy_admin_viewer", "internal_user", "internal_user_viewer"):
        assert storage.users.create({"user_id": role, "user_role": role})["user_role"] == role
    with pytest.raises(ValueError, match="user_role"):
        storage.users.create({"user_id": "x", "user_role": "root"})
    with pytest.raises(ValueError, match="user_role"):
        storage.users.update("proxy_admin", {"user_role": "god"})
    assert storage.users.get("x") is None


def test_update_and_not_found(storage: Storage) -> None:
    storage.users.create({"user_id": "u1"})
    updated = storage.users.update("u1", {"user_alias": "Alice", "budget_duration": "30d", "max_budget": 5.0})
    assert updated["user_alias"] == "Alice" and updated["budget_reset_at"].day == 1
    assert storage.users.get("u1")["max_budget"] == 5.0  # type: ignore[index]
    with pytest.raises(NotFound):
        storage.users.update("nobody", {"user_alias": "x"})


def test_set_blocked(storage: Storage) -> None:
    storage.users.create({"user_id": "u1"})
    assert storage.users.set_blocked("u1", True)["blocked"] is True
    assert storage.users.get("u1")["blocked"] is True  # type: ignore[index]
    with pytest.raises(NotFound):
        storage.users.set_blocked("nobody", True)


def test_list_pages(storage: Storage) -> None:
    for index in range(5):
        storage.users.create({"user_id": f"u{index}", "user_role": "proxy_admin" if index == 4 else None})
    page_one, total = storage.users.list(page=1, size=2)
    page_three, _ = storage.users.list(page=3, size=2)
    assert total == 5 and len(page_one) == 2 and len(page_three) == 1
    all_ids = {row["user_id"] for row in storage.users.list(size=10)[0]}
    assert all_ids == {f"u{index}" for index in range(5)}
    admins, admin_total = storage.users.list(user_role="proxy_admin")
    assert admin_total == 1 and admins[0]["user_id"] == "u4"


def test_delete_removes_memberships_and_keys(storage: Storage) -> None:
    storage.users.create({"user_id": "u1"})
    storage.users.create({"user_id": "u2"})
    storage.teams.create({"team_id": "t1"})
    storage.teams.add_member("t1", "u1")
    storage.teams.add_member("t1", "u2")
    storage.keys.create({"token": "k1" * 32, "user_id": "u1"})
    storage.keys.create({"token": "k2" * 32, "user_id": "u2"})

    assert storage.users.delete(["u1", "ghost"]) == ["u1"]
    assert storage.users.get("u1") is None
    assert [member["user_id"] for member in storage.teams.members("t1")] == ["u2"]
    assert storage.keys.get("k1" * 32) is None
    assert storage.keys.get("k2" * 32) is not None
    assert storage.users.delete([]) == []
