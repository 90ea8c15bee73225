"""/team/* routes: thin wrappers over `edgeproxy.admin.teams` (the CLI uses the same functions).

Team admins (members with role "admin") may manage their own team's members and rename it; budgets,
limits, models and blocking stay with proxy admins, or a team admin could lift their own limits.
"""

from __future__ import annotations

from typing import Any

from quart import Blueprint, Response

from edgeproxy.admin import access
from edgeproxy.admin import teams as admin_teams
from edgeproxy.api.keys import arg, caller, id_list, read_body, respond
from edgeproxy.auth import Principal
from edgeproxy.errors import InvalidRequestError, PermissionDeniedError
from edgeproxy.gateway import Gateway

blueprint = Blueprint("teams", __name__)

TEAM_ADMIN_FIELDS = frozenset({"team_id", "team_alias", "metadata"})


async def _require_team_admin(gw: Gateway, principal: Principal, team_id: Any) -> None:
    if principal.is_admin:
        return
    if not await gw.db.run(admin_teams.is_team_admin, gw.storage, team_id, principal.user_id):
        raise PermissionDeniedError(f"only a proxy admin or an admin of team {team_id} may do this")


@blueprint.post("/team/new")
async def new() -> Response:
    gw, principal = await caller()
    principal.require_admin()
    body = await read_body()
    return respond(await gw.db.run(admin_teams.new_team, gw.storage, gw.known_models, body))


@blueprint.get("/team/info")
async def info() -> Response:
    gw, principal = await caller()
    team_id = arg("team_id")
    if team_id is None:
        raise InvalidRequestError("missing query parameter 'team_id'", param="team_id")
    if not principal.may_read_all and not await gw.db.run(
        admin_teams.is_team_member, gw.storage, team_id, principal.user_id
    ):
        raise PermissionDeniedError(f"only proxy admins and members of team {team_id} may read it")
    return respond(await gw.db.run(admin_teams.team_info, gw.storage, team_id))


@blueprint.post("/team/update")
async def update() -> Response:
    gw, principal = await caller()
    body = await read_body()
    if not principal.is_admin:
        await _require_team_admin(gw, principal, body.get("team_id"))
        beyond = sorted(set(body) - TEAM_ADMIN_FIELDS)
        if beyond:
            raise PermissionDeniedError(f"only a proxy admin may change {beyond[0]!r} of a team", param=beyond[0])
    result = await gw.db.run(admin_teams.update_team, gw.storage, gw.known_models, body)
    await gw.shared.invalidate_entities(team_ids={result["team_id"]})
    return respond(result)


@blueprint.post("/team/delete")
async def delete() -> Response:
    gw, principal = await caller()
    principal.require_admin()
    body = await read_body()
    deleted = await gw.db.run(admin_teams.delete_teams, gw.storage, id_list(body, "team_ids"))
    await gw.shared.invalidate_all()  # their keys are gone too
    return respond({"deleted_teams": deleted})


@blueprint.post("/team/member_add")
async def member_add() -> Response:
    gw, principal = await caller()
    body = await read_body()
    await _require_team_admin(gw, principal, body.get("team_id"))
    result = await gw.db.run(
        admin_teams.add_members, gw.storage, body.get("team_id"), body.get("member"), body.get("max_budget_in_team")
    )
    await gw.shared.invalidate_entities(team_ids={result["team_id"]})
    return respond(result)


@blueprint.post("/team/member_delete")
async def member_delete() -> Response:
    gw, principal = await caller()
    body = await read_body()
    await _require_team_admin(gw, principal, body.get("team_id"))
    result = await gw.db.run(admin_teams.remove_member, gw.storage, body.get("team_id"), body.get("user_id"))
    await gw.shared.invalidate_entities(team_ids={result["team_id"]}, user_ids={body["user_id"]})
    return respond(result)


async def _set_blocked(blocked: bool) -> Response:
    gw, principal = await caller()
    principal.require_admin()
    body = await read_body()
    result = await gw.db.run(admin_teams.set_team_blocked, gw.storage, body.get("team_id"), blocked)
    await gw.shared.invalidate_entities(team_ids={result["team_id"]})
    return respond(result)


@blueprint.post("/team/block")
async def block() -> Response:
    return await _set_blocked(True)


@blueprint.post("/team/unblock")
async def unblock() -> Response:
    return await _set_blocked(False)


@blueprint.get("/team/list")
async def list_teams() -> Response:
    gw, principal = await caller()
    user_id = arg("user_id")
    if not principal.may_read_all:
        user_id = access.check_own_user_id(principal, user_id, write=False)  # members see their own teams
    return respond(await gw.db.run(admin_teams.list_teams, gw.storage, user_id))
