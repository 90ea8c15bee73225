"""/key/* routes: thin wrappers over `edgeproxy.admin.keys` (the CLI uses the same functions).

Every write drops the affected entries from this instance's key cache at once, so a block, delete or model
change applies to the very next request here; with Redis, other instances hear of it at once (pub/sub,
`edgeproxy.shared`), and without it through their change poller within about a second.
"""

from __future__ import annotations

from typing import Any

from quart import Blueprint, Response, current_app, request

from edgeproxy.admin import access
from edgeproxy.admin import keys as admin_keys
from edgeproxy.admin.fields import query_int
from edgeproxy.admin.teams import is_team_member
from edgeproxy.api.requests import parse_json_object
from edgeproxy.auth import Principal
from edgeproxy.calls import dumps
from edgeproxy.errors import InvalidRequestError, PermissionDeniedError
from edgeproxy.gateway import Gateway

blueprint = Blueprint("keys", __name__)


# ---------------------------------------------------------------- helpers shared by the management routes


async def caller() -> tuple[Gateway, Principal]:
    gw: Gateway = current_app.extensions["edgeproxy"]
    return gw, await gw.authenticate(request.headers)


async def read_body(optional: bool = False) -> dict[str, Any]:
    raw = await request.get_data(as_text=False, parse_form_data=False)
    if optional and not raw.strip():
        return {}
    return parse_json_object(raw)


def respond(body: Any) -> Response:
    return Response(dumps(body), status=200, content_type="application/json")


def id_list(body: dict[str, Any], name: str) -> list[str]:
    value = body.get(name)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(item, str) and item for item in value):
        raise InvalidRequestError(f"{name!r} must be a list of strings", param=name)
    return value


def arg(name: str) -> str | None:
    value = request.args.get(name)
    return value if value else None


# ---------------------------------------------------------------- routes


@blueprint.post("/key/generate")
async def generate() -> Response:
    gw, principal = await caller()
    body = await read_body()
    if not principal.is_admin:
        # Self-service: an internal_user's keys always belong to them, and only to teams they are in.
        body["user_id"] = access.check_own_user_id(principal, body.get("user_id"), write=True)
        team_id = body.get("team_id")
        if team_id is not None and not await gw.db.run(is_team_member, gw.storage, team_id, body["user_id"]):
            raise PermissionDeniedError(f"user {body['user_id']} is not a member of team {team_id}")
    result = await gw.db.run(admin_keys.generate_key, gw.storage, gw.known_models, body, access.created_by(principal))
    await gw.shared.invalidate(result["token"])  # a bring-your-own key may sit in the negative cache
    return respond(result)


@blueprint.get("/key/info")
async def info() -> Response:
    gw, principal = await caller()
    key = arg("key") or principal.token  # no ?key=: the calling key itself, as in LiteLLM
    if key is None:
        raise InvalidRequestError("missing query parameter 'key'", param="key")
    result = await gw.db.run(admin_keys.key_info, gw.storage, key)
    access.check_key_access(principal, result["info"], write=False)
    return respond(result)


@blueprint.post("/key/update")
async def update() -> Response:
    gw, principal = await caller()
    principal.require_admin()
    body = await read_body()
    result = await gw.db.run(admin_keys.update_key, gw.storage, gw.known_models, body)
    await gw.shared.invalidate(result["token"])
    return respond(result)


@blueprint.post("/key/delete")
async def delete() -> Response:
    gw, principal = await caller()
    body = await read_body()
    keys, aliases = id_list(body, "keys"), id_list(body, "key_aliases")
    if not principal.is_admin:
        for row in await gw.db.run(admin_keys.find_keys, gw.storage, keys, aliases):
            access.check_key_access(principal, row, write=True)
    tokens = await gw.db.run(admin_keys.delete_keys, gw.storage, keys, aliases)
    await gw.shared.invalidate(*tokens)
    # LiteLLM echoes what was asked for; every name was found (or the whole call failed with 404).
    return respond({"deleted_keys": keys + aliases})


async def _set_blocked(blocked: bool) -> Response:
    gw, principal = await caller()
    body = await read_body()
    if not principal.is_admin:
        if not blocked:  # an owner may stop their key, but only an admin may lift a block
            principal.require_admin()
        access.check_key_access(principal, await gw.db.run(admin_keys.find_key, gw.storage, body.get("key")), True)
    result = await gw.db.run(admin_keys.set_key_blocked, gw.storage, body.get("key"), blocked)
    await gw.shared.invalidate(result["token"])
    return respond(result)


@blueprint.post("/key/block")
async def block() -> Response:
    return await _set_blocked(True)


@blueprint.post("/key/unblock")
async def unblock() -> Response:
    return await _set_blocked(False)


@blueprint.get("/key/list")
async def list_keys() -> Response:
    gw, principal = await caller()
    user_id = arg("user_id")
    if not principal.may_read_all:
        user_id = access.check_own_user_id(principal, user_id, write=False)
    page, size = query_int("page", arg("page"), 1), query_int("size", arg("size"), 50)
    result = await gw.db.run(admin_keys.list_keys, gw.storage, page, size, user_id, arg("team_id"), arg("key_alias"))
    if (arg("return_full_object") or "false").lower() != "true":
        result["keys"] = [key["token"] for key in result["keys"]]  # LiteLLM's default: tokens only
    return respond(result)


@blueprint.post("/key/regenerate")
@blueprint.post("/key/<key>/regenerate")
async def regenerate(key: str | None = None) -> Response:
    gw, principal = await caller()
    principal.require_admin()
    fields = await read_body(optional=key is not None)
    if key is None:
        key = fields.pop("key", None)
    old_token = admin_keys.token_of(key)
    result = await gw.db.run(admin_keys.regenerate_key, gw.storage, gw.known_models, key, fields)
    await gw.shared.invalidate(old_token, result["token"])
    return respond(result)
