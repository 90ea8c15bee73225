"""Batch loops give way to other threads every few items, and lose or reorder nothing doing so."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

import storage.yielding as yielding_module
from storage import SpendRecord, Storage
from storage.yielding import YIELD_EVERY, yielding


@pytest.fixture
def given_way(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the calls to give_way (one element per call)."""
    calls: list[int] = []
    monkeypatch.setattr(yielding_module, "give_way", lambda: calls.append(1))
    return calls


def test_yielding_gives_every_item_in_order_and_gives_way_after_each_group(given_way: list[int]) -> None:
    seen = []
    for item in yielding(range(50), math.inf, every=16):
        seen.append((item, len(given_way)))
    assert [item for item, _ in seen] == list(range(50))
    # Way is given after items 15, 31 and 47 (the 16th, 32nd and 48th), before the next one is handed out.
    assert [calls for _, calls in seen] == [0] * 16 + [1] * 16 + [2] * 16 + [3] * 2


def test_yielding_stops_giving_way_at_its_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [100.0]
    calls: list[float] = []

    def give_way() -> None:  # each way given takes a second of the clock
        calls.append(clock[0])
        clock[0] += 1

    monkeypatch.setattr(yielding_module, "give_way", give_way)
    monkeypatch.setattr(yielding_module.time, "monotonic", lambda: clock[0])
    assert list(yielding(range(100), until=102.5, every=10)) == list(range(100))
    assert calls == [100.0, 101.0, 102.0]  # at 103 the deadline has passed: the rest without giving way
    items = [1, 2, 3]
    assert yielding(items, until=50.0) is items  # a deadline already past: the items as they are


def test_a_spend_batch_gives_way_while_preparing_not_in_its_transaction(tmp_path: Path, given_way: list[int]) -> None:
    storage = Storage.open(f"sqlite:///{tmp_path / 'spend.db'}")
    try:
        storage.migrate()
        records = [SpendRecord(request_id=f"r{i:04d}", api_key="k", cost=0.001) for i in range(10 * YIELD_EVERY)]
        assert storage.spend.prepare(records) is not None
        assert given_way == []  # no deadline given: no giving way
        prepared = storage.spend.prepare(records, give_way_until=math.inf)
        while_preparing = len(given_way)
        assert storage.spend.write_prepared(prepared) == len(records)
        # Rows, sums and the driver's parameters each give way once per YIELD_EVERY records; the insert, which
        # holds the write lock, does not.
        assert while_preparing == 3 * 10
        assert len(given_way) == while_preparing
        assert storage.spend.logs(api_key="k")[1] == len(records)
    finally:
        storage.close()
