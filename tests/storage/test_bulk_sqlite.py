"""The spend writer's SQLite insert converts values itself: what it stores must be what SQLAlchemy would store."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.dialects import sqlite

from storage import SpendRecord, Storage
from storage.coltypes import UTCDateTime
from storage.schema import spend_logs

MOMENTS = [
    datetime(2026, 11, 29, 9, 30, 0, 0, tzinfo=UTC),  # no microseconds: isoformat would drop them by default
    datetime(2026, 11, 29, 9, 30, 0, 123456, tzinfo=UTC),
    datetime(2026, 11, 29, 11, 30, 0, 5, tzinfo=timezone(timedelta(hours=2))),  # another zone: stored in UTC
    datetime(2026, 11, 29, 9, 30, 1, 999999),  # naive: taken as UTC
    datetime(999, 1, 2, 3, 4, 5, 6, tzinfo=UTC),  # a three-digit year, zero-padded either way
]


def sqlalchemy_text(value: datetime | None) -> Any:
    dialect = sqlite.dialect()
    column_type = spend_logs.c.start_time.type
    process = column_type.dialect_impl(dialect).bind_processor(dialect)
    assert process is not None
    return process(value)


@pytest.mark.parametrize("moment", [*MOMENTS, None])
def test_sqlite_text_is_what_sqlalchemy_would_bind(moment: datetime | None) -> None:
    assert UTCDateTime.sqlite_text(moment) == sqlalchemy_text(moment)


def test_bulk_rows_read_back_as_written_through_sqlalchemy(tmp_path: Path) -> None:
    storage = Storage.open(f"sqlite:///{tmp_path / 'bulk.db'}")
    try:
        storage.migrate()
        records = [
            SpendRecord(
                request_id=f"r{i}",
                api_key="k",
                start_time=moment,
                end_time=moment + timedelta(milliseconds=250),
                cache_hit=i % 2 == 0,
                metadata={} if i % 2 else {"prompt": "hé", "n": i},
            )
            for i, moment in enumerate(MOMENTS)
        ]
        assert storage.spend.write_batch(records) == len(records)
        with storage.engine.connect() as connection:
            raw = {
                row.request_id: row
                for row in connection.execute(
                    text("SELECT request_id, start_time, end_time, cache_hit, metadata FROM spend_logs")
                )
            }
        for i, record in enumerate(records):
            row = raw[record.request_id]
            assert (row.start_time, row.end_time) == (
                sqlalchemy_text(record.start_time),
                sqlalchemy_text(record.end_time),
            )
            assert row.cache_hit == (1 if record.cache_hit else 0)
            assert row.metadata == ("{}" if i % 2 else '{"prompt": "h\\u00e9", "n": ' + str(i) + "}")
        logged, total = storage.spend.logs(size=10)
        assert total == len(records)
        assert {row["request_id"]: row["start_time"] for row in logged} == {
            r.request_id: r.start_time.astimezone(UTC) if r.start_time.tzinfo else r.start_time.replace(tzinfo=UTC)
            for r in records
        }
        assert {row["request_id"]: row["metadata"] for row in logged} == {
            r.request_id: dict(r.metadata) for r in records
        }
    finally:
        storage.close()
