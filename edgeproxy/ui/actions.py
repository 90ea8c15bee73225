"""What the admin page reads and changes, under the HTTP admin API's rules.

Each function does what the matching route in `edgeproxy.api.keys` / `users` / `teams` does: the same access
checks (`edgeproxy.admin.access`, `Principal.require_admin`, team membership), the same sync functions from
`edgeproxy.admin` run through `Gateway.db.run`, and the same key-cache invalidation afterwards (`Gateway.shared`,
which also tells other instances). The page is a second door to one code path, not a second code path: a rule
changed in `admin.access` applies to both.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from edgeproxy.admin import access
from edgeproxy.admin import keys as admin_keys
from edgeproxy.admin import teams as admin_teams
from edgeproxy.admin import users as admin_users
from edgeproxy.auth import Principal
from edgeproxy.errors import PermissionDeniedError
from edgeproxy.gateway import Gateway


@dataclass(frozen=True, slots=True)
class Abilities:
    """What to offer on the page; every action is checked again on the server when it arrives."""

    read_all: bool
    admin: bool
    write_own_keys: bool
    user_id: str | None

    @classmethod
    def of(cls, principal: Principal) -> Abilities:
        own_writer = principal.user_id is not None and principal.user_role in access.SELF_SERVICE_WRITERS
        return cls(principal.may_read_all, principal.is_admin, principal.is_admin or own_writer, principal.user_id)


# ------------------------------------------------------------------------------------------------ keys


async def list_keys(gw: Gateway, principal: Principal, page: int, size: int, search: str) -> tuple[list[Any], int]:
    """One page of the keys this caller may read (all, or their own), optionally filtered by a search text.

    Storage filters by exact alias only, so a search reads every key the caller may see (`all_keys`, in pages of
    1000) and matches substrings here: fine for the thousands of keys a self-hosted proxy has.
    """
    user_id = None if principal.may_read_all else access.check_own_user_id(principal, None, write=False)
    if not search:
        result = await gw.db.run(admin_keys.list_keys, gw.storage, page, size, user_id)
        return result["keys"], result["total_count"]
    every = await gw.db.run(admin_keys.all_keys, gw.storage, user_id)
    needle = search.casefold()
    found = [key for key in every if needle in _searchable(key)]
    return found[(page - 1) * size : page * size], len(found)


def _searchable(key: dict[str, Any]) -> str:
    fields = ("key_alias", "key_name", "user_id", "team_id", "token")
    return " ".join(str(key.get(name) or "") for name in fields).casefold()


async def create_key(gw: Gateway, principal: Principal, fields: dict[str, Any]) -> dict[str, Any]:
    """As POST /key/generate: self-service keys always belong to their user, in teams that user is in."""
    if not principal.is_admin:
        fields["user_id"] = access.check_own_user_id(principal, fields.get("user_id"), write=True)
        team_id = fields.get("team_id")
        if team_id is not None and not await gw.db.run(
            admin_teams.is_team_member, gw.storage, team_id, fields["user_id"]
        ):
            raise PermissionDeniedError(f"user {fields['user_id']} is not a member of team {team_id}")
    created_by = access.created_by(principal)
    result = await gw.db.run(admin_keys.generate_key, gw.storage, gw.known_models, fields, created_by)
    await gw.shared.invalidate(result["token"])
    return result


async def set_key_blocked(gw: Gateway, principal: Principal, token: str, blocked: bool) -> dict[str, Any]:
    """As POST /key/block and /key/unblock: an owner may stop their key, only an admin may lift a block."""
    if not principal.is_admin:
        if not blocked:
            principal.require_admin()
        access.check_key_access(principal, await gw.db.run(admin_keys.find_key, gw.storage, token), write=True)
    result = await gw.db.run(admin_keys.set_key_blocked, gw.storage, token, blocked)
    await gw.shared.invalidate(result["token"])
    return result


async def delete_key(gw: Gateway, principal: Principal, token: str) -> list[str]:
    """As POST /key/delete."""
    if not principal.is_admin:
        for row in await gw.db.run(admin_keys.find_keys, gw.storage, [token]):
            access.check_key_access(principal, row, write=True)
    tokens = await gw.db.run(admin_keys.delete_keys, gw.storage, [token])
    await gw.shared.invalidate(*tokens)
    return tokens


# ------------------------------------------------------------------------------------------------ users


async def list_users(gw: Gateway, principal: Principal, page: int, size: int) -> dict[str, Any]:
    """As GET /user/list (readers of everything), or the caller's own user as a one-row page."""
    if principal.may_read_all:
        return await gw.db.run(admin_users.list_users, gw.storage, page, size)
    own = access.check_own_user_id(principal, None, write=False)
    info = await gw.db.run(admin_users.user_info, gw.storage, own)
    return {"users": [info["user_info"]], "total": 1, "page": 1, "page_size": size, "total_pages": 1}


async def create_user(gw: Gateway, principal: Principal, fields: dict[str, Any]) -> dict[str, Any]:
    """As POST /user/new (it may create the user's first key: the result then carries it, shown once)."""
    principal.require_admin()
    created_by = access.created_by(principal)
    result = await gw.db.run(admin_users.new_user, gw.storage, gw.known_models, fields, created_by)
    await gw.shared.invalidate_entities(user_ids={result["user_id"]})
    return result


async def update_user(gw: Gateway, principal: Principal, fields: dict[str, Any]) -> dict[str, Any]:
    """As POST /user/update."""
    principal.require_admin()
    result = await gw.db.run(admin_users.update_user, gw.storage, gw.known_models, fields)
    await gw.shared.invalidate_entities(user_ids={result["user_id"]})
    return result


# ------------------------------------------------------------------------------------------------ teams


async def list_teams(gw: Gateway, principal: Principal) -> list[dict[str, Any]]:
    """As GET /team/list: every team for readers, the caller's own teams for everyone else."""
    user_id = None if principal.may_read_all else access.check_own_user_id(principal, None, write=False)
    return await gw.db.run(admin_teams.list_teams, gw.storage, user_id)


async def team_info(gw: Gateway, principal: Principal, team_id: str) -> dict[str, Any]:
    """As GET /team/info: readers of everything and the team's members."""
    if not principal.may_read_all and not await gw.db.run(
        admin_teams.is_team_member, gw.storage, team_id, principal.user_id
    ):
        raise PermissionDeniedError(f"only proxy admins and members of team {team_id} may read it")
    return await gw.db.run(admin_teams.team_info, gw.storage, team_id)


async def is_team_admin(gw: Gateway, principal: Principal, team_id: str) -> bool:
    return principal.is_admin or await gw.db.run(admin_teams.is_team_admin, gw.storage, team_id, principal.user_id)


async def _require_team_admin(gw: Gateway, principal: Principal, team_id: str) -> None:
    if not await is_team_admin(gw, principal, team_id):
        raise PermissionDeniedError(f"only a proxy admin or an admin of team {team_id} may do this")


async def create_team(gw: Gateway, principal: Principal, fields: dict[str, Any]) -> dict[str, Any]:
    """As POST /team/new."""
    principal.require_admin()
    return await gw.db.run(admin_teams.new_team, gw.storage, gw.known_models, fields)


async def update_team(gw: Gateway, principal: Principal, fields: dict[str, Any]) -> dict[str, Any]:
    """As POST /team/update, for the fields this page changes (budgets and limits: proxy admins only)."""
    principal.require_admin()
    result = await gw.db.run(admin_teams.update_team, gw.storage, gw.known_models, fields)
    await gw.shared.invalidate_entities(team_ids={result["team_id"]})
    return result


async def add_member(gw: Gateway, principal: Principal, team_id: str, member: dict[str, Any]) -> dict[str, Any]:
    """As POST /team/member_add."""
    await _require_team_admin(gw, principal, team_id)
    result = await gw.db.run(admin_teams.add_members, gw.storage, team_id, member, None)
    await gw.shared.invalidate_entities(team_ids={result["team_id"]})
    return result


async def remove_member(gw: Gateway, principal: Principal, team_id: str, user_id: str) -> dict[str, Any]:
    """As POST /team/member_delete."""
    await _require_team_admin(gw, principal, team_id)
    result = await gw.db.run(admin_teams.remove_member, gw.storage, team_id, user_id)
    await gw.shared.invalidate_entities(team_ids={result["team_id"]}, user_ids={user_id})
    return result
