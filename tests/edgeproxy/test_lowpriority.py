"""The low-priority thread: results and errors come back to trio, and the work runs at nice +19."""

from __future__ import annotations

import math
import os
import sys
import threading
import time
from pathlib import Path

import pytest
import trio

from edgeproxy.db import Db
from edgeproxy.lowpriority import LowPriorityThread
from edgeproxy.spend import BudgetLedger, SpendWriter
from storage import SpendRecord, Storage
from storage.spend import PreparedSpend

linux_only = pytest.mark.skipif(sys.platform != "linux", reason="per-thread niceness is a Linux feature")


def niceness() -> int:
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


async def test_results_and_errors_come_back_from_one_thread() -> None:
    thread = LowPriorityThread("test-low")
    try:
        names = {await thread.run(lambda: threading.current_thread().name) for _ in range(3)}
        assert len(names) == 1 and names.pop().startswith("test-low")
        assert await thread.run(pow, 2, 10) == 1024
        with pytest.raises(ZeroDivisionError):
            await thread.run(lambda: 1 / 0)
    finally:
        thread.close()


async def test_a_cancel_waits_for_the_work_and_keeps_its_result() -> None:
    thread = LowPriorityThread("test-low")
    release = threading.Event()
    done: list[str] = []

    def work() -> str:
        release.wait(10)
        done.append("finished")
        return "result"

    try:
        with trio.CancelScope() as scope:
            scope.cancel()
            trio.lowlevel.current_trio_token().run_sync_soon(release.set)
            assert await thread.run(work) == "result"  # not abandoned half-way
        assert done == ["finished"]
    finally:
        thread.close()


@linux_only
async def test_work_runs_at_the_lowest_priority_and_the_caller_keeps_its_own() -> None:
    before = niceness()
    thread = LowPriorityThread("test-low")
    try:
        assert await thread.run(niceness) == min(19, before + 19)
    finally:
        thread.close()
    assert niceness() == before


@linux_only
async def test_spend_batches_are_prepared_at_low_priority_and_written_at_normal(tmp_path: Path) -> None:
    storage = Storage.open(f"sqlite:///{tmp_path}/w.db")
    storage.migrate()
    real = storage.spend
    seen: dict[str, int] = {}

    class Spy:
        def prepare(self, records: list[SpendRecord], give_way_until: float = -math.inf) -> PreparedSpend:
            seen["prepare"] = niceness()
            return real.prepare(records, give_way_until)

        def write_prepared(self, batch: PreparedSpend) -> int:
            seen["write"] = niceness()  # holds the database's write lock: must not wait behind busy cores
            return real.write_prepared(batch)

    storage.spend = Spy()  # type: ignore[assignment]
    base = niceness()
    writer = SpendWriter(Db(storage, 2), BudgetLedger(), interval_s=3600, journal_path=tmp_path / "journal")
    async with trio.open_nursery() as nursery:
        await nursery.start(writer.serve)
        writer.submit(SpendRecord(request_id="r1", api_key="k", cost=0.25))
        await writer.flush()
        writer.close()
    assert seen == {"prepare": min(19, base + 19), "write": base}
    assert real.logs()[1] == 1
    storage.close()


@linux_only
async def test_a_batch_that_waited_longer_than_an_interval_makes_the_next_one_normal_priority(tmp_path: Path) -> None:
    storage = Storage.open(f"sqlite:///{tmp_path}/w.db")
    storage.migrate()
    real = storage.spend
    seen: list[int] = []
    gives_way: list[bool] = []

    class SlowFirst:
        def prepare(self, records: list[SpendRecord], give_way_until: float = -math.inf) -> PreparedSpend:
            seen.append(niceness())
            gives_way.append(give_way_until > time.monotonic())
            if len(seen) == 1:
                time.sleep(0.2)  # as if a busy core kept the low-priority thread waiting for longer than the interval
            return real.prepare(records, give_way_until)

        def write_prepared(self, batch: PreparedSpend) -> int:
            return real.write_prepared(batch)

    storage.spend = SlowFirst()  # type: ignore[assignment]
    base = niceness()
    writer = SpendWriter(Db(storage, 2), BudgetLedger(), interval_s=0.1, journal_path=tmp_path / "journal")
    for i in range(3):
        writer.submit(SpendRecord(request_id=f"r{i}", api_key="k", cost=0.25))
        await writer.flush()
    assert seen == [min(19, base + 19), base, min(19, base + 19)]  # back to low priority once it is quick again
    assert gives_way == [True, True, True]  # each gives way to the event loop for up to an interval
    assert real.logs()[1] == 3
    storage.close()
