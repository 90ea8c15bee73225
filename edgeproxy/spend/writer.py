"""Spend records leave the hot path in a list; one task writes them in batches.

Nothing is silently dropped: when the database is down, records wait in memory (bounded), then spill to
a local journal file (JSON lines) that is replayed when the database answers again, and at startup.
Writes are idempotent by request id, so a replay after a crash cannot count a request twice.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import trio

from edgeproxy.db import Db
from edgeproxy.errors import ProxyError
from edgeproxy.lowpriority import LowPriorityThread
from edgeproxy.spend.ledger import BudgetLedger, spend_by_entity
from storage import SpendRecord

log = logging.getLogger("edgeproxy.spend")
MAX_PENDING = 50_000  # records held in memory while the database is down, before spilling to the journal
REPLAY_CHUNK = 500


def record_to_json(record: SpendRecord) -> str:
    values = dataclasses.asdict(record)
    for name in ("start_time", "end_time"):
        if values[name] is not None:
            values[name] = values[name].isoformat()
    return json.dumps(values, separators=(",", ":"))


def record_from_json(line: str) -> SpendRecord:
    values: dict[str, Any] = json.loads(line)
    for name in ("start_time", "end_time"):
        if values.get(name):
            values[name] = datetime.fromisoformat(values[name])
    return SpendRecord(**values)


class Journal:
    """An append-only file of records the database could not take yet (sync; called in a thread)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def append(self, records: list[SpendRecord]) -> None:
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        with os.fdopen(fd, "a", encoding="utf-8") as file:
            file.writelines(record_to_json(r) + "\n" for r in records)
            file.flush()
            os.fsync(file.fileno())

    def read(self) -> list[SpendRecord]:
        if not self.path.exists():
            return []
        lines = self.path.read_text(encoding="utf-8").splitlines()
        return [record_from_json(line) for line in lines if line.strip()]

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


class SpendWriter:
    def __init__(self, db: Db, ledger: BudgetLedger, interval_s: float, journal_path: Path) -> None:
        self._db = db
        self._ledger = ledger
        self._interval_s = interval_s
        self._journal = Journal(journal_path)
        self._io_limiter = trio.CapacityLimiter(1)
        self._preparer = LowPriorityThread("edgeproxy-spend")  # batches' Python work, off the loop's core time
        self._prepare_low = True
        # A list, not a channel: nothing waits for records (the writer looks every interval), so taking a batch
        # is one swap instead of a receive per record on the event loop.
        self._incoming: list[SpendRecord] = []
        self._pending: list[SpendRecord] = []  # a batch the database did not take, retried first
        self._closing = trio.Event()
        self._database_down = False
        self.written = 0

    @property
    def queue_depth(self) -> int:
        return len(self._pending) + len(self._incoming)

    def submit(self, record: SpendRecord) -> None:
        """Hot path: never waits."""
        self._incoming.append(record)

    async def serve(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Write a batch every interval until close(); then flush what is left (to the journal if must)."""
        task_status.started()
        try:
            await self._replay_journal()
            while not self._closing.is_set():
                with trio.move_on_after(self._interval_s):
                    await self._closing.wait()
                await self.flush()
            with trio.CancelScope(shield=True):
                await self.flush()
                if self._pending:
                    await self._spill(self._pending)
                    self._pending = []
        finally:
            self._preparer.close()

    def close(self) -> None:
        self._closing.set()

    def _drain(self) -> list[SpendRecord]:
        batch, self._pending = self._pending, []
        incoming, self._incoming = self._incoming, []
        if not batch:
            return incoming
        batch += incoming
        return batch

    async def flush(self) -> None:
        batch = self._drain()
        if not batch:
            return
        # Prepared at low priority, written at normal priority: the transaction holds the database's locks.
        started = trio.current_time()
        prepare = self._db.storage.spend.prepare
        # At either priority, the preparation's loops give way to the event loop every few records, for at most
        # an interval (storage/yielding.py): past that, records would pile up behind a batch on a saturated core.
        give_way_until = time.monotonic() + self._interval_s
        if self._prepare_low:
            prepared = await self._preparer.run(prepare, batch, give_way_until)
        else:
            prepared = await self._db.run(prepare, batch, give_way_until)
        # A core too busy to give the low-priority thread its turn within an interval gains nothing from it
        # (requests are queueing anyway), and records would pile up: the next batch is prepared at normal
        # priority.
        self._prepare_low = trio.current_time() - started < self._interval_s
        try:
            await self._db.run(self._db.storage.spend.write_prepared, prepared)
        except ProxyError as error:
            self._pending = batch
            if not self._database_down:
                log.error("spend: database unavailable, %d records waiting (%s)", len(batch), error.message)
            self._database_down = True
            if len(self._pending) > MAX_PENDING:
                spill, self._pending = self._pending[:-MAX_PENDING], self._pending[-MAX_PENDING:]
                await self._spill(spill)
            return
        self.written += len(batch)
        self._ledger.flushed(spend_by_entity(prepared.totals))
        if self._database_down:
            log.info("spend: database is back; %d records written", len(batch))
            self._database_down = False
            await self._replay_journal()

    async def _spill(self, records: list[SpendRecord]) -> None:
        await trio.to_thread.run_sync(self._journal.append, records, limiter=self._io_limiter)
        log.warning("spend: %d records saved to %s until the database returns", len(records), self._journal.path)

    async def _replay_journal(self) -> None:
        records = await trio.to_thread.run_sync(self._journal.read, limiter=self._io_limiter)
        if not records:
            return
        try:
            for start in range(0, len(records), REPLAY_CHUNK):
                await self._db.run(self._db.storage.spend.write_batch, records[start : start + REPLAY_CHUNK])
        except ProxyError:
            self._database_down = True
            return  # keep the journal; the next successful write retries it
        await trio.to_thread.run_sync(self._journal.remove, limiter=self._io_limiter)
        log.info("spend: replayed %d journaled records", len(records))
