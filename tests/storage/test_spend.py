from __future__ import annotations

import math
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import event

from storage import NotFound, SpendRecord, Storage
from tests.storage.spend_data import (
    DAY_ONE,
    DAY_TWO,
    K1,
    K2,
    K3,
    days,
    expected_sums,
    make_records,
    member_spend,
    seed,
)


def assert_totals_match(storage: Storage, records: list[SpendRecord]) -> None:
    expected = expected_sums(records)
    for token in (K1, K2, K3):
        key = storage.keys.get(token)
        assert key is not None
        assert key["spend"] == pytest.approx(expected[f"key:{token}"], rel=1e-12)
        assert key["total_spend"] == pytest.approx(expected[f"key:{token}"], rel=1e-12)
        for model in ("qwen", "gpt"):
            assert key["model_spend"][model] == pytest.approx(expected[f"model:key:{token}:{model}"], rel=1e-12)
    for user_id in ("u1", "u2"):
        user = storage.users.get(user_id)
        assert user is not None and user["spend"] == pytest.approx(expected[f"user:{user_id}"], rel=1e-12)
        assert member_spend(storage, "t1", user_id) == pytest.approx(expected[f"member:t1:{user_id}"], rel=1e-12)
    team = storage.spend.totals("team", "t1")
    assert team["spend"] == pytest.approx(expected["team:t1"], rel=1e-12)
    assert team["total_spend"] == pytest.approx(expected["team:t1"], rel=1e-12)
    assert team["model_spend"]["gpt"] == pytest.approx(expected["model:team:t1:gpt"], rel=1e-12)
    report = storage.spend.report(*days(), group_by="model")
    for day in days():
        spent = sum(item["spend"] for item in report if item["day"] == day)
        assert spent == pytest.approx(expected[f"day:{day}"], rel=1e-12)


def test_write_batch_updates_every_counter_exactly(storage: Storage) -> None:
    seed(storage)
    records = make_records(300)
    assert storage.spend.write_batch(records) == 300
    assert_totals_match(storage, records)
    # sanity: the tiny costs really are tiny, so float sums are being exercised
    assert 0 < expected_sums(records)["model:key:" + K2 + ":gpt"] < 0.01
    assert storage.spend.logs(size=1)[1] == 300


def test_write_batch_counts_days_requests_and_failures(storage: Storage) -> None:
    seed(storage)
    records = make_records(40)
    storage.spend.write_batch(records)
    report = storage.spend.report(*days(), group_by="api_key")
    by_day_key = {(item["day"], item["group"]): item for item in report}
    assert sum(item["requests"] for item in report) == 40
    assert sum(item["failures"] for item in report) == 4  # every 10th record failed
    assert sum(item["successes"] for item in report) == 36
    k1_day_one = [r for r in records if r.api_key == K1 and r.start_time.date() == DAY_ONE.date()]
    row = by_day_key[(DAY_ONE.date(), K1)]
    assert row["requests"] == len(k1_day_one)
    assert row["prompt_tokens"] == sum(r.prompt_tokens for r in k1_day_one)
    assert row["completion_tokens"] == sum(r.completion_tokens for r in k1_day_one)


def test_replayed_batch_is_not_counted_twice(storage: Storage) -> None:
    seed(storage)
    records = make_records(120)
    assert storage.spend.write_batch(records) == 120
    assert storage.spend.write_batch(records) == 0
    assert_totals_match(storage, records)
    # A batch overlapping an old one only adds its new records.
    more = make_records(120, prefix="late")
    overlapping = records[:60] + more
    assert storage.spend.write_batch(overlapping) == 120
    assert_totals_match(storage, records + more)
    assert storage.spend.logs(size=1)[1] == 240


def test_a_large_batch_skips_exactly_the_known_ids(storage: Storage) -> None:
    seed(storage)
    first = make_records(700, prefix="first")
    assert storage.spend.write_batch(first[::2]) == 350
    assert storage.spend.write_batch(first) == 350  # the other half
    assert_totals_match(storage, first)
    assert storage.spend.logs(size=1)[1] == 700


def test_batches_of_any_size_run_the_same_statements(storage: Storage) -> None:
    # The database drivers cache prepared statements per connection by their text: one text per batch size
    # piled up hundreds of them (SQLite: 124 MiB over 10 connections) and the proxy's memory grew for an hour.
    seed(storage)
    texts: list[set[str]] = []

    def capture(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        texts[-1].add(statement)

    event.listen(storage.engine, "before_cursor_execute", capture)
    try:
        for size in (1, 7, 300):
            texts.append(set())
            storage.spend.write_batch(make_records(size, prefix=f"size{size}"))
            storage.keys.touch_last_active([K1, K2, K3][: min(size, 3)])
            storage.keys.list(size=size)
    finally:
        event.remove(storage.engine, "before_cursor_execute", capture)
    assert texts[0] and texts[0] == texts[1] == texts[2]


def test_every_field_reads_back_as_written(storage: Storage) -> None:
    seed(storage)
    plus_two = timezone(timedelta(hours=2))
    record = SpendRecord(
        request_id="full", model_group="gpt", call_type="embedding", api_key=K1, key_alias="alias", user_id="u1",
        team_id="t1", deployment_id="d1", provider="openai", model="gpt-x", prompt_tokens=7, completion_tokens=3,
        cost=0.125, start_time=datetime(2026, 5, 1, 12, 0, 0, 123456, tzinfo=plus_two),
        end_time=datetime(2026, 5, 1, 12, 0, 1, 500000, tzinfo=plus_two), ttft_ms=40, cache_hit=True,
        status="failure", error="upstream 500", estimated=True, metadata={"tags": ["a", "é"], "n": {"x": 1.5}},
    )  # fmt: skip
    assert storage.spend.write_batch([record]) == 1
    (row,), _ = storage.spend.logs(request_id="full")
    expected = record.row()
    assert row["start_time"] == record.start_time and row["start_time"].utcoffset() == timedelta(0)
    assert row["end_time"] == record.end_time
    assert {name: row[name] for name in expected if name not in ("start_time", "end_time")} == {
        name: value for name, value in expected.items() if name not in ("start_time", "end_time")
    }
    assert row["total_tokens"] == 10 and row["duration_ms"] == 1377


def test_duplicate_request_ids_within_a_batch_count_once(storage: Storage) -> None:
    seed(storage)
    record = SpendRecord(request_id="same", api_key=K1, user_id="u1", team_id="t1", model_group="m", cost=0.5)
    assert storage.spend.write_batch([record, record]) == 1
    assert storage.keys.get(K1)["spend"] == pytest.approx(0.5)  # type: ignore[index]
    assert storage.spend.write_batch([]) == 0


def test_failures_and_unknown_entities(storage: Storage) -> None:
    seed(storage)
    failed = SpendRecord(request_id="f1", api_key=K1, user_id="u1", model_group="m", status="failure", error="502")
    orphan = SpendRecord(request_id="o1", api_key="f" * 64, user_id="ghost", team_id="gone", model_group="m", cost=2.0)
    assert storage.spend.write_batch([failed, orphan]) == 2
    assert storage.keys.get(K1)["spend"] == 0.0  # type: ignore[index]
    today = failed.start_time.date()
    report = storage.spend.report(today, today, group_by="model")
    assert report == [
        {
            "day": today,
            "group": "m",
            "spend": pytest.approx(2.0),
            "requests": 2,
            "successes": 1,
            "failures": 1,
            "prompt_tokens": 0,
            "completion_tokens": 0,
        }
    ]
    row = storage.spend.logs(request_id="f1")[0][0]
    assert row["status"] == "failure" and row["error"] == "502"


def test_record_validation() -> None:
    with pytest.raises(ValueError, match="status"):
        SpendRecord(request_id="x", status="ok")
    with pytest.raises(ValueError, match="request_id"):
        SpendRecord(request_id="")


def test_logs_filters_paging_and_order(storage: Storage) -> None:
    seed(storage)
    records = make_records(30)
    storage.spend.write_batch(records)
    rows, total = storage.spend.logs(api_key=K1, size=4)
    k1_records = sorted((r for r in records if r.api_key == K1), key=lambda r: r.start_time, reverse=True)
    assert total == len(k1_records) == 10
    assert [row["request_id"] for row in rows] == [r.request_id for r in k1_records[:4]]
    page_three, _ = storage.spend.logs(api_key=K1, size=4, page=3)
    assert [row["request_id"] for row in page_three] == [r.request_id for r in k1_records[8:]]

    assert storage.spend.logs(user_id="u2")[1] == 10
    assert storage.spend.logs(team_id="t1")[1] == 20
    assert storage.spend.logs(model_group="gpt")[1] == 15
    assert storage.spend.logs(user_id="u1", team_id="t1")[1] == 10
    # dates: a date end includes the whole day
    assert storage.spend.logs(start=DAY_TWO.date())[1] == 15
    assert storage.spend.logs(end=DAY_ONE.date())[1] == 15
    assert storage.spend.logs(start=DAY_ONE.date(), end=DAY_TWO.date())[1] == 30
    assert storage.spend.logs(start=DAY_TWO + timedelta(seconds=20))[1] == 5
    assert storage.spend.logs(start=date(2030, 1, 1)) == ([], 0)

    one, count = storage.spend.logs(request_id="req-00007")
    assert count == 1
    row = one[0]
    assert row["total_tokens"] == 17 + 2 and row["duration_ms"] == 257
    assert row["start_time"] == records[7].start_time and row["start_time"].tzinfo is not None
    assert row["cache_hit"] is False and row["metadata"] == {}


def test_report_groups(storage: Storage) -> None:
    seed(storage)
    records = make_records(30)
    storage.spend.write_batch(records)
    by_team = storage.spend.report(*days(), group_by="team")
    assert {(item["day"], item["group"]) for item in by_team} == {
        (day, group) for day in days() for group in ("t1", None)
    }
    by_user = storage.spend.report(*days(), group_by="user")
    u1 = sum(item["spend"] for item in by_user if item["group"] == "u1")
    assert u1 == pytest.approx(expected_sums(records)["user:u1"], rel=1e-12)
    assert storage.spend.report(DAY_TWO.date(), DAY_TWO.date(), group_by="api_key")[0]["day"] == DAY_TWO.date()
    assert len(storage.spend.report(DAY_ONE.date(), DAY_ONE.date(), group_by="api_key")) == 3
    assert storage.spend.report(date(2020, 1, 1), date(2020, 1, 2), group_by="model") == []
    with pytest.raises(ValueError, match="group_by"):
        storage.spend.report(*days(), group_by="org")  # type: ignore[arg-type]


def test_report_for_one_user_and_cache_hits(storage: Storage) -> None:
    seed(storage)
    records = make_records(30)
    storage.spend.write_batch(records)
    mine = storage.spend.report(*days(), group_by="model", user_id="u1")
    assert math.fsum(item["spend"] for item in mine) == pytest.approx(expected_sums(records)["user:u1"], rel=1e-12)
    assert storage.spend.report(*days(), group_by="model", user_id="nobody") == []
    start = datetime(2030, 1, 1, tzinfo=UTC)
    storage.spend.write_batch(
        [
            SpendRecord(request_id="hit", user_id="u1", start_time=start, cache_hit=True),
            SpendRecord(request_id="miss", user_id="u1", start_time=start),
            SpendRecord(request_id="other", user_id="u2", start_time=start, cache_hit=True),
        ]
    )
    window = (start, start + timedelta(days=1))
    assert storage.spend.cache_hits(*window) == (2, 3)
    assert storage.spend.cache_hits(*window, user_id="u1") == (1, 2)


def test_totals(storage: Storage) -> None:
    seed(storage)
    storage.keys.update(K1, {"max_budget": 9.0})
    storage.spend.write_batch([SpendRecord(request_id="r", api_key=K1, model_group="qwen", cost=0.3)])
    totals = storage.spend.totals("key", K1)
    assert totals["spend"] == pytest.approx(0.3) and totals["total_spend"] == pytest.approx(0.3)
    assert totals["max_budget"] == 9.0 and totals["model_spend"] == {"qwen": pytest.approx(0.3)}
    with pytest.raises(NotFound):
        storage.spend.totals("user", "ghost")
    with pytest.raises(ValueError, match="entity_type"):
        storage.spend.totals("org", "x")  # type: ignore[arg-type]


def test_reset_budgets(storage: Storage) -> None:
    seed(storage)
    now = datetime.now(UTC)
    past = now - timedelta(hours=1)
    storage.keys.update(K1, {"budget_duration": "1d", "budget_reset_at": past})
    storage.keys.update(K2, {"budget_duration": "1d"})  # next midnight: not due
    storage.users.update("u1", {"budget_duration": "30m", "budget_reset_at": past})
    storage.teams.update("t1", {"budget_duration": "7d", "budget_reset_at": now})
    records = make_records(30)
    storage.spend.write_batch(records)
    expected = expected_sums(records)

    reset = storage.spend.reset_budgets(now)
    assert sorted(reset) == sorted([("key", K1), ("user", "u1"), ("team", "t1")])
    k1, k2 = storage.keys.get(K1), storage.keys.get(K2)
    assert k1 is not None and k2 is not None
    assert k1["spend"] == 0.0 and k1["total_spend"] == pytest.approx(expected[f"key:{K1}"])
    assert k1["budget_reset_at"] == datetime.combine(now.date() + timedelta(days=1), datetime.min.time(), UTC)
    assert k2["spend"] == pytest.approx(expected[f"key:{K2}"])
    user = storage.users.get("u1")
    assert user is not None and user["spend"] == 0.0
    assert user["budget_reset_at"] == now + timedelta(minutes=30)
    team = storage.teams.get("t1")
    assert team is not None and team["spend"] == 0.0 and team["budget_reset_at"].weekday() == 0
    assert team["total_spend"] == pytest.approx(expected["team:t1"])
    # Nothing is due any more; later spend starts the new window from zero.
    assert storage.spend.reset_budgets(now) == []
    storage.spend.write_batch([SpendRecord(request_id="after", api_key=K1, cost=0.5)])
    k1 = storage.keys.get(K1)
    assert k1 is not None and k1["spend"] == pytest.approx(0.5)
    assert k1["total_spend"] == pytest.approx(expected[f"key:{K1}"] + 0.5)
