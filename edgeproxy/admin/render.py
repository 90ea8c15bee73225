"""Stored rows → JSON-ready dicts: dates become ISO 8601 strings, everything else is already JSON."""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import date, datetime
from typing import Any


def jsonable(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value


def record(row: Mapping[str, Any]) -> dict[str, Any]:
    rendered: dict[str, Any] = jsonable(row)
    return rendered


def page(items: list[Any], total: int, page: int, size: int, items_name: str) -> dict[str, Any]:
    """LiteLLM's paged shape for /key/list."""
    return {
        items_name: items,
        "total_count": total,
        "current_page": page,
        "total_pages": math.ceil(total / size),
    }
