"""Column types that behave the same on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, DateTime, Dialect, TypeDecorator
from sqlalchemy.dialects.postgresql import JSONB

__all__ = ["JSONValue", "UTCDateTime", "as_utc", "utc_now"]

# JSONB on PostgreSQL (compact, comparable); SQLite stores JSON as text either way.
JSONValue = JSON().with_variant(JSONB(), "postgresql")


def utc_now() -> datetime:
    return datetime.now(UTC)


def as_utc(moment: datetime) -> datetime:
    """Aware UTC datetime; naive input is taken to be UTC already (the only zone storage uses)."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timestamps go in as any aware datetime and always come back as aware UTC.

    PostgreSQL has timestamptz; SQLite stores text without a zone, so values are normalised to UTC
    before storing, which also keeps SQLite's text comparisons (``budget_reset_at <= now``) correct.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        value = as_utc(value)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    @staticmethod
    def sqlite_text(value: datetime | None) -> str | None:
        """What this type stores on SQLite, in C: the text SQLAlchemy's SQLite DATETIME would write for the
        value in UTC ("YYYY-MM-DD HH:MM:SS.ffffff"). For bulk inserts, where the driver's Python formatting
        (~1.5 us a value) holds the GIL that the event loop waits for."""
        if value is None:
            return None
        if value.tzinfo is not UTC:
            value = as_utc(value)
        return value.isoformat(" ", "microseconds")[:26]  # without the "+00:00"

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return as_utc(value)
