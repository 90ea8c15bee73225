from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

import pytest

from storage import Conflict, NotFound, SpendRecord, Storage, next_reset


def token(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()


def test_create_and_get_round_trip(storage: Storage) -> None:
    expires = datetime(2030, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
    created = storage.keys.create(
        {
            "token": token("a"),
            "key_name": "sk-...aaaa",
            "key_alias": "ci",
            "models": ["gpt-4o", "qwen"],
            "max_budget": 12.5,
            "soft_budget": 10.0,
            "expires": expires,
            "user_id": "u1",
            "team_id": "t1",
            "metadata": {"owner": "ops", "tags": ["x"]},
            "rpm_limit": 60,
            "tpm_limit": 100000,
            "max_parallel_requests": 4,
            "aliases": {"fast": "qwen"},
            "allowed_cache_controls": ["no-cache"],
            "created_by": "admin",
        }
    )
    fetched = storage.keys.get(token("a"))
    assert fetched == created
    assert fetched["models"] == ["gpt-4o", "qwen"]
    assert fetched["metadata"] == {"owner": "ops", "tags": ["x"]}
    assert fetched["aliases"] == {"fast": "qwen"}
    assert fetched["expires"] == expires and fetched["expires"].tzinfo is not None
    assert fetched["spend"] == 0.0 and fetched["total_spend"] == 0.0
    assert fetched["blocked"] is False
    assert fetched["model_spend"] == {}
    assert fetched["created_at"].tzinfo is not None
    assert abs(fetched["created_at"] - datetime.now(UTC)) < timedelta(minutes=1)


def test_defaults_for_a_minimal_key(storage: Storage) -> None:
    created = storage.keys.create({"token": token("min"), "models": None})
    assert created["models"] == [] and created["metadata"] == {} and created["allowed_cache_controls"] == []
    assert created["key_alias"] is None and created["budget_reset_at"] is None


def test_get_unknown_and_by_alias(storage: Storage) -> None:
    storage.keys.create({"token": token("a"), "key_alias": "ci"})
    assert storage.keys.get(token("missing")) is None
    assert storage.keys.get_by_alias("nope") is None
    found = storage.keys.get_by_alias("ci")
    assert found is not None and found["token"] == token("a")


def test_duplicate_token_and_alias_conflict(storage: Storage) -> None:
    storage.keys.create({"token": token("a"), "key_alias": "ci"})
    with pytest.raises(Conflict) as info:
        storage.keys.create({"token": token("b"), "key_alias": "ci"})
    assert info.value.field == "key_alias" and "key_alias" in str(info.value)
    with pytest.raises(Conflict) as info:
        storage.keys.create({"token": token("a")})
    assert info.value.field == "token"
    # Keys without alias never collide with each other.
    storage.keys.create({"token": token("c")})
    storage.keys.create({"token": token("d")})
    assert storage.keys.list()[1] == 3


def test_invalid_records_are_rejected(storage: Storage) -> None:
    with pytest.raises(ValueError, match="token is required"):
        storage.keys.create({"key_alias": "x"})
    with pytest.raises(ValueError, match="bogus"):
        storage.keys.create({"token": token("a"), "bogus": 1})
    with pytest.raises(ValueError, match="invalid duration"):
        storage.keys.create({"token": token("a"), "budget_duration": "daily"})
    assert storage.keys.get(token("a")) is None


def test_update_changes_fields_and_bumps_updated_at(storage: Storage) -> None:
    created = storage.keys.create({"token": token("a"), "key_alias": "old", "metadata": {"a": 1}})
    updated = storage.keys.update(token("a"), {"key_alias": "new", "metadata": {"b": 2}, "max_budget": 3.0})
    assert updated["key_alias"] == "new" and updated["metadata"] == {"b": 2} and updated["max_budget"] == 3.0
    assert updated["updated_at"] >= created["updated_at"]
    assert updated["created_at"] == created["created_at"]
    assert storage.keys.get_by_alias("old") is None


def test_update_errors(storage: Storage) -> None:
    storage.keys.create({"token": token("a"), "key_alias": "one"})
    storage.keys.create({"token": token("b"), "key_alias": "two"})
    with pytest.raises(NotFound):
        storage.keys.update(token("zzz"), {"max_budget": 1.0})
    with pytest.raises(Conflict) as info:
        storage.keys.update(token("b"), {"key_alias": "one"})
    assert info.value.field == "key_alias"
    with pytest.raises(ValueError, match="cannot be changed"):
        storage.keys.update(token("a"), {"token": token("c")})
    with pytest.raises(ValueError, match="read-only"):
        storage.keys.update(token("a"), {"created_at": datetime.now(UTC)})


def test_budget_duration_schedules_reset(storage: Storage) -> None:
    created = storage.keys.create({"token": token("a"), "budget_duration": "1d", "max_budget": 1.0})
    expected = next_reset("1d", datetime.now(UTC))
    assert created["budget_reset_at"] == expected
    weekly = storage.keys.update(token("a"), {"budget_duration": "7d"})
    assert weekly["budget_reset_at"].weekday() == 0 and weekly["budget_reset_at"] > datetime.now(UTC)
    cleared = storage.keys.update(token("a"), {"budget_duration": None})
    assert cleared["budget_reset_at"] is None


def test_set_blocked(storage: Storage) -> None:
    storage.keys.create({"token": token("a")})
    assert storage.keys.set_blocked(token("a"), True)["blocked"] is True
    assert storage.keys.get(token("a"))["blocked"] is True  # type: ignore[index]
    assert storage.keys.set_blocked(token("a"), False)["blocked"] is False
    with pytest.raises(NotFound):
        storage.keys.set_blocked(token("missing"), True)


def test_list_pages_and_filters(storage: Storage) -> None:
    for index in range(7):
        storage.keys.create(
            {
                "token": token(f"k{index}"),
                "key_alias": f"alias-{index}",
                "user_id": "u1" if index < 3 else "u2",
                "team_id": "t1" if index % 2 == 0 else None,
            }
        )
    first, total = storage.keys.list(page=1, size=3)
    second, _ = storage.keys.list(page=2, size=3)
    third, _ = storage.keys.list(page=3, size=3)
    assert total == 7
    assert [len(first), len(second), len(third)] == [3, 3, 1]
    seen = [row["token"] for row in first + second + third]
    assert sorted(seen) == sorted(token(f"k{index}") for index in range(7))
    assert storage.keys.list(page=4, size=3) == ([], 7)

    by_user, user_total = storage.keys.list(user_id="u1")
    assert user_total == 3 and {row["user_id"] for row in by_user} == {"u1"}
    by_team, team_total = storage.keys.list(team_id="t1", size=2)
    assert team_total == 4 and len(by_team) == 2
    both, both_total = storage.keys.list(user_id="u2", team_id="t1")
    assert both_total == 2 and {row["token"] for row in both} == {token("k4"), token("k6")}
    by_alias, alias_total = storage.keys.list(key_alias="alias-5")
    assert alias_total == 1 and by_alias[0]["token"] == token("k5")
    with pytest.raises(ValueError, match="page"):
        storage.keys.list(page=0)
    with pytest.raises(ValueError, match="size"):
        storage.keys.list(size=0)


def test_delete_by_token_and_alias(storage: Storage) -> None:
    for name in ("a", "b", "c"):
        storage.keys.create({"token": token(name), "key_alias": f"alias-{name}"})
    deleted = storage.keys.delete(tokens=[token("a"), token("missing")], aliases=["alias-c", "nope"])
    assert sorted(deleted) == sorted([token("a"), token("c")])
    assert storage.keys.get(token("a")) is None and storage.keys.get(token("c")) is None
    assert storage.keys.get(token("b")) is not None
    assert storage.keys.delete() == []
    assert storage.keys.delete(tokens=[token("a")]) == []


def test_regenerate_moves_the_row_to_the_new_token(storage: Storage) -> None:
    storage.keys.create({"token": token("old"), "key_alias": "ci", "max_budget": 5.0})
    storage.spend.write_batch([SpendRecord(request_id="r1", api_key=token("old"), model_group="m", cost=0.25)])
    renewed = storage.keys.regenerate(token("old"), token("new"), "sk-...new1")
    assert renewed["token"] == token("new") and renewed["key_name"] == "sk-...new1"
    assert renewed["key_alias"] == "ci" and renewed["max_budget"] == 5.0
    assert renewed["spend"] == pytest.approx(0.25)
    assert renewed["model_spend"] == {"m": pytest.approx(0.25)}
    assert storage.keys.get(token("old")) is None
    with pytest.raises(NotFound):
        storage.keys.regenerate(token("old"), token("newer"), "sk-...x")
    storage.keys.create({"token": token("other")})
    with pytest.raises(Conflict):
        storage.keys.regenerate(token("new"), token("other"), "sk-...x")
    assert storage.keys.get(token("new")) is not None


def test_touch_last_active(storage: Storage) -> None:
    storage.keys.create({"token": token("a")})
    storage.keys.create({"token": token("b")})
    moment = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
    storage.keys.touch_last_active([token("a"), token("a"), token("missing")], at=moment)
    assert storage.keys.get(token("a"))["last_active"] == moment  # type: ignore[index]
    assert storage.keys.get(token("b"))["last_active"] is None  # type: ignore[index]
    storage.keys.touch_last_active([token("b")])
    assert storage.keys.get(token("b"))["last_active"] > moment  # type: ignore[index]
