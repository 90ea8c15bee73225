"""Budget and key durations: parsing ``30s``/``30m``/``30h``/``30d``/``2w``/``1mo`` and computing reset times.

Pure functions, no database: the budget reset job and key expiry both depend on them, so they must be
easy to test on their own.
"""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta

__all__ = ["Months", "add_duration", "next_reset", "parse_duration"]

# ``mo`` must be tried before ``m`` (minutes); the alternation order in the regex does that.
_DURATION = re.compile(r"^(?P<n>[0-9]+)(?P<unit>mo|s|m|h|d|w)$")

_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


@dataclass(frozen=True)
class Months:
    """A calendar-month duration: months have no fixed length, so they cannot be a timedelta."""

    count: int


def parse_duration(text: str) -> timedelta | Months:
    """Parse a LiteLLM duration string; raise ValueError naming the accepted forms when it is invalid."""
    match = _DURATION.match(text.strip()) if isinstance(text, str) else None
    if match is None:
        raise ValueError(
            f"invalid duration {text!r}: expected a positive number followed by s, m, h, d, w or mo "
            "(for example 30s, 30m, 30h, 30d, 2w, 1mo)"
        )
    count = int(match["n"])
    if count <= 0:
        raise ValueError(f"invalid duration {text!r}: the number must be greater than zero")
    unit = match["unit"]
    if unit == "mo":
        return Months(count)
    return timedelta(seconds=count * _UNIT_SECONDS[unit])


def add_duration(now: datetime, duration: str | timedelta | Months) -> datetime:
    """Return ``now`` plus the duration (used for key expiry): months keep the day, clamped to month end."""
    parsed = parse_duration(duration) if isinstance(duration, str) else duration
    if isinstance(parsed, Months):
        return _add_months(now, parsed.count)
    return now + parsed


def next_reset(budget_duration: str, now: datetime) -> datetime:
    """When a budget window that starts at ``now`` ends.

    Follows LiteLLM's calendar-aligned resets (docs.litellm.ai/docs/proxy/budget_reset_and_tz, in UTC):
    a day (``1d``/``24h``) ends at the next midnight, a week (``7d``/``1w``) next Monday 00:00 and a month
    (``30d``/``1mo``) on the 1st of next month 00:00; any other duration simply elapses from ``now``.
    """
    parsed = parse_duration(budget_duration)
    now = _as_utc(now)
    midnight = datetime.combine(now.date(), time(0), tzinfo=UTC)
    if parsed == timedelta(days=1):
        return midnight + timedelta(days=1)
    if parsed == timedelta(days=7):
        return midnight + timedelta(days=7 - now.weekday())
    if parsed == timedelta(days=30) or parsed == Months(1):
        return _add_months(midnight.replace(day=1), 1)
    return add_duration(now, parsed)


def _add_months(moment: datetime, months: int) -> datetime:
    index = moment.month - 1 + months
    year, month = moment.year + index // 12, index % 12 + 1
    day = min(moment.day, calendar.monthrange(year, month)[1])
    return moment.replace(year=year, month=month, day=day)


def _as_utc(moment: datetime) -> datetime:
    # Naive datetimes are taken to be UTC: everything in storage is UTC, and guessing the local zone
    # would make resets depend on the host's TZ setting.
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)
