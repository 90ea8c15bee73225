"""Aggregating a batch of spend records in Python, so each counter row gets exactly one update per batch.

Sums use math.fsum: adding thousands of 1e-6 costs one by one accumulates rounding error, fsum returns
the correctly rounded sum of the batch.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date
from typing import TYPE_CHECKING, Any

from storage.coltypes import as_utc

if TYPE_CHECKING:
    from storage.spend import SpendRecord

__all__ = ["BatchTotals", "DayCounters"]

DayKey = tuple[date, str, str, str, str]  # day, api_key, user_id, team_id, model_group ('' when missing)


@dataclass
class DayCounters:
    requests: int = 0
    successes: int = 0
    failures: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    costs: list[float] = field(default_factory=list)

    def add(self, record: SpendRecord) -> None:
        self.requests += 1
        if record.status == "success":
            self.successes += 1
        else:
            self.failures += 1
        self.prompt_tokens += record.prompt_tokens
        self.completion_tokens += record.completion_tokens
        self.costs.append(record.cost)

    def row(self, key: DayKey) -> dict[str, Any]:
        day, api_key, user_id, team_id, model_group = key
        return {
            "day": day,
            "api_key": api_key,
            "user_id": user_id,
            "team_id": team_id,
            "model_group": model_group,
            "requests": self.requests,
            "successes": self.successes,
            "failures": self.failures,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "spend": math.fsum(self.costs),
        }


@dataclass
class BatchTotals:
    """Per-counter sums of one batch; entities with zero cost are left out (nothing to add)."""

    entities: dict[str, dict[str, float]]  # "key"/"user"/"team" -> id -> cost
    members: dict[tuple[str, str], float]  # (team_id, user_id) -> cost
    models: dict[tuple[str, str, str], float]  # (entity_type, id, model_group) -> cost
    days: dict[DayKey, DayCounters]

    @classmethod
    def of(cls, records: Iterable[SpendRecord]) -> BatchTotals:
        costs: dict[tuple[str, ...], list[float]] = defaultdict(list)
        days: dict[DayKey, DayCounters] = defaultdict(DayCounters)
        for record in records:
            owners = {"key": record.api_key, "user": record.user_id, "team": record.team_id}
            for entity_type, entity_id in owners.items():
                if entity_id:
                    costs[("entity", entity_type, entity_id)].append(record.cost)
                    costs[("model", entity_type, entity_id, record.model_group or "")].append(record.cost)
            if record.team_id and record.user_id:
                costs[("member", record.team_id, record.user_id)].append(record.cost)
            days[_day_key(record)].add(record)
        return cls._split({key: math.fsum(values) for key, values in costs.items()}, dict(days))

    @classmethod
    def _split(cls, sums: dict[tuple[str, ...], float], days: dict[DayKey, DayCounters]) -> BatchTotals:
        entities: dict[str, dict[str, float]] = {"key": {}, "user": {}, "team": {}}
        members: dict[tuple[str, str], float] = {}
        models: dict[tuple[str, str, str], float] = {}
        for key, amount in sums.items():
            if amount == 0:
                continue
            if key[0] == "entity":
                entities[key[1]][key[2]] = amount
            elif key[0] == "member":
                members[(key[1], key[2])] = amount
            else:
                models[(key[1], key[2], key[3])] = amount
        return cls(entities=entities, members=members, models=models, days=days)


def _day_key(record: SpendRecord) -> DayKey:
    day = as_utc(record.start_time).date()
    return (day, record.api_key or "", record.user_id or "", record.team_id or "", record.model_group or "")
