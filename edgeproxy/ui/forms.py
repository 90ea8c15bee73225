"""Form posts: each turns form fields into the admin API's field dict and calls `actions` (same rules, same code).

Form values arrive as text; the admin field checks accept numeric strings (the CLI relies on that too), so
nothing is converted here and an error names the field exactly as the API would. Empty inputs are left out
("not set"), except on budget forms, where an emptied field means "remove the budget".
"""

from __future__ import annotations

from typing import Any

from quart import Response, request
from werkzeug.datastructures import MultiDict

from edgeproxy.ui import actions
from edgeproxy.ui.web import Visitor, blueprint, gateway, render, see_other, signed_in

KEY_FIELDS = (
    "key_alias",
    "duration",
    "max_budget",
    "budget_duration",
    "rpm_limit",
    "tpm_limit",
    "max_parallel_requests",
    "user_id",
    "team_id",
)
USER_FIELDS = ("user_id", "user_email", "user_alias", "user_role", "max_budget", "budget_duration")
TEAM_FIELDS = ("team_id", "team_alias", "max_budget", "budget_duration")
BUDGET_FIELDS = ("max_budget", "budget_duration")


def given(form: MultiDict[str, str], names: tuple[str, ...]) -> dict[str, Any]:
    """The named fields that were filled in, stripped; `models` from its checkboxes when any is ticked."""
    fields: dict[str, Any] = {name: form[name].strip() for name in names if form.get(name, "").strip()}
    models = [m for m in form.getlist("models") if m]
    if models:
        fields["models"] = models
    return fields


def cleared(form: MultiDict[str, str], names: tuple[str, ...]) -> dict[str, Any]:
    """Every named field; an empty one is null (clears the stored value)."""
    return {name: form.get(name, "").strip() or None for name in names}


async def keys_page_state() -> dict[str, str]:
    """Where the keys list was (search and page), to return there after an action."""
    form = await request.form
    state = {name: form.get(name, "").strip() for name in ("q", "page")}
    return {name: value for name, value in state.items() if value}


async def show_new_key(result: dict[str, Any], back: str, what: str) -> Response:
    """The only time the plaintext key is shown: in this response, never in a URL, cookie or log."""
    return await render("key_created.html", page="keys", created=result, back=back, what=what)


# ------------------------------------------------------------------------------------------------ keys


@blueprint.post("/keys/create")
@signed_in
async def create_key(v: Visitor) -> Response:
    form = await request.form
    result = await actions.create_key(gateway(), v.principal, given(form, KEY_FIELDS))
    return await show_new_key(result, "ui.keys", "key")


async def _set_blocked(v: Visitor, blocked: bool) -> Response:
    form = await request.form
    await actions.set_key_blocked(gateway(), v.principal, form.get("token", ""), blocked)
    return see_other("ui.keys", done="key-blocked" if blocked else "key-unblocked", **await keys_page_state())


@blueprint.post("/keys/block")
@signed_in
async def block_key(v: Visitor) -> Response:
    return await _set_blocked(v, True)


@blueprint.post("/keys/unblock")
@signed_in
async def unblock_key(v: Visitor) -> Response:
    return await _set_blocked(v, False)


@blueprint.post("/keys/delete")
@signed_in
async def delete_key(v: Visitor) -> Response:
    form = await request.form
    await actions.delete_key(gateway(), v.principal, form.get("token", ""))
    return see_other("ui.keys", done="key-deleted", **await keys_page_state())


# ------------------------------------------------------------------------------------------------ users


@blueprint.post("/users/create")
@signed_in
async def create_user(v: Visitor) -> Response:
    form = await request.form
    fields = given(form, USER_FIELDS)
    # LiteLLM's /user/new makes a key unless told not to; here the box decides, unticked by default.
    fields["auto_create_key"] = form.get("auto_create_key") == "on"
    result = await actions.create_user(gateway(), v.principal, fields)
    if result.get("key"):
        return await show_new_key(result, "ui.users", f"key for user {result['user_id']}")
    return see_other("ui.users", done="user-created")


@blueprint.post("/users/budget")
@signed_in
async def user_budget(v: Visitor) -> Response:
    form = await request.form
    fields = {"user_id": form.get("user_id", ""), **cleared(form, BUDGET_FIELDS)}
    await actions.update_user(gateway(), v.principal, fields)
    return see_other("ui.users", done="user-updated")


# ------------------------------------------------------------------------------------------------ teams


@blueprint.post("/teams/create")
@signed_in
async def create_team(v: Visitor) -> Response:
    form = await request.form
    result = await actions.create_team(gateway(), v.principal, given(form, TEAM_FIELDS))
    return see_other("ui.team", team_id=result["team_id"], done="team-created")


@blueprint.post("/teams/<team_id>/budget")
@signed_in
async def team_budget(v: Visitor, team_id: str) -> Response:
    form = await request.form
    await actions.update_team(gateway(), v.principal, {"team_id": team_id, **cleared(form, BUDGET_FIELDS)})
    return see_other("ui.team", team_id=team_id, done="team-updated")


@blueprint.post("/teams/<team_id>/members/add")
@signed_in
async def add_member(v: Visitor, team_id: str) -> Response:
    form = await request.form
    member = {"user_id": form.get("user_id", "").strip() or None, "role": form.get("role") or None}
    await actions.add_member(gateway(), v.principal, team_id, member)
    return see_other("ui.team", team_id=team_id, done="member-added")


@blueprint.post("/teams/<team_id>/members/remove")
@signed_in
async def remove_member(v: Visitor, team_id: str) -> Response:
    form = await request.form
    await actions.remove_member(gateway(), v.principal, team_id, form.get("user_id", ""))
    return see_other("ui.team", team_id=team_id, done="member-removed")
