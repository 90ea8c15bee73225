"""/user/* routes: thin wrappers over `edgeproxy.admin.users` (the CLI uses the same functions)."""

from __future__ import annotations

from quart import Blueprint, Response

from edgeproxy.admin import access
from edgeproxy.admin import users as admin_users
from edgeproxy.admin.fields import query_int
from edgeproxy.api.keys import arg, caller, id_list, read_body, respond
from edgeproxy.errors import InvalidRequestError

blueprint = Blueprint("users", __name__)


@blueprint.post("/user/new")
async def new() -> Response:
    gw, principal = await caller()
    principal.require_admin()
    body = await read_body()
    result = await gw.db.run(admin_users.new_user, gw.storage, gw.known_models, body, access.created_by(principal))
    await gw.shared.invalidate_entities(user_ids={result["user_id"]})
    return respond(result)


@blueprint.get("/user/info")
async def info() -> Response:
    gw, principal = await caller()
    user_id = arg("user_id")
    if not principal.may_read_all:
        user_id = access.check_own_user_id(principal, user_id, write=False)
    if user_id is None:
        raise InvalidRequestError("missing query parameter 'user_id'", param="user_id")
    return respond(await gw.db.run(admin_users.user_info, gw.storage, user_id))


@blueprint.post("/user/update")
async def update() -> Response:
    gw, principal = await caller()
    principal.require_admin()
    body = await read_body()
    result = await gw.db.run(admin_users.update_user, gw.storage, gw.known_models, body)
    await gw.shared.invalidate_entities(user_ids={result["user_id"]})
    return respond(result)


@blueprint.post("/user/delete")
async def delete() -> Response:
    gw, principal = await caller()
    principal.require_admin()
    body = await read_body()
    deleted = await gw.db.run(admin_users.delete_users, gw.storage, id_list(body, "user_ids"))
    await gw.shared.invalidate_all()  # their keys are gone too; the cache does not know which those were
    return respond({"deleted_users": deleted})


@blueprint.get("/user/list")
async def list_users() -> Response:
    gw, principal = await caller()
    access.require_reader(principal)
    page = query_int("page", arg("page"), 1)
    size = query_int("page_size", arg("page_size") or arg("size"), 25)
    return respond(await gw.db.run(admin_users.list_users, gw.storage, page, size, arg("role")))
