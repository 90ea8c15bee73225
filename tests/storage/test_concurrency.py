"""Several writers at once, as with --workers N or several instances on one database."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from storage import Storage
from tests.storage.spend_data import K1, K2, K3, expected_sums, make_records, member_spend, seed
from tests.storage.threads import run_together

THREADS = 8


def test_concurrent_batches_lose_no_update(storage: Storage) -> None:
    seed(storage)
    # Each thread writes its own requests, shuffled differently, all touching the same rows.
    per_thread = [make_records(200, prefix=f"w{index}") for index in range(THREADS)]
    for index, records in enumerate(per_thread):
        random.Random(index).shuffle(records)

    def work(index: int) -> int:
        records = per_thread[index]
        return sum(storage.spend.write_batch(records[start : start + 25]) for start in range(0, 200, 25))

    assert run_together(THREADS, work) == [200] * THREADS
    everything = [record for records in per_thread for record in records]
    expected = expected_sums(everything)
    for token in (K1, K2, K3):
        assert storage.keys.get(token)["spend"] == pytest.approx(expected[f"key:{token}"], rel=1e-12)  # type: ignore[index]
    assert storage.users.get("u1")["total_spend"] == pytest.approx(expected["user:u1"], rel=1e-12)  # type: ignore[index]
    assert storage.teams.get("t1")["spend"] == pytest.approx(expected["team:t1"], rel=1e-12)  # type: ignore[index]
    assert member_spend(storage, "t1", "u2") == pytest.approx(expected["member:t1:u2"], rel=1e-12)
    assert storage.spend.totals("user", "u1")["model_spend"]["qwen"] == pytest.approx(
        expected["model:user:u1:qwen"], rel=1e-12
    )
    report = storage.spend.report(datetime(2025, 5, 1).date(), datetime(2025, 5, 2).date(), group_by="model")
    assert sum(item["requests"] for item in report) == THREADS * 200


def test_concurrent_replays_of_one_batch_count_once(storage: Storage) -> None:
    seed(storage)
    records = make_records(150)
    written = run_together(THREADS, lambda _index: storage.spend.write_batch(records))
    assert sum(written) == 150
    expected = expected_sums(records)
    assert storage.keys.get(K2)["spend"] == pytest.approx(expected[f"key:{K2}"], rel=1e-12)  # type: ignore[index]
    assert storage.spend.logs(size=1)[1] == 150


def test_concurrent_budget_resets_reset_each_entity_once(storage: Storage) -> None:
    seed(storage)
    now = datetime.now(UTC)
    for token in (K1, K2, K3):
        storage.keys.update(token, {"budget_duration": "1d", "budget_reset_at": now - timedelta(minutes=1)})
    storage.spend.write_batch(make_records(30))
    results = run_together(4, lambda _index: storage.spend.reset_budgets(now))
    flattened = [item for result in results for item in result]
    assert sorted(flattened) == sorted(("key", token) for token in (K1, K2, K3))
    assert all(storage.keys.get(token)["spend"] == 0.0 for token in (K1, K2, K3))  # type: ignore[index]
