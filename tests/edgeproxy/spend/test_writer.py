"""The spend writer: batches, waits while the database is down, spills to the journal, replays it."""

from __future__ import annotations

import math
import time
from pathlib import Path

import pytest
import trio

from edgeproxy.db import Db
from edgeproxy.spend import BudgetLedger, SpendWriter
from edgeproxy.spend import writer as writer_module
from storage import SpendRecord, Storage, StorageUnavailable
from storage.spend import PreparedSpend


class FlakySpend:
    """Storage's spend repository with an off switch: a database that is down refuses writes."""

    def __init__(self, real: object) -> None:
        self.real = real
        self.down = False
        self.give_way_until: list[float] = []  # what each prepare was given

    def write_batch(self, records: list[SpendRecord]) -> int:
        return self.write_prepared(self.prepare(records))

    def prepare(self, records: list[SpendRecord], give_way_until: float = -math.inf) -> PreparedSpend:
        self.give_way_until.append(give_way_until)
        return self.real.prepare(records, give_way_until)  # type: ignore[attr-defined,no-any-return]

    def write_prepared(self, batch: PreparedSpend) -> int:
        if self.down:
            raise StorageUnavailable("connection refused")
        return self.real.write_prepared(batch)  # type: ignore[attr-defined,no-any-return]


async def test_outage_spills_to_journal_and_replays(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(writer_module, "MAX_PENDING", 3)
    storage = Storage.open(f"sqlite:///{tmp_path}/w.db")
    storage.migrate()
    flaky = FlakySpend(storage.spend)
    storage.spend = flaky  # type: ignore[assignment]
    journal = tmp_path / "spend.journal"
    writer = SpendWriter(Db(storage, 2), BudgetLedger(), interval_s=3600, journal_path=journal)
    flaky.down = True
    for i in range(10):
        writer.submit(SpendRecord(request_id=f"r{i}", model_group="m", cost=0.5))
    await writer.flush()
    assert journal.exists()
    assert len(journal.read_text().splitlines()) == 7  # all but the newest MAX_PENDING wait on disk
    assert writer.queue_depth == 3
    flaky.down = False
    await writer.flush()
    assert not journal.exists()
    _, total = storage.spend.real.logs()  # type: ignore[attr-defined]
    assert total == 10


async def test_shutdown_flushes_and_journal_is_replayed_at_start(tmp_path: Path) -> None:
    storage = Storage.open(f"sqlite:///{tmp_path}/w.db")
    storage.migrate()
    flaky = FlakySpend(storage.spend)
    storage.spend = flaky  # type: ignore[assignment]
    journal = tmp_path / "spend.journal"
    flaky.down = True
    writer = SpendWriter(Db(storage, 2), BudgetLedger(), interval_s=3600, journal_path=journal)
    async with trio.open_nursery() as nursery:
        await nursery.start(writer.serve)
        writer.submit(SpendRecord(request_id="a", model_group="m", cost=1.0))
        writer.close()
    assert journal.exists()  # the database was down at shutdown: the record went to the journal
    flaky.down = False
    restarted = SpendWriter(Db(storage, 2), BudgetLedger(), interval_s=3600, journal_path=journal)
    async with trio.open_nursery() as nursery:
        await nursery.start(restarted.serve)
        restarted.close()
    assert not journal.exists()
    rows, total = storage.spend.real.logs()  # type: ignore[attr-defined]
    assert total == 1 and rows[0]["cost"] == 1.0


async def test_batches_give_way_for_an_interval_at_either_priority(tmp_path: Path) -> None:
    storage = Storage.open(f"sqlite:///{tmp_path}/w.db")
    storage.migrate()
    flaky = FlakySpend(storage.spend)
    storage.spend = flaky  # type: ignore[assignment]
    writer = SpendWriter(Db(storage, 2), BudgetLedger(), interval_s=30, journal_path=tmp_path / "spend.journal")
    writer.submit(SpendRecord(request_id="a", model_group="m", cost=1.0))
    before = time.monotonic()
    await writer.flush()
    writer._prepare_low = False  # as after a batch whose preparation took longer than the interval
    writer.submit(SpendRecord(request_id="b", model_group="m", cost=1.0))
    await writer.flush()
    after = time.monotonic()
    assert all(before + 30 <= until <= after + 30 for until in flaky.give_way_until)
    assert len(flaky.give_way_until) == 2
    assert storage.spend.real.logs()[1] == 2  # type: ignore[attr-defined]
