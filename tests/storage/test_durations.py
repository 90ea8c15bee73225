from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from storage import Months, add_duration, next_reset, parse_duration


def at(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30s", timedelta(seconds=30)),
        ("30m", timedelta(minutes=30)),
        ("30h", timedelta(hours=30)),
        ("30d", timedelta(days=30)),
        ("2w", timedelta(weeks=2)),
        ("1mo", Months(1)),
        ("12mo", Months(12)),
        (" 5m ", timedelta(minutes=5)),
    ],
)
def test_parse_duration_accepts_litellm_forms(text: str, expected: timedelta | Months) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "d", "30", "1y", "-1d", "0d", "1.5h", "1 d", "1M", "30 days", "mo"])
def test_parse_duration_rejects_invalid_strings_clearly(text: str) -> None:
    with pytest.raises(ValueError, match="invalid duration") as info:
        parse_duration(text)
    assert repr(text) in str(info.value)


def test_parse_duration_error_lists_accepted_forms() -> None:
    with pytest.raises(ValueError, match=r"30s, 30m, 30h, 30d, 2w, 1mo"):
        parse_duration("forever")


@pytest.mark.parametrize(
    ("duration", "now", "expected"),
    [
        # a day ends at the next midnight UTC, even when now is exactly midnight
        ("1d", at(2025, 3, 10, 15, 30), at(2025, 3, 11)),
        ("1d", at(2025, 3, 11), at(2025, 3, 12)),
        ("24h", at(2025, 12, 31, 23, 59, 59), at(2026, 1, 1)),
        # a week ends next Monday 00:00 (2025-03-10 is a Monday)
        ("7d", at(2025, 3, 10, 10), at(2025, 3, 17)),
        ("7d", at(2025, 3, 16, 23, 59), at(2025, 3, 17)),
        ("7d", at(2025, 3, 12), at(2025, 3, 17)),
        ("1w", at(2025, 3, 14, 8), at(2025, 3, 17)),
        # a month ends on the 1st of next month 00:00
        ("30d", at(2025, 1, 31, 12), at(2025, 2, 1)),
        ("1mo", at(2025, 12, 15), at(2026, 1, 1)),
        ("1mo", at(2025, 2, 1), at(2025, 3, 1)),
        # anything else simply elapses
        ("2d", at(2025, 3, 10, 15, 30), at(2025, 3, 12, 15, 30)),
        ("30m", at(2025, 3, 10, 23, 50), at(2025, 3, 11, 0, 20)),
        ("45s", at(2025, 3, 10), at(2025, 3, 10, 0, 0, 45)),
        ("2w", at(2025, 3, 12, 6), at(2025, 3, 26, 6)),
        ("2mo", at(2025, 12, 31, 9), at(2026, 2, 28, 9)),
    ],
)
def test_next_reset_follows_calendar_rules(duration: str, now: datetime, expected: datetime) -> None:
    result = next_reset(duration, now)
    assert result == expected
    assert result.tzinfo is not None and result.utcoffset() == timedelta(0)


def test_next_reset_converts_other_zones_to_utc() -> None:
    # 23:30 in UTC-5 is already 04:30 the next day in UTC: the next UTC midnight is a day later.
    eastern = datetime(2025, 3, 10, 23, 30, tzinfo=timezone(timedelta(hours=-5)))
    assert next_reset("1d", eastern) == at(2025, 3, 12)


def test_next_reset_treats_naive_datetimes_as_utc() -> None:
    assert next_reset("1d", datetime(2025, 3, 10, 23, 30)) == at(2025, 3, 11)


def test_next_reset_rejects_bad_duration() -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        next_reset("daily", at(2025, 1, 1))


def test_add_duration_clamps_month_ends() -> None:
    assert add_duration(at(2024, 1, 31, 10), "1mo") == at(2024, 2, 29, 10)
    assert add_duration(at(2025, 11, 30), Months(3)) == at(2026, 2, 28)
    assert add_duration(at(2025, 1, 1), "30d") == at(2025, 1, 31)
