"""The pages people read: overview, keys, users, teams and deployments (GET only; forms post to `forms`)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta
from typing import Any

from quart import Response, request

from edgeproxy.admin import access
from edgeproxy.admin.fields import USER_ROLES, query_int
from edgeproxy.ui import actions, charts, stats
from edgeproxy.ui.web import Visitor, blueprint, gateway, render, see_other, signed_in

PAGE_SIZE = 25
OVERVIEW_DAYS = 30
BUDGET_DURATIONS = ("", "1d", "7d", "30d", "1mo")
# Confirmations after a form: fixed texts picked by code, so a crafted link cannot write on the page.
DONE = {
    "key-blocked": "Key blocked: it is refused from the next request on.",
    "key-unblocked": "Key unblocked.",
    "key-deleted": "Key deleted.",
    "user-created": "User created.",
    "user-updated": "User budget saved.",
    "team-created": "Team created.",
    "team-updated": "Team budget saved.",
    "member-added": "Member added.",
    "member-removed": "Member removed.",
}


def own_user(v: Visitor) -> str | None:
    """None for readers of everything; otherwise the user whose numbers this person may see."""
    return None if v.principal.may_read_all else access.check_own_user_id(v.principal, None, write=False)


def done_message() -> str | None:
    return DONE.get(request.args.get("done", ""))


def today() -> date:
    return datetime.now(UTC).date()


def model_label(row: Mapping[str, Any]) -> str:
    return str(row["group"] or "(unknown model)")


def key_status(key: Mapping[str, Any], now: datetime) -> str:
    if key.get("blocked"):
        return "blocked"
    expires = key.get("expires")
    if expires and datetime.fromisoformat(str(expires)) <= now:
        return "expired"
    return "active"


@blueprint.get("")
async def root() -> Response:
    return see_other("ui.overview")


@blueprint.get("/")
@signed_in
async def overview(v: Visitor) -> Response:
    gw, user_id, end = gateway(), own_user(v), today()
    day = await gw.db.run(stats.totals, gw.storage, end, end, user_id)
    month = await gw.db.run(stats.totals, gw.storage, end.replace(day=1), end, user_id)
    start = end - timedelta(days=OVERVIEW_DAYS - 1)
    rows = await gw.db.run(stats.daily_rows, gw.storage, start, end, "model", user_id)
    # Local models cost nothing: then requests tell more than a flat $0 line.
    metric: charts.Metric = "spend" if any(row["spend"] > 0 for row in rows) else "requests"
    chart = charts.stacked_by_day(
        f"{metric.capitalize()} by model, last {OVERVIEW_DAYS} days", rows, start, end, metric, model_label
    )
    health = gw.router.health_report() if v.can.admin else None
    return await render("overview.html", page="overview", day=day, month=month, chart=chart, health=health)


@blueprint.get("/keys")
@signed_in
async def keys(v: Visitor) -> Response:
    gw = gateway()
    search = request.args.get("q", "").strip()
    page = query_int("page", request.args.get("page"), 1, maximum=10**6)
    rows, total = await actions.list_keys(gw, v.principal, page, PAGE_SIZE, search)
    teams = await actions.list_teams(gw, v.principal) if v.can.write_own_keys else []
    now = datetime.now(UTC)
    for key in rows:
        key["status"] = key_status(key, now)
        key["budget_share"] = charts.budget_share(key.get("spend"), key.get("max_budget"))
    pages = max(1, -(-total // PAGE_SIZE))
    return await render(
        "keys.html",
        page="keys",
        keys=rows,
        total=total,
        page_number=page,
        pages=pages,
        q=search,
        teams=teams,
        models=gw.known_models,
        durations=BUDGET_DURATIONS,
        done=done_message(),
    )


@blueprint.get("/users")
@signed_in
async def users(v: Visitor) -> Response:
    gw = gateway()
    page = query_int("page", request.args.get("page"), 1, maximum=10**6)
    result = await actions.list_users(gw, v.principal, page, PAGE_SIZE)
    for user in result["users"]:
        user["budget_share"] = charts.budget_share(user.get("spend"), user.get("max_budget"))
    return await render(
        "users.html",
        page="users",
        users=result["users"],
        total=result["total"],
        page_number=page,
        pages=max(1, result["total_pages"]),
        roles=USER_ROLES,
        models=gw.known_models,
        durations=BUDGET_DURATIONS,
        done=done_message(),
    )


@blueprint.get("/teams")
@signed_in
async def teams(v: Visitor) -> Response:
    gw = gateway()
    rows = await actions.list_teams(gw, v.principal)
    for team in rows:
        team["budget_share"] = charts.budget_share(team.get("spend"), team.get("max_budget"))
    return await render(
        "teams.html", page="teams", teams=rows, models=gw.known_models, durations=BUDGET_DURATIONS, done=done_message()
    )


@blueprint.get("/teams/<team_id>")
@signed_in
async def team(v: Visitor, team_id: str) -> Response:
    gw = gateway()
    info = await actions.team_info(gw, v.principal, team_id)
    team = info["team_info"]
    team["budget_share"] = charts.budget_share(team.get("spend"), team.get("max_budget"))
    for member in info["team_memberships"]:
        member["budget_share"] = charts.budget_share(member.get("spend"), member.get("max_budget_in_team"))
    now = datetime.now(UTC)
    for key in info["keys"]:
        key["status"] = key_status(key, now)
        key["budget_share"] = charts.budget_share(key.get("spend"), key.get("max_budget"))
    manage = await actions.is_team_admin(gw, v.principal, team_id)
    return await render(
        "team.html",
        page="teams",
        team=team,
        members=info["team_memberships"],
        keys=info["keys"],
        manage=manage,
        durations=BUDGET_DURATIONS,
        done=done_message(),
    )


@blueprint.get("/deployments")
@signed_in
async def deployments(v: Visitor) -> Response:
    v.principal.require_admin()  # as GET /health: deployment details are for proxy admins
    router = gateway().router
    report = router.health_report()
    return await render("deployments.html", page="deployments", rows=router.deployment_states(), report=report)
