"""Teams and their members: a team's models, budget and limits apply to every key in it."""

from __future__ import annotations

import uuid
from collections.abc import Collection, Iterable, Mapping
from typing import Any

from edgeproxy.admin import fields as f
from edgeproxy.admin import render
from edgeproxy.admin.keys import all_keys
from edgeproxy.errors import InvalidRequestError, NotFoundError
from storage import Storage

_MEMBER_FIELDS = ("user_id", "role", "max_budget_in_team")


def _checks(known_models: Collection[str], action: str) -> dict[str, f.Check]:
    checks = {
        **f.shared_checks(known_models),
        "team_id": f.text,
        "team_alias": f.text,
        "model_aliases": f.alias_map(known_models),
    }
    if action == "new":
        checks["members_with_roles"] = members
    else:
        checks["spend"] = f.budget
    return checks


def members(name: str, value: Any) -> list[dict[str, Any]]:
    """One member object or a list of them: {"user_id": ..., "role": "admin"|"user", "max_budget_in_team"?}."""
    if value is None:
        return []
    items = value if isinstance(value, list) else [value]
    checked = []
    for i, item in enumerate(items):
        where = f"{name}[{i}]" if isinstance(value, list) else name
        if not isinstance(item, dict):
            raise InvalidRequestError(f"{where!r} must be an object with user_id and role", param=where)
        # LiteLLM also identifies members by user_email; we need the user_id (emails are not unique here).
        unknown = sorted(set(item) - {*_MEMBER_FIELDS, "user_email"})
        if unknown:
            raise InvalidRequestError(f"unknown field {unknown[0]!r} in {where!r}", param=f"{where}.{unknown[0]}")
        checked.append(
            {
                "user_id": f.required_text(f"{where}.user_id", item.get("user_id")),
                "role": f.member_role(f"{where}.role", item.get("role")),
                "max_budget_in_team": f.budget(f"{where}.max_budget_in_team", item.get("max_budget_in_team")),
            }
        )
    return checked


def find_team(storage: Storage, team_id: Any) -> dict[str, Any]:
    ident = f.required_text("team_id", team_id)
    row = storage.teams.get(ident)
    if row is None:
        raise NotFoundError(f"team {ident} not found", param="team_id")
    return row


def _memberships(storage: Storage, team_id: str) -> list[dict[str, Any]]:
    return [render.record(member) for member in storage.teams.members(team_id)]


def team_record(storage: Storage, row: Mapping[str, Any]) -> dict[str, Any]:
    """A team as LiteLLM shows it: its columns plus `members_with_roles`."""
    return {**render.record(row), "members_with_roles": _memberships(storage, row["team_id"])}


def is_team_admin(storage: Storage, team_id: Any, user_id: str | None) -> bool:
    """Whether `user_id` holds the admin role in the team (404 for an unknown team)."""
    team = find_team(storage, team_id)
    return user_id is not None and any(
        m["user_id"] == user_id and m["role"] == "admin" for m in storage.teams.members(team["team_id"])
    )


def is_team_member(storage: Storage, team_id: Any, user_id: str | None) -> bool:
    team = find_team(storage, team_id)
    return user_id is not None and any(m["user_id"] == user_id for m in storage.teams.members(team["team_id"]))


def new_team(storage: Storage, known_models: Collection[str], fields: Mapping[str, Any]) -> dict[str, Any]:
    values = f.validate(fields, _checks(known_models, "new"), "team")
    initial = values.pop("members_with_roles", [])
    team_id = values.get("team_id") or str(uuid.uuid4())
    row = storage.teams.create({**values, "team_id": team_id})
    for member in initial:
        storage.teams.add_member(team_id, member["user_id"], member["role"], member["max_budget_in_team"])
    return team_record(storage, row)


def team_info(storage: Storage, team_id: Any) -> dict[str, Any]:
    row = find_team(storage, team_id)
    memberships = _memberships(storage, row["team_id"])
    return {
        "team_id": row["team_id"],
        "team_info": {**render.record(row), "members_with_roles": memberships},
        "keys": all_keys(storage, team_id=row["team_id"]),
        "team_memberships": memberships,
    }


def update_team(storage: Storage, known_models: Collection[str], fields: Mapping[str, Any]) -> dict[str, Any]:
    changes = dict(fields)
    team_id = f.required_text("team_id", changes.pop("team_id", None))
    values = f.validate(changes, _checks(known_models, "update"), "team")
    return team_record(storage, storage.teams.update(team_id, values))


def set_team_blocked(storage: Storage, team_id: Any, blocked: bool) -> dict[str, Any]:
    return team_record(storage, storage.teams.set_blocked(f.required_text("team_id", team_id), blocked))


def delete_teams(storage: Storage, team_ids: Iterable[Any]) -> list[str]:
    """Delete teams with their keys and memberships; all must exist (a typo must not half-succeed)."""
    ids = [find_team(storage, team_id)["team_id"] for team_id in team_ids]
    if not ids:
        raise InvalidRequestError("name the teams to delete in 'team_ids'", param="team_ids")
    return storage.teams.delete(ids)


def add_members(storage: Storage, team_id: Any, new_members: Any, max_budget_in_team: Any = None) -> dict[str, Any]:
    """Add one member or several (unknown users are created); `max_budget_in_team` applies to each."""
    checked = members("member", new_members)
    if not checked:
        raise InvalidRequestError("missing required field 'member'", param="member")
    default_budget = f.budget("max_budget_in_team", max_budget_in_team)
    team = find_team(storage, team_id)
    added = []
    for member in checked:
        budget = member["max_budget_in_team"] if member["max_budget_in_team"] is not None else default_budget
        added.append(storage.teams.add_member(team["team_id"], member["user_id"], member["role"], budget))
    users = [storage.users.get(member["user_id"]) for member in checked]
    return {
        **team_record(storage, team),
        "updated_users": [render.record(user) for user in users if user is not None],
        "updated_team_memberships": [render.record(membership) for membership in added],
    }


def remove_member(storage: Storage, team_id: Any, user_id: Any) -> dict[str, Any]:
    team = find_team(storage, team_id)
    storage.teams.remove_member(team["team_id"], f.required_text("user_id", user_id))
    return team_record(storage, team)


def list_teams(storage: Storage, user_id: str | None = None) -> list[dict[str, Any]]:
    """Every team (LiteLLM's /team/list is a plain list), or only the teams `user_id` belongs to."""
    if user_id is not None:
        rows = storage.teams.teams_of_user(user_id)
    else:
        rows, page = [], 1
        while True:
            batch, total = storage.teams.list(page=page, size=1000)
            rows.extend(batch)
            if len(rows) >= total or not batch:
                break
            page += 1
    return [team_record(storage, row) for row in rows]
