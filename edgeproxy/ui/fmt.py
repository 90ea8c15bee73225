"""How numbers, money and times read on the admin page (templates get this module as `fmt`)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any


def usd(value: float | None) -> str:
    """Dollars with enough digits that small local-model costs do not all read as $0.00."""
    if value is None:
        return "—"
    if value == 0:
        return "$0"
    if abs(value) >= 100:
        return f"${value:,.0f}"
    if abs(value) >= 1:
        return f"${value:,.2f}"
    digits = 4 if abs(value) >= 0.001 else 6
    text = f"{value:.{digits}f}".rstrip("0")  # $0.50 rather than $0.5000, but $0.0429 stays
    return "$" + (text + "0" if len(text.split(".")[1]) < 2 else text)


def number(value: float | None) -> str:
    """Whole counts with thousands separators; large ones shortened (12.3k, 4.5M) to fit small screens."""
    if value is None:
        return "—"
    if abs(value) >= 1_000_000:
        return f"{value / 1_000_000:.1f}M"
    if abs(value) >= 10_000:
        return f"{value / 1000:.1f}k"
    return f"{value:,.0f}"


def percent(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.1f}%"


def seconds(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.2f} s"


def moment(value: Any) -> str:
    """An ISO timestamp or datetime as 'YYYY-MM-DD HH:MM UTC'; em dash for none."""
    if value is None or value == "":
        return "—"
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return value
    if isinstance(value, datetime):
        moment = value if value.tzinfo else value.replace(tzinfo=UTC)
        return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return str(value)


def models(value: Any) -> str:
    return ", ".join(value) if value else "all models"
