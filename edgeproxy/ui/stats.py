"""Read-only numbers for the admin page (sync: run through `Gateway.db.run` like every storage call).

Readers of everything get exactly what `GET /global/spend/report` answers (`edgeproxy.api.spend.spend_report`,
shared with the CLI). A self-service user sees the same roll-ups restricted to their own user_id; storage's
report's user filter. The cache hit rate needs the per-request log, because the daily roll-ups do not count hits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from edgeproxy.api.spend import key_labels, spend_report
from storage import Storage
from storage.records import Record
from storage.spend import GroupBy


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
    rows = storage.spend.report(start, end, group_by, user_id=user_id)
    if group_by == "api_key":
        labels = key_labels(storage, sorted({row["group"] for row in rows if row["group"]}))
        for row in rows:
            row.update(labels.get(row["group"], {"key_alias": None, "key_name": None}))
    return rows


def totals(storage: Storage, start: date, end: date, user_id: str | None) -> Totals:
    """Requests, failures, spend and tokens from the daily roll-ups; cache hits from the request log."""
    rows = daily_rows(storage, start, end, "model", user_id)
    since = datetime.combine(start, time(0), tzinfo=UTC)
    hits, logged = storage.spend.cache_hits(since, since + timedelta(days=(end - start).days + 1), user_id)
    return Totals(
        requests=sum(row["requests"] for row in rows),
        failures=sum(row["failures"] for row in rows),
        spend=math.fsum(row["spend"] for row in rows),
        tokens=sum(row["prompt_tokens"] + row["completion_tokens"] for row in rows),
        cache_hits=hits,
        logged=logged,
    )
