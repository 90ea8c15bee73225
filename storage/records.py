"""Helpers shared by the key, user and team repositories: validating field dicts, filling defaults,
budget windows, paging, and turning rows into plain dicts."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, Table, func, select

from storage.coltypes import utc_now
from storage.durations import next_reset, parse_duration
from storage.inlist import in_list
from storage.schema import model_spend

__all__ = [
    "Record",
    "add_model_spend",
    "check_page",
    "count",
    "prepare_create",
    "prepare_update",
    "row_dict",
]

Record = dict[str, Any]

# JSON columns and the empty value None is replaced with, so callers may pass None for "nothing".
_JSON_DEFAULTS: dict[str, type[list[Any]] | type[dict[str, Any]]] = {
    "models": list,
    "metadata": dict,
    "aliases": dict,
    "allowed_cache_controls": list,
    "model_aliases": dict,
}
# Maintained by storage itself; callers never set them.
_MANAGED = {"created_at", "updated_at"}
MAX_PAGE_SIZE = 1000


def prepare_create(table: Table, record: Mapping[str, Any], id_column: str) -> Record:
    """Validate a new row: known columns only, id present, JSON defaults, budget window, timestamps."""
    if not record.get(id_column):
        raise ValueError(f"{table.name}: {id_column} is required")
    values = _checked(table, record)
    now = utc_now()
    for name in _JSON_DEFAULTS.keys() & set(table.c.keys()):
        if values.get(name) is None:
            values[name] = _JSON_DEFAULTS[name]()
    _set_budget_window(values, now)
    values["created_at"] = values["updated_at"] = now
    return values


def prepare_update(table: Table, fields: Mapping[str, Any], id_column: str) -> Record:
    """Validate changed fields; the id cannot change here and updated_at is bumped."""
    if id_column in fields:
        raise ValueError(f"{table.name}: {id_column} cannot be changed by an update")
    values = _checked(table, fields)
    for name in _JSON_DEFAULTS.keys() & values.keys():
        if values[name] is None:
            values[name] = _JSON_DEFAULTS[name]()
    now = utc_now()
    _set_budget_window(values, now)
    values["updated_at"] = now
    return values


def check_page(page: int, size: int) -> int:
    """Validate 1-based paging and return the row offset."""
    if page < 1:
        raise ValueError(f"page must be 1 or more, got {page}")
    if not 1 <= size <= MAX_PAGE_SIZE:
        raise ValueError(f"size must be between 1 and {MAX_PAGE_SIZE}, got {size}")
    return (page - 1) * size


def count(connection: Connection, table: Table, *conditions: Any) -> int:
    return int(connection.scalar(select(func.count()).select_from(table).where(*conditions)) or 0)


def row_dict(row: Row[*tuple[Any, ...]]) -> Record:
    return dict(row._mapping)


def add_model_spend(connection: Connection, entity_type: str, rows: Iterable[Record], id_column: str) -> list[Record]:
    """Attach ``model_spend`` ({model_group: spend}) to each row with one query for all of them."""
    rows = list(rows)
    ids = [row[id_column] for row in rows]
    by_entity = _model_spend(connection, entity_type, ids)
    for row in rows:
        row["model_spend"] = by_entity.get(row[id_column], {})
    return rows


def _model_spend(connection: Connection, entity_type: str, ids: Collection[str]) -> dict[str, dict[str, float]]:
    if not ids:
        return {}
    query = select(model_spend.c.entity_id, model_spend.c.model_group, model_spend.c.spend).where(
        model_spend.c.entity_type == entity_type, in_list(connection, model_spend.c.entity_id, ids)
    )
    result: dict[str, dict[str, float]] = {}
    for entity_id, model_group, spend in connection.execute(query):
        result.setdefault(entity_id, {})[model_group] = spend
    return result


def _checked(table: Table, fields: Mapping[str, Any]) -> Record:
    unknown = sorted(set(fields) - set(table.c.keys()) | (set(fields) & _MANAGED))
    if unknown:
        raise ValueError(f"{table.name}: unknown or read-only fields {', '.join(unknown)}")
    return dict(fields)


def _set_budget_window(values: Record, now: datetime) -> None:
    # Setting budget_duration starts a new window now (as LiteLLM does), unless the caller also gives
    # budget_reset_at explicitly (e.g. restoring a backup).
    if "budget_duration" not in values:
        return
    duration = values["budget_duration"]
    if duration is None:
        values.setdefault("budget_reset_at", None)
        return
    parse_duration(duration)  # ValueError with a clear message for a bad string
    if values.get("budget_reset_at") is None:
        values["budget_reset_at"] = next_reset(duration, now)
