"""The spend page: charts by day stacked by model, by key and by team for a date range, and a CSV download.

The numbers are those of `GET /global/spend/report` (readers of everything) or the signed-in user's own share
(`stats.daily_rows`); dates are parsed by the API's own helpers, so `?start=2025-01-01` means the same here.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Mapping
from datetime import date, timedelta
from typing import Any, cast

from quart import Response, request

from edgeproxy.api.spend import check_range, parse_day, parse_group_by
from edgeproxy.errors import InvalidRequestError
from edgeproxy.ui import charts, stats
from edgeproxy.ui.pages import model_label, own_user, today
from edgeproxy.ui.web import Visitor, blueprint, gateway, render, signed_in
from storage.spend import GroupBy

DEFAULT_DAYS = 30
MAX_DAYS = 366
CSV_COLUMNS = (
    "day",
    "group_by",
    "group",
    "label",
    "spend",
    "requests",
    "successes",
    "failures",
    "prompt_tokens",
    "completion_tokens",
)
# Spreadsheets run cells starting with these as formulas; a key alias is text anyone with a key may choose.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def key_label(row: Mapping[str, Any]) -> str:
    token = row["group"]
    return str(row.get("key_alias") or row.get("key_name") or (token[:12] + "…" if token else "(no key)"))


def team_label(row: Mapping[str, Any]) -> str:
    return str(row["group"] or "(no team)")


def user_label(row: Mapping[str, Any]) -> str:
    return str(row["group"] or "(no user)")


LABELS: dict[str, Callable[[Mapping[str, Any]], str]] = {
    "model": model_label,
    "api_key": key_label,
    "team": team_label,
    "user": user_label,
}
CHARTS: tuple[tuple[GroupBy, str], ...] = (("model", "by model"), ("api_key", "by key"), ("team", "by team"))


def date_range() -> tuple[date, date]:
    """?start=&end= (YYYY-MM-DD, both included); the last 30 days by default; at most a year."""
    start_raw, end_raw = request.args.get("start", "").strip(), request.args.get("end", "").strip()
    end = parse_day("end", end_raw) if end_raw else today()
    start = parse_day("start", start_raw) if start_raw else end - timedelta(days=DEFAULT_DAYS - 1)
    check_range(start, end)
    if (end - start).days >= MAX_DAYS:
        raise InvalidRequestError(f"choose at most {MAX_DAYS} days", param="start")
    return start, end


def chosen_metric() -> charts.Metric:
    metric = request.args.get("metric", "spend")
    if metric not in charts.METRICS:
        raise InvalidRequestError(f"'metric' must be one of {', '.join(charts.METRICS)}", param="metric")
    return cast(charts.Metric, metric)


@blueprint.get("/spend")
@signed_in
async def spend(v: Visitor) -> Response:
    gw, user_id = gateway(), own_user(v)
    start, end = date_range()
    metric = chosen_metric()
    drawn = []
    for group_by, title in CHARTS:
        rows = await gw.db.run(stats.daily_rows, gw.storage, start, end, group_by, user_id)
        chart = charts.stacked_by_day(f"{metric.capitalize()} {title}", rows, start, end, metric, LABELS[group_by])
        drawn.append((group_by, chart))
    return await render(
        "spend.html", page="spend", charts=drawn, start=start, end=end, metric=metric, metrics=charts.METRICS
    )


@blueprint.get("/spend.csv")
@signed_in
async def spend_csv(v: Visitor) -> Response:
    gw, user_id = gateway(), own_user(v)
    start, end = date_range()
    group_by = parse_group_by(request.args.get("group_by") or "model")
    rows = await gw.db.run(stats.daily_rows, gw.storage, start, end, group_by, user_id)
    filename = f"edgeproxy-spend-{group_by}-{start.isoformat()}-{end.isoformat()}.csv"
    return Response(
        to_csv(rows, group_by),
        content_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


def to_csv(rows: list[dict[str, Any]], group_by: GroupBy) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    label = LABELS[group_by]
    for row in rows:
        values = [row["day"].isoformat(), group_by, row["group"] or "", label(row), row["spend"]]
        values += [row[name] for name in CSV_COLUMNS[5:]]
        writer.writerow([cell_text(value) for value in values])
    return out.getvalue()


def cell_text(value: Any) -> Any:
    """Defuse spreadsheet formulas in text cells (OWASP's CSV injection advice: prefix a quote)."""
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value
