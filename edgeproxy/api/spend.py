"""Spend queries: per-request logs and spend per day and group (COMPAT.md, HTTP API).

GET /spend/logs            per-request rows, newest first, paginated. The master key, proxy_admin and
                           proxy_admin_viewer read every row; any other key that belongs to a user reads that
                           user's rows only; a key without a user gets 403. LiteLLM answers a bare list here;
                           we answer {"logs", "total_count", "current_page", "total_pages"} (like /key/list)
                           because an unpaginated log grows without bound.
GET /global/spend/report   spend per day and group (team, api_key, user or model), for admins and viewers.
GET /global/spend/models   lifetime spend per model group, dearest first (LiteLLM's top-models view).

The sync helpers (`parse_day`, `parse_moment`, `key_filter`, `spend_report`) are shared with `edgeproxy spend`.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from typing import Any, cast, get_args

from quart import Blueprint, Response, current_app, request

from edgeproxy.admin.fields import query_int
from edgeproxy.admin.render import page, record
from edgeproxy.auth import Principal, hash_key, same_secret
from edgeproxy.calls import dumps
from edgeproxy.errors import InvalidRequestError, PermissionDeniedError
from edgeproxy.gateway import Gateway
from storage import Storage
from storage.records import Record
from storage.spend import GroupBy

blueprint = Blueprint("spend", __name__)

GROUPS: tuple[GroupBy, ...] = get_args(GroupBy)  # team, api_key, user, model
# The list each day of the report carries, named as LiteLLM names it.
GROUP_LISTS: dict[str, str] = {"team": "teams", "api_key": "api_keys", "user": "users", "model": "models"}
DEFAULT_REPORT_DAYS = 30
MAX_PAGE_SIZE = 1000
MASTER_TOKEN = "master"  # what spend rows store as api_key for calls made with the master key
_TOKEN = re.compile(r"^[0-9a-f]{64}$")
_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")


# --------------------------------------------------------------------------- shared with the CLI


def parse_moment(name: str, raw: str) -> date | datetime:
    """YYYY-MM-DD as a date (a whole day), or an ISO 8601 datetime (naive means UTC)."""
    text = raw.strip()
    try:
        if _DAY.match(text):
            return date.fromisoformat(text)
        moment = datetime.fromisoformat(text.replace("Z", "+00:00").replace(" ", "T", 1))
    except ValueError:
        raise InvalidRequestError(
            f"{name!r} must be a date (YYYY-MM-DD) or an ISO 8601 datetime, got {raw!r}", param=name
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def parse_day(name: str, raw: str) -> date:
    """A day: YYYY-MM-DD, or the UTC day of an ISO 8601 datetime."""
    moment = parse_moment(name, raw)
    return moment.astimezone(UTC).date() if isinstance(moment, datetime) else moment


def parse_group_by(raw: str | None, name: str = "group_by") -> GroupBy:
    if raw is None or raw == "":
        return "team"
    if raw not in GROUPS:
        raise InvalidRequestError(f"{name!r} must be one of {', '.join(GROUPS)}, got {raw!r}", param=name)
    return cast(GroupBy, raw)


def key_filter(api_key: str, master_key: str | None) -> str:
    """What spend rows store for a key given as plaintext (sk-...), as its sha256 token, or as the master key."""
    value = api_key.strip()
    if _TOKEN.match(value) or value == MASTER_TOKEN:
        return value
    if master_key is not None and same_secret(value, master_key):
        return MASTER_TOKEN
    return hash_key(value)


def check_range(start: date | datetime, end: date | datetime) -> None:
    def moment(value: date | datetime) -> datetime:
        return value if isinstance(value, datetime) else datetime.combine(value, datetime.min.time(), UTC)

    if moment(start) > moment(end):
        raise InvalidRequestError("'start_date' is after 'end_date'", param="start_date")


def key_labels(storage: Storage, tokens: list[str]) -> dict[str, dict[str, str | None]]:
    """key_alias and key_name of each token (sync; a report names few keys)."""
    labels: dict[str, dict[str, str | None]] = {}
    for token in tokens:
        if token == MASTER_TOKEN:
            labels[token] = {"key_alias": "master", "key_name": None}
            continue
        key = storage.keys.get(token)
        if key is not None:
            labels[token] = {"key_alias": key.get("key_alias"), "key_name": key.get("key_name")}
    return labels


def spend_report(storage: Storage, start: date, end: date, group_by: GroupBy) -> list[Record]:
    """storage's per-day-and-group rows; keys grouped by api_key also get their alias and display name."""
    rows = storage.spend.report(start, end, group_by)
    if group_by == "api_key":
        labels = key_labels(storage, sorted({row["group"] for row in rows if row["group"]}))
        for row in rows:
            row.update(labels.get(row["group"], {"key_alias": None, "key_name": None}))
    return rows


def report_by_day(rows: list[Record], group_by: GroupBy) -> list[dict[str, Any]]:
    """LiteLLM's shape: one item per day with the day's groups and the day's total spend."""
    days: dict[date, list[Record]] = defaultdict(list)
    for row in rows:
        days[row["day"]].append(row)
    report = []
    for day, groups in sorted(days.items()):
        items = []
        for row in sorted(groups, key=lambda r: r["spend"], reverse=True):
            item: dict[str, Any] = {"name": row["group"]}
            if group_by == "team":
                item["team_name"] = row["group"]  # LiteLLM's field
            if group_by == "api_key":
                item["key_alias"] = row.get("key_alias")
                item["key_name"] = row.get("key_name")
            item.update(
                total_spend=row["spend"],
                requests=row["requests"],
                successes=row["successes"],
                failures=row["failures"],
                prompt_tokens=row["prompt_tokens"],
                completion_tokens=row["completion_tokens"],
                total_tokens=row["prompt_tokens"] + row["completion_tokens"],
            )
            items.append(item)
        report.append(
            {
                "group_by_day": day.isoformat(),
                GROUP_LISTS[group_by]: items,
                "total_spend": math.fsum(row["spend"] for row in groups),
            }
        )
    return report


def log_row(row: Record) -> dict[str, Any]:
    """A spend-log row as JSON, plus LiteLLM's names for the same values (spend, startTime, endTime, user)."""
    rendered = record(row)
    rendered["spend"] = row["cost"]
    rendered["startTime"] = rendered["start_time"]
    rendered["endTime"] = rendered["end_time"]
    rendered["user"] = row["user_id"]
    # Stored only with general_settings.store_prompts_in_spend_logs (cut to max_stored_prompt_chars); LiteLLM's
    # rows carry them under these names.
    stored = row.get("metadata") or {}
    rendered["messages"] = stored.get("messages", stored.get("prompt", stored.get("input")))
    rendered["response"] = stored.get("response")
    return rendered


# --------------------------------------------------------------------------- routes


def _gateway() -> Gateway:
    gw: Gateway = current_app.extensions["edgeproxy"]
    return gw


def _json(body: object) -> Response:
    return Response(dumps(body), content_type="application/json")


def _arg(name: str) -> str | None:
    value = request.args.get(name)
    return value.strip() if value is not None and value.strip() else None


def _require_reader(principal: Principal) -> None:
    if not principal.may_read_all:
        raise PermissionDeniedError("this route needs the master key or a proxy_admin / proxy_admin_viewer key")


@blueprint.get("/spend/logs")
async def spend_logs() -> Response:
    gw = _gateway()
    principal = await gw.authenticate(request.headers)
    user_id = _arg("user_id")
    if not principal.may_read_all:
        if principal.user_id is None:
            raise PermissionDeniedError(
                "spend logs need the master key, an admin key, or a key that belongs to a user (its own rows)"
            )
        if user_id is not None and user_id != principal.user_id:
            raise PermissionDeniedError("this key may only read its own user's spend logs", param="user_id")
        user_id = principal.user_id
    api_key = _arg("api_key")
    start_raw, end_raw = _arg("start_date"), _arg("end_date")
    start = parse_moment("start_date", start_raw) if start_raw else None
    end = parse_moment("end_date", end_raw) if end_raw else None
    if start is not None and end is not None:
        check_range(start, end)
    page_number = query_int("page", _arg("page"), 1, maximum=10**9)
    size = query_int("page_size", _arg("page_size") or _arg("size"), 50, maximum=MAX_PAGE_SIZE)
    rows, total = await gw.db.run(
        gw.storage.spend.logs,
        api_key=key_filter(api_key, gw.config.general.master_key) if api_key else None,
        user_id=user_id,
        team_id=_arg("team_id"),
        model_group=_arg("model"),
        request_id=_arg("request_id"),
        start=start,
        end=end,
        page=page_number,
        size=size,
    )
    return _json(page([log_row(row) for row in rows], total, page_number, size, "logs"))


@blueprint.get("/global/spend/report")
async def global_spend_report() -> Response:
    gw = _gateway()
    _require_reader(await gw.authenticate(request.headers))
    group_by = parse_group_by(_arg("group_by"))
    start_raw, end_raw = _arg("start_date"), _arg("end_date")
    end = parse_day("end_date", end_raw) if end_raw else datetime.now(UTC).date()
    start = parse_day("start_date", start_raw) if start_raw else end - timedelta(days=DEFAULT_REPORT_DAYS - 1)
    check_range(start, end)
    rows = await gw.db.run(spend_report, gw.storage, start, end, group_by)
    return _json(report_by_day(rows, group_by))


@blueprint.get("/global/spend/models")
async def global_spend_models() -> Response:
    """Spend per model group over a period (default: all time), dearest first; `limit` groups (default 10)."""
    gw = _gateway()
    _require_reader(await gw.authenticate(request.headers))
    limit = query_int("limit", _arg("limit"), 10, maximum=MAX_PAGE_SIZE)
    start_raw, end_raw = _arg("start_date"), _arg("end_date")
    end = parse_day("end_date", end_raw) if end_raw else datetime.now(UTC).date()
    start = parse_day("start_date", start_raw) if start_raw else date(1970, 1, 1)
    check_range(start, end)
    rows = await gw.db.run(spend_report, gw.storage, start, end, "model")
    totals: dict[str | None, list[Record]] = defaultdict(list)
    for row in rows:
        totals[row["group"]].append(row)
    models = [
        {
            "model": group,
            "total_spend": math.fsum(r["spend"] for r in items),
            "requests": sum(r["requests"] for r in items),
            "prompt_tokens": sum(r["prompt_tokens"] for r in items),
            "completion_tokens": sum(r["completion_tokens"] for r in items),
        }
        for group, items in totals.items()
    ]
    models.sort(key=lambda m: (-m["total_spend"], m["model"] or ""))
    return _json(models[:limit])
