"""Who may touch which key, and the CLI's option parsing and tables."""

from __future__ import annotations

import pytest

from edgeproxy.admin import access, text
from edgeproxy.auth import MASTER, Principal
from edgeproxy.errors import InvalidRequestError, PermissionDeniedError

ALICE_KEY = {"token": "t-alice", "user_id": "alice", "key_name": "sk-...aaaa"}
BOB_KEY = {"token": "t-bob", "user_id": "bob", "key_name": "sk-...bbbb"}


def principal(role: str | None, user_id: str | None = "alice", token: str = "t-caller") -> Principal:
    return Principal(token=token, user_id=user_id, user_role=role)


def test_admins_may_do_anything_viewers_only_read() -> None:
    for who in (MASTER, principal("proxy_admin")):
        access.check_key_access(who, BOB_KEY, write=True)
    viewer = principal("proxy_admin_viewer")
    access.check_key_access(viewer, BOB_KEY, write=False)
    with pytest.raises(PermissionDeniedError):
        access.check_key_access(viewer, BOB_KEY, write=True)


def test_internal_users_touch_only_their_own_keys() -> None:
    alice = principal("internal_user")
    access.check_key_access(alice, ALICE_KEY, write=True)
    with pytest.raises(PermissionDeniedError):
        access.check_key_access(alice, BOB_KEY, write=False)
    reader = principal("internal_user_viewer")
    access.check_key_access(reader, ALICE_KEY, write=False)
    with pytest.raises(PermissionDeniedError):
        access.check_key_access(reader, ALICE_KEY, write=True)


def test_a_key_without_a_user_reads_only_itself() -> None:
    lone = principal(None, user_id=None, token="t-bob")
    access.check_key_access(lone, BOB_KEY, write=False)
    with pytest.raises(PermissionDeniedError):
        access.check_key_access(lone, ALICE_KEY, write=False)
    with pytest.raises(PermissionDeniedError):
        access.own_user_id(lone, write=False)


def test_self_service_user_id_is_forced_to_the_caller() -> None:
    alice = principal("internal_user")
    assert access.check_own_user_id(alice, None, write=True) == "alice"
    with pytest.raises(PermissionDeniedError):
        access.check_own_user_id(alice, "bob", write=True)
    with pytest.raises(PermissionDeniedError):
        access.check_own_user_id(principal("internal_user_viewer"), None, write=True)


def test_option_fields() -> None:
    fields = text.option_fields(
        {"models": "a, b,", "max_budget": "none", "metadata": '{"x": 1}', "key_alias": None, "blocked": False}
    )
    assert fields == {"models": ["a", "b"], "max_budget": None, "metadata": {"x": 1}, "blocked": False}
    assert text.option_fields({"models": ""}) == {"models": []}
    with pytest.raises(InvalidRequestError) as caught:
        text.option_fields({"metadata": "{oops"})
    assert caught.value.param == "metadata"


def test_table_aligns_columns() -> None:
    rendered = text.table([{"a": "x", "b": [1, 2]}, {"a": "long value", "b": None}], {"a": "A", "b": "B"})
    lines = rendered.splitlines()
    assert lines[0].split() == ["A", "B"]
    assert lines[1].index("1,2") == lines[0].index("B")
    assert lines[2].endswith("-")
