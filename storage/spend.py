"""Spend: the per-request log, the counters it feeds (key/user/team/member/model/day) and queries over them."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Literal

from sqlalchemy import Connection, Table, bindparam, case, func, select, update

from storage.budget_reset import reset_budgets
from storage.bulk import PreparedRows, insert_new, prepare_rows
from storage.coltypes import as_utc, utc_now
from storage.database import Database
from storage.errors import NotFound
from storage.records import Record, check_page, count, row_dict
from storage.schema import daily_spend, keys, model_spend, spend_logs, team_members, teams, users
from storage.spend_totals import BatchTotals
from storage.yielding import yielding

__all__ = ["GROUP_COLUMNS", "PreparedSpend", "SpendRecord", "SpendRepository"]

GroupBy = Literal["team", "api_key", "user", "model"]
GROUP_COLUMNS = {"team": "team_id", "api_key": "api_key", "user": "user_id", "model": "model_group"}
_ENTITY_TABLES = {"key": (keys, "token"), "user": (users, "user_id"), "team": (teams, "team_id")}
_STATUSES = frozenset({"success", "failure"})


@dataclass(frozen=True, kw_only=True)
class SpendRecord:
    """One request's usage: becomes a spend_logs row and is added to the spend counters.

    ``api_key`` is the hashed token. ``cost`` counts into spend whatever the status (a failed stream may
    still have generated billable tokens); ``status`` decides whether the day's successes or failures grow.
    """

    request_id: str
    model_group: str = ""
    call_type: str = "completion"
    api_key: str | None = None
    key_alias: str | None = None
    user_id: str | None = None
    team_id: str | None = None
    deployment_id: str | None = None
    provider: str | None = None
    model: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int | None = None  # None: prompt + completion
    cost: float = 0.0
    start_time: datetime = field(default_factory=utc_now)
    end_time: datetime | None = None
    duration_ms: int | None = None  # None: computed from start and end time
    ttft_ms: int | None = None
    cache_hit: bool = False
    status: str = "success"
    error: str | None = None
    estimated: bool = False  # tokens were estimated (no usage from upstream)
    metadata: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.request_id:
            raise ValueError("SpendRecord.request_id is required")
        if self.status not in _STATUSES:
            raise ValueError(f"SpendRecord.status must be success or failure, got {self.status!r}")

    def row(self) -> Record:
        """The spend_logs row for this record."""
        values = dict(self.__dict__)  # the fields, in order (a copy in C: a batch holds the writer's GIL)
        values["metadata"] = dict(self.metadata)
        values["start_time"] = as_utc(self.start_time)
        values["end_time"] = None if self.end_time is None else as_utc(self.end_time)
        if self.total_tokens is None:
            values["total_tokens"] = self.prompt_tokens + self.completion_tokens
        if self.duration_ms is None and self.end_time is not None:
            elapsed = as_utc(self.end_time) - as_utc(self.start_time)
            values["duration_ms"] = round(elapsed.total_seconds() * 1000)
        return values


@dataclass(frozen=True)
class PreparedSpend:
    """A batch of spend records made ready for `SpendRepository.write_prepared`."""

    records: list[SpendRecord]  # one per request_id, sorted by it
    rows: PreparedRows
    totals: BatchTotals  # of all the records: used as is when every one of them is new


class SpendRepository:
    """Writes spend in batches and answers spend queries."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def write_batch(self, records: Sequence[SpendRecord]) -> int:
        """Log the records and add them to every counter, all in one transaction.

        Idempotent: a request_id already logged (a replayed batch, or another instance writing the same
        journal) is skipped and not counted again. Returns how many records were new.
        """
        return self.write_prepared(self.prepare(records))

    def prepare(self, records: Sequence[SpendRecord], give_way_until: float = -math.inf) -> PreparedSpend:
        """`write_batch`'s Python work, without the database: callable from any thread (the spend writer's
        runs at a lower CPU priority), so that the transaction in `write_prepared` holds its locks briefly.
        Until `give_way_until` (time.monotonic()) its loops give way to other threads (storage/yielding.py)."""
        unique = {record.request_id: record for record in reversed(records)}  # first occurrence wins
        # Sorted everywhere so that concurrent batches lock rows in the same order and cannot deadlock.
        ordered = [unique[request_id] for request_id in sorted(unique)]
        logs = [record.row() for record in yielding(ordered, give_way_until)]
        rows = prepare_rows(self._db.engine.dialect, spend_logs, spend_logs.c.request_id, logs, give_way_until)
        return PreparedSpend(ordered, rows, BatchTotals.of(yielding(ordered, give_way_until)))

    def write_prepared(self, batch: PreparedSpend) -> int:
        """`write_batch` of a prepared batch; returns how many records were new."""
        if not batch.records:
            return 0
        with self._db.write() as connection:
            inserted = insert_new(connection, batch.rows)
            totals = batch.totals
            if len(inserted) < len(batch.records):  # some were logged already: count only the others
                totals = BatchTotals.of(record for record in batch.records if record.request_id in inserted)
            self._add_to_entities(connection, totals)
            self._upsert_model_spend(connection, totals)
            self._upsert_daily(connection, totals)
        return len(inserted)

    def logs(
        self,
        api_key: str | None = None,
        user_id: str | None = None,
        team_id: str | None = None,
        model_group: str | None = None,
        request_id: str | None = None,
        start: datetime | date | None = None,
        end: datetime | date | None = None,
        page: int = 1,
        size: int = 50,
    ) -> tuple[list[Record], int]:
        """Spend-log rows, newest first, and the total matching.

        ``start`` is inclusive, ``end`` exclusive; given as a date, ``end`` includes that whole day (UTC).
        """
        offset = check_page(page, size)
        c = spend_logs.c
        filters = {c.api_key: api_key, c.user_id: user_id, c.team_id: team_id, c.model_group: model_group}
        conditions: list[Any] = [column == value for column, value in filters.items() if value is not None]
        if request_id is not None:
            conditions.append(c.request_id == request_id)
        if start is not None:
            conditions.append(c.start_time >= _moment(start))
        if end is not None:
            conditions.append(c.start_time < _moment(end, day_end=True))
        query = (
            select(spend_logs)
            .where(*conditions)
            .order_by(c.start_time.desc(), c.request_id.desc())
            .offset(offset)
            .limit(size)
        )
        with self._db.read() as connection:
            return [row_dict(row) for row in connection.execute(query)], count(connection, spend_logs, *conditions)

    def report(self, start_day: date, end_day: date, group_by: GroupBy, user_id: str | None = None) -> list[Record]:
        """Spend per day and group between two days (both included), ordered by day then group; with
        `user_id`, only that user's share.

        Each item: day, group (None for requests without that id), spend, requests, successes, failures,
        prompt_tokens, completion_tokens.
        """
        if group_by not in GROUP_COLUMNS:
            raise ValueError(f"group_by must be one of {', '.join(GROUP_COLUMNS)}, got {group_by!r}")
        group = daily_spend.c[GROUP_COLUMNS[group_by]]
        d = daily_spend.c
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
            .where(d.day >= start_day, d.day <= end_day, *([d.user_id == user_id] if user_id is not None else []))
            .group_by(d.day, group)
            .order_by(d.day, group)
        )
        with self._db.read() as connection:
            return [_report_item(row_dict(row)) for row in connection.execute(query)]

    def cache_hits(self, start: datetime, end: datetime, user_id: str | None = None) -> tuple[int, int]:
        """(cache hits, logged requests) with start_time in [start, end): the daily roll-ups do not count hits."""
        c = spend_logs.c
        conditions: list[Any] = [c.start_time >= as_utc(start), c.start_time < as_utc(end)]
        if user_id is not None:
            conditions.append(c.user_id == user_id)
        hits = func.sum(case((c.cache_hit, 1), else_=0))  # portable: PostgreSQL will not cast boolean to bigint
        with self._db.read() as connection:
            row = connection.execute(select(hits, func.count()).select_from(spend_logs).where(*conditions)).one()
        return int(row[0] or 0), int(row[1] or 0)

    def totals(self, entity_type: Literal["key", "user", "team"], entity_id: str) -> Record:
        """``spend`` (current window), ``total_spend`` (lifetime), ``max_budget``, ``budget_reset_at`` and
        ``model_spend`` of one key, user or team; NotFound when it does not exist."""
        table, id_column = _entity_table(entity_type)
        c = table.c
        query = select(c.spend, c.total_spend, c.max_budget, c.budget_reset_at).where(c[id_column] == entity_id)
        by_model = select(model_spend.c.model_group, model_spend.c.spend).where(
            model_spend.c.entity_type == entity_type, model_spend.c.entity_id == entity_id
        )
        with self._db.read() as connection:
            row = connection.execute(query).first()
            if row is None:
                raise NotFound(f"{entity_type} {entity_id} not found")
            result = row_dict(row)
            result["model_spend"] = {model: spend for model, spend in connection.execute(by_model)}
            return result

    def reset_budgets(self, now: datetime | None = None) -> list[tuple[str, str]]:
        """Start a new budget window for every key, user and team whose window ended by ``now``.

        Returns (entity_type, id) for each reset; safe to run from several instances at once.
        """
        with self._db.write() as connection:
            return reset_budgets(connection, as_utc(now or utc_now()))

    def _add_to_entities(self, connection: Connection, totals: BatchTotals) -> None:
        for entity_type, amounts in totals.entities.items():
            table, id_column = _entity_table(entity_type)
            _increment(connection, table, [table.c[id_column] == bindparam("b_id")], _amounts_params(amounts))
        members = [
            {"b_team": team_id, "b_user": user_id, "b_amount": amount}
            for (team_id, user_id), amount in sorted(totals.members.items())
        ]
        conditions = [team_members.c.team_id == bindparam("b_team"), team_members.c.user_id == bindparam("b_user")]
        _increment(connection, team_members, conditions, members)

    def _upsert_model_spend(self, connection: Connection, totals: BatchTotals) -> None:
        rows = [
            {"entity_type": entity_type, "entity_id": entity_id, "model_group": model_group, "spend": amount}
            for (entity_type, entity_id, model_group), amount in sorted(totals.models.items())
        ]
        if rows:
            statement = self._db.insert(model_spend)
            connection.execute(
                statement.on_conflict_do_update(
                    index_elements=[model_spend.c.entity_type, model_spend.c.entity_id, model_spend.c.model_group],
                    set_={"spend": model_spend.c.spend + statement.excluded.spend},
                ),
                rows,
            )

    def _upsert_daily(self, connection: Connection, totals: BatchTotals) -> None:
        rows = [counters.row(key) for key, counters in sorted(totals.days.items())]
        if not rows:
            return
        statement = self._db.insert(daily_spend)
        counters = ("requests", "successes", "failures", "prompt_tokens", "completion_tokens", "spend")
        connection.execute(
            statement.on_conflict_do_update(
                index_elements=[column for column in daily_spend.primary_key.columns],
                set_={name: daily_spend.c[name] + statement.excluded[name] for name in counters},
            ),
            rows,
        )


def _amounts_params(amounts: Mapping[str, float]) -> list[Record]:
    return [{"b_id": entity_id, "b_amount": amount} for entity_id, amount in sorted(amounts.items())]


def _increment(connection: Connection, table: Table, conditions: list[Any], params: list[Record]) -> None:
    # spend = spend + x is evaluated by the database under the row lock, so concurrent batches from
    # several instances never lose an update (no read-modify-write in Python).
    if not params:
        return
    amount = bindparam("b_amount", type_=table.c.spend.type)
    statement = (
        update(table).where(*conditions).values(spend=table.c.spend + amount, total_spend=table.c.total_spend + amount)
    )
    connection.execute(statement, params)


def _entity_table(entity_type: str) -> tuple[Table, str]:
    if entity_type not in _ENTITY_TABLES:
        raise ValueError(f"entity_type must be key, user or team, got {entity_type!r}")
    return _ENTITY_TABLES[entity_type]


def _moment(value: datetime | date, day_end: bool = False) -> datetime:
    if isinstance(value, datetime):
        return as_utc(value)
    day = value + timedelta(days=1) if day_end else value
    return datetime.combine(day, time(0), tzinfo=UTC)


def _report_item(row: Record) -> Record:
    row["group"] = row["group"] or None
    row["spend"] = float(row["spend"] or 0.0)
    for name in ("requests", "successes", "failures", "prompt_tokens", "completion_tokens"):
        row[name] = int(row[name] or 0)
    return row
