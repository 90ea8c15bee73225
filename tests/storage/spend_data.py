"""Shared spend fixtures: a small org (2 users, 1 team, 3 keys) and deterministic usage records."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta

from storage import SpendRecord, Storage

K1, K2, K3 = "1" * 64, "2" * 64, "3" * 64
OWNERS = {K1: ("u1", "t1"), K2: ("u2", "t1"), K3: ("u1", None)}
DAY_ONE = datetime(2025, 5, 1, 10, 0, tzinfo=UTC)
DAY_TWO = datetime(2025, 5, 2, 10, 0, tzinfo=UTC)


def seed(storage: Storage) -> None:
    storage.users.create({"user_id": "u1"})
    storage.users.create({"user_id": "u2"})
    storage.teams.create({"team_id": "t1"})
    storage.teams.add_member("t1", "u1")
    storage.teams.add_member("t1", "u2")
    for token, (user_id, team_id) in OWNERS.items():
        storage.keys.create({"token": token, "user_id": user_id, "team_id": team_id})


def make_records(count: int, prefix: str = "req", tokens: tuple[str, ...] = (K1, K2, K3)) -> list[SpendRecord]:
    records = []
    for index in range(count):
        token = tokens[index % len(tokens)]
        user_id, team_id = OWNERS[token]
        failed = index % 10 == 9
        start = (DAY_ONE if index % 2 == 0 else DAY_TWO) + timedelta(seconds=index)
        records.append(
            SpendRecord(
                request_id=f"{prefix}-{index:05d}",
                api_key=token,
                user_id=user_id,
                team_id=team_id,
                model_group="qwen" if (index // 3) % 2 else "gpt",
                provider="ollama",
                prompt_tokens=10 + index,
                completion_tokens=index % 5,
                # tiny per-token style costs, plus an occasional large one, plus billed failures
                cost=(1e-6 * (index % 7 + 1)) + (0.1 if index % 50 == 0 else 0.0) if index % 20 != 19 else 0.0,
                start_time=start,
                end_time=start + timedelta(milliseconds=250 + index),
                status="failure" if failed else "success",
                error="upstream 502" if failed else None,
            )
        )
    return records


def expected_sums(records: Iterable[SpendRecord]) -> dict[str, float]:
    """Expected spend per counter, keyed like 'key:<token>', 'member:t1:u1', 'model:key:<token>:qwen'."""
    costs: dict[str, list[float]] = defaultdict(list)
    for record in records:
        owners = {"key": record.api_key, "user": record.user_id, "team": record.team_id}
        for kind, entity_id in owners.items():
            if entity_id:
                costs[f"{kind}:{entity_id}"].append(record.cost)
                costs[f"model:{kind}:{entity_id}:{record.model_group}"].append(record.cost)
        if record.team_id and record.user_id:
            costs[f"member:{record.team_id}:{record.user_id}"].append(record.cost)
        costs[f"day:{record.start_time.date()}"].append(record.cost)
    return {name: math.fsum(values) for name, values in costs.items()}


def member_spend(storage: Storage, team_id: str, user_id: str) -> float:
    for member in storage.teams.members(team_id):
        if member["user_id"] == user_id:
            return float(member["spend"])
    raise AssertionError(f"{user_id} not in {team_id}")


def days() -> tuple[date, date]:
    return DAY_ONE.date(), DAY_TWO.date()
