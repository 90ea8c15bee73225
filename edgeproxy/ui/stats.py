"""Read-only numbers for the admin page (sync: run through `Gateway.db.run` like every storage call).

Readers of everything get exactly what `GET /global/spend/report` answers (`edgeproxy.api.spend.spend_report`,
shared with the CLI). A self-service user sees the same roll-ups restricted to their own user_id; storage's
report has no such filter, so that one query lives here, over the same `daily_spend` table with the same
columns. The cache hit rate needs the per-request log, because the daily roll-ups do not count cache hits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import case, func, select

from edgeproxy.api.spend import key_labels, spend_report
from storage import Storage
from storage.errors import translating_errors
from storage.records import Record
from storage.schema import daily_spend, spend_logs
from storage.spend import GROUP_COLUMNS, GroupBy


@dataclass(frozen=True, slots=True)
class Totals:
    requests: int = 0
    failures: int = 0
    spend: float = 0.0
    tokens: int = 0
    cache_hits: int = 0
    logged: int = 0  # spend-log rows in the period: the denominator of the cache hit rate

    @property
    def cache_hit_rate(self) -> float | None:
        return self.cache_hits / self.logged if self.logged else None


def daily_rows(storage: Storage, start: date, end: date, group_by: GroupBy, user_id: str | None) -> list[Record]:
    """Spend per day and group: everything (user_id None) or one user's share."""
    if user_id is None:
        return spend_report(storage, start, end, group_by)
    rows = _user_report(storage, start, end, group_by, user_id)
    if group_by == "api_key":
        labels = key_labels(storage, sorted({row["group"] for row in rows if row["group"]}))
        for row in rows:
            row.update(labels.get(row["group"], {"key_alias": None, "key_name": None}))
    return rows


def _user_report(storage: Storage, start: date, end: date, group_by: GroupBy, user_id: str) -> list[Record]:
    d = daily_spend.c
    group = d[GROUP_COLUMNS[group_by]]
    query = (
        select(
            d.day,
            group.label("group"),
            func.sum(d.spend).label("spend"),
            func.sum(d.requests).label("requests"),
            func.sum(d.successes).label("successes"),
            func.sum(d.failures).label("failures"),
            func.sum(d.prompt_tokens).label("prompt_tokens"),
            func.sum(d.completion_tokens).label("completion_tokens"),
        )
        .where(d.day >= start, d.day <= end, d.user_id == user_id)
        .group_by(d.day, group)
        .order_by(d.day, group)
    )
    with translating_errors(storage.describe()), storage.engine.connect() as connection:
        rows = [dict(row._mapping) for row in connection.execute(query)]
    for row in rows:  # the same normalisation as storage's report
        row["group"] = row["group"] or None
        row["spend"] = float(row["spend"] or 0.0)
        for name in ("requests", "successes", "failures", "prompt_tokens", "completion_tokens"):
            row[name] = int(row[name] or 0)
    return rows


def totals(storage: Storage, start: date, end: date, user_id: str | None) -> Totals:
    """Requests, failures, spend and tokens from the daily roll-ups; cache hits from the request log."""
    rows = daily_rows(storage, start, end, "model", user_id)
    hits, logged = _cache_hits(storage, start, end, user_id)
    return Totals(
        requests=sum(row["requests"] for row in rows),
        failures=sum(row["failures"] for row in rows),
        spend=math.fsum(row["spend"] for row in rows),
        tokens=sum(row["prompt_tokens"] + row["completion_tokens"] for row in rows),
        cache_hits=hits,
        logged=logged,
    )


def _cache_hits(storage: Storage, start: date, end: date, user_id: str | None) -> tuple[int, int]:
    c = spend_logs.c
    since = datetime.combine(start, time(0), tzinfo=UTC)
    until = datetime.combine(end + timedelta(days=1), time(0), tzinfo=UTC)
    conditions: list[Any] = [c.start_time >= since, c.start_time < until]
    if user_id is not None:
        conditions.append(c.user_id == user_id)
    hits = func.sum(case((c.cache_hit, 1), else_=0))  # portable: PostgreSQL will not cast boolean to bigint
    query = select(hits, func.count()).select_from(spend_logs).where(*conditions)
    with translating_errors(storage.describe()), storage.engine.connect() as connection:
        row = connection.execute(query).one()
    return int(row[0] or 0), int(row[1] or 0)
