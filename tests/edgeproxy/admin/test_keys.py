"""Key administration on a real SQLite database: format, hashing, expiry, conflicts and not-found."""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from edgeproxy.admin import keys
from edgeproxy.db import proxy_error_for
from edgeproxy.errors import InvalidRequestError, NotFoundError
from storage import Conflict, NotFound, Storage
from storage.schema import metadata

from .conftest import MODELS

KEY_FORMAT = re.compile(r"^sk-[A-Za-z0-9_-]{22}$")


def everything_stored(storage: Storage) -> str:
    """Every value of every row of every table, as one string."""
    parts: list[str] = []
    with storage.engine.connect() as connection:
        for table in metadata.sorted_tables:
            for row in connection.execute(select(table)):
                parts.extend(repr(value) for value in row)
    return "\n".join(parts)


def test_generated_key_has_the_documented_format_and_only_its_hash_is_stored(storage: Storage) -> None:
    result = keys.generate_key(storage, MODELS, {"key_alias": "ci", "metadata": {"owner": "ops"}}, "admin")
    key = result["key"]
    assert KEY_FORMAT.match(key)
    assert result["token"] == hashlib.sha256(key.encode()).hexdigest() == result["token_id"]
    assert result["key_name"] == "sk-..." + key[-4:]
    assert result["models"] == []  # [] means every model
    assert result["created_by"] == "admin"
    stored = everything_stored(storage)
    assert result["token"] in stored
    assert key not in stored
    assert key[3:] not in stored  # not even without its prefix


def test_keys_are_unique(storage: Storage) -> None:
    made = {keys.generate_key(storage, MODELS, {})["key"] for _ in range(20)}
    assert len(made) == 20


def test_duration_sets_expires_from_now(storage: Storage) -> None:
    before = datetime.now(UTC)
    result = keys.generate_key(storage, MODELS, {"duration": "30d"})
    after = datetime.now(UTC)
    expires = datetime.fromisoformat(result["expires"])
    assert before + timedelta(days=30) <= expires <= after + timedelta(days=30)
    assert result["duration"] == "30d"
    assert keys.generate_key(storage, MODELS, {})["expires"] is None


def test_month_duration_keeps_the_day(storage: Storage) -> None:
    expires = datetime.fromisoformat(keys.generate_key(storage, MODELS, {"duration": "1mo"})["expires"])
    now = datetime.now(UTC)
    assert timedelta(days=27) < expires - now <= timedelta(days=31, seconds=5)


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"max_budget": -1}, "max_budget"),
        ({"max_budget": float("nan")}, "max_budget"),
        ({"duration": "3x"}, "duration"),
        ({"budget_duration": "soon"}, "budget_duration"),
        ({"models": ["nope"]}, "models"),
        ({"rpm_limit": 2.5}, "rpm_limit"),
        ({"metadata": "x"}, "metadata"),
        ({"key": "not-sk"}, "key"),
        ({"tags": ["x"]}, "tags"),
    ],
)
def test_invalid_fields_are_refused_with_param_and_nothing_is_stored(
    storage: Storage, fields: dict[str, object], param: str
) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        keys.generate_key(storage, MODELS, fields)
    assert caught.value.param == param
    assert storage.keys.list()[1] == 0


def test_bring_your_own_key(storage: Storage) -> None:
    result = keys.generate_key(storage, MODELS, {"key": "sk-my-own-secret-1234"})
    assert result["key"] == "sk-my-own-secret-1234"
    assert keys.key_info(storage, "sk-my-own-secret-1234")["info"]["key_name"] == "sk-...1234"
    with pytest.raises(Conflict):
        keys.generate_key(storage, MODELS, {"key": "sk-my-own-secret-1234"})


def test_alias_conflict_is_a_409(storage: Storage) -> None:
    keys.generate_key(storage, MODELS, {"key_alias": "ci"})
    with pytest.raises(Conflict) as caught:
        keys.generate_key(storage, MODELS, {"key_alias": "ci"})
    assert caught.value.field == "key_alias"
    assert proxy_error_for(caught.value).status == 409  # type: ignore[attr-defined]


def test_unknown_user_is_created_unknown_team_is_404(storage: Storage) -> None:
    keys.generate_key(storage, MODELS, {"user_id": "alice"})
    user = storage.users.get("alice")
    assert user is not None and user["user_role"] == "internal_user"
    with pytest.raises(NotFoundError) as caught:
        keys.generate_key(storage, MODELS, {"team_id": "ghosts"})
    assert caught.value.param == "team_id"


def test_info_accepts_the_key_or_its_token_and_never_shows_the_key(storage: Storage) -> None:
    created = keys.generate_key(storage, MODELS, {"models": ["gpt-small"], "max_budget": 5})
    by_key = keys.key_info(storage, created["key"])
    by_token = keys.key_info(storage, created["token"])
    assert by_key == by_token
    assert by_key["key"] == created["token"]
    assert by_key["info"]["models"] == ["gpt-small"]
    assert by_key["info"]["max_budget"] == 5
    assert created["key"] not in repr(by_key)
    with pytest.raises(NotFoundError):
        keys.key_info(storage, "sk-doesnotexist000000000")


def test_update_changes_only_given_fields(storage: Storage) -> None:
    created = keys.generate_key(storage, MODELS, {"key_alias": "a", "max_budget": 5, "duration": "1d"})
    updated = keys.update_key(storage, MODELS, {"key": created["key"], "models": ["gpt-large"], "duration": None})
    assert updated["models"] == ["gpt-large"]
    assert updated["max_budget"] == 5
    assert updated["key_alias"] == "a"
    assert updated["expires"] is None
    past = keys.update_key(storage, MODELS, {"key": created["token"], "expires": "2000-01-01T00:00:00Z"})
    assert past["expires"].startswith("2000-01-01T00:00:00")
    with pytest.raises(InvalidRequestError) as caught:
        keys.update_key(storage, MODELS, {"key": created["key"], "models": ["gpt-9"]})
    assert caught.value.param == "models"
    with pytest.raises(NotFound):
        keys.update_key(storage, MODELS, {"key": "sk-unknown-key-000000000", "max_budget": 1})


def test_block_and_unblock(storage: Storage) -> None:
    created = keys.generate_key(storage, MODELS, {})
    assert keys.set_key_blocked(storage, created["key"], True)["blocked"] is True
    assert storage.keys.get(created["token"])["blocked"] is True  # type: ignore[index]
    assert keys.set_key_blocked(storage, created["token"], False)["blocked"] is False


def test_delete_by_key_and_alias_all_or_nothing(storage: Storage) -> None:
    one = keys.generate_key(storage, MODELS, {})
    two = keys.generate_key(storage, MODELS, {"key_alias": "two"})
    with pytest.raises(NotFoundError):
        keys.delete_keys(storage, keys=[one["key"]], key_aliases=["no-such-alias"])
    assert storage.keys.get(one["token"]) is not None  # nothing was deleted
    deleted = keys.delete_keys(storage, keys=[one["key"]], key_aliases=["two"])
    assert sorted(deleted) == sorted([one["token"], two["token"]])
    assert storage.keys.list()[1] == 0
    with pytest.raises(InvalidRequestError):
        keys.delete_keys(storage)


def test_list_pages_and_filters(storage: Storage) -> None:
    for i in range(5):
        keys.generate_key(storage, MODELS, {"user_id": "alice" if i % 2 == 0 else "bob"})
    page = keys.list_keys(storage, page=1, size=2, user_id="alice")
    assert page["total_count"] == 3
    assert page["total_pages"] == 2
    assert page["current_page"] == 1
    assert [key["user_id"] for key in page["keys"]] == ["alice", "alice"]
    assert all("key" not in key for key in page["keys"])
    assert len(keys.list_keys(storage, page=2, size=2, user_id="alice")["keys"]) == 1
    assert len(keys.all_keys(storage, user_id="bob")) == 2


def test_regenerate_moves_the_row_to_a_new_secret(storage: Storage) -> None:
    created = keys.generate_key(storage, MODELS, {"key_alias": "rotating", "max_budget": 3})
    storage.keys.update(created["token"], {"spend": 1.25})
    fresh = keys.regenerate_key(storage, MODELS, created["key"], {"max_budget": 4})
    assert KEY_FORMAT.match(fresh["key"])
    assert fresh["key"] != created["key"]
    assert storage.keys.get(created["token"]) is None
    row = storage.keys.get(fresh["token"])
    assert row is not None
    assert (row["key_alias"], row["spend"], row["max_budget"]) == ("rotating", 1.25, 4)
    assert fresh["key"] not in everything_stored(storage)
    with pytest.raises(NotFound):
        keys.regenerate_key(storage, MODELS, created["key"], {})


def test_litellm_optional_fields_sent_as_null_are_accepted_but_real_ones_refused(storage: Storage) -> None:
    made = keys.generate_key(storage, MODELS, {"key_alias": "sdk", "tags": None, "permissions": {}, "guardrails": []})
    assert made["key_alias"] == "sdk"
    with pytest.raises(InvalidRequestError) as raised:
        keys.generate_key(storage, MODELS, {"tags": ["prod"]})
    assert raised.value.param == "tags"
