"""Internal users: budgets, limits and a role shared by all their keys."""

from __future__ import annotations

import math
import uuid
from collections.abc import Collection, Iterable, Mapping
from typing import Any

from edgeproxy.admin import fields as f
from edgeproxy.admin import render
from edgeproxy.admin.keys import all_keys, generate_key
from edgeproxy.errors import InvalidRequestError, NotFoundError
from storage import Storage

# /user/new takes a few fields that are not user columns: LiteLLM creates a key for the new user unless
# told not to (auto_create_key defaults to true there, so scripts read `key` from the response), and may
# add the user to teams.
_NEW_ONLY = ("auto_create_key", "teams", "duration", "key_alias")


def _checks(known_models: Collection[str], action: str) -> dict[str, f.Check]:
    checks = {
        **f.shared_checks(known_models),
        "user_id": f.text,
        "user_email": f.text,
        "user_alias": f.text,
        "user_role": f.user_role,
    }
    if action == "new":
        checks.update(auto_create_key=f.flag, teams=f.string_list, duration=f.duration, key_alias=f.text)
    else:
        checks["spend"] = f.budget
    return checks


def find_user(storage: Storage, user_id: Any) -> dict[str, Any]:
    ident = f.required_text("user_id", user_id)
    row = storage.users.get(ident)
    if row is None:
        raise NotFoundError(f"user {ident} not found", param="user_id")
    return row


def new_user(
    storage: Storage,
    known_models: Collection[str],
    fields: Mapping[str, Any],
    created_by: str | None = None,
    auto_create_key: bool = True,
) -> dict[str, Any]:
    """Create a user (and, unless `auto_create_key` is false, a key for them: the response carries it)."""
    values = f.validate(fields, _checks(known_models, "new"), "user")
    extras = {name: values.pop(name) for name in _NEW_ONLY if name in values}
    user_id = values.get("user_id") or str(uuid.uuid4())
    teams = extras.get("teams", [])
    for team_id in teams:  # before creating anything: an unknown team must not leave half a user behind
        if storage.teams.get(team_id) is None:
            raise NotFoundError(f"team {team_id} not found", param="teams")
    row = storage.users.create({**values, "user_id": user_id})
    for team_id in teams:
        storage.teams.add_member(team_id, user_id, "user")
    result = {**render.record(row), "teams": teams}
    if extras.get("auto_create_key", auto_create_key):
        key_fields: dict[str, Any] = {name: extras[name] for name in ("duration", "key_alias") if name in extras}
        created = generate_key(storage, known_models, {"user_id": user_id, **key_fields}, created_by)
        result.update({name: created[name] for name in ("key", "key_name", "token", "expires", "key_alias")})
    return result


def user_info(storage: Storage, user_id: Any) -> dict[str, Any]:
    row = find_user(storage, user_id)
    teams = storage.teams.teams_of_user(row["user_id"])
    return {
        "user_id": row["user_id"],
        "user_info": render.record(row),
        "keys": all_keys(storage, user_id=row["user_id"]),
        "teams": [render.record(team) for team in teams],
    }


def update_user(storage: Storage, known_models: Collection[str], fields: Mapping[str, Any]) -> dict[str, Any]:
    changes = dict(fields)
    user_id = f.required_text("user_id", changes.pop("user_id", None))
    values = f.validate(changes, _checks(known_models, "update"), "user")
    return render.record(storage.users.update(user_id, values))


def delete_users(storage: Storage, user_ids: Iterable[Any]) -> list[str]:
    """Delete users with their keys and memberships; all must exist (a typo must not half-succeed)."""
    ids = [find_user(storage, user_id)["user_id"] for user_id in user_ids]
    if not ids:
        raise InvalidRequestError("name the users to delete in 'user_ids'", param="user_ids")
    return storage.users.delete(ids)


def list_users(storage: Storage, page: int = 1, size: int = 50, user_role: str | None = None) -> dict[str, Any]:
    """LiteLLM's /user/list shape: users, total, page, page_size, total_pages."""
    if user_role is not None:
        f.user_role("role", user_role)
    rows, total = storage.users.list(page=page, size=size, user_role=user_role)
    return {
        "users": [render.record(row) for row in rows],
        "total": total,
        "page": page,
        "page_size": size,
        "total_pages": math.ceil(total / size),
    }
