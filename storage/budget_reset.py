"""Ending budget windows: zero ``spend`` and schedule the next reset for keys, users and teams."""

from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy import Connection, Table, select, update

from storage.durations import next_reset
from storage.schema import keys, teams, users

__all__ = ["reset_budgets"]

log = logging.getLogger(__name__)

# Same table order as the spend writer (keys, users, teams), so the two never wait on each other in a cycle.
_TABLES: tuple[tuple[str, Table, str], ...] = (
    ("key", keys, "token"),
    ("user", users, "user_id"),
    ("team", teams, "team_id"),
)


def reset_budgets(connection: Connection, now: datetime) -> list[tuple[str, str]]:
    """Reset every window that ended at or before ``now``; returns (entity_type, id) per reset."""
    reset: list[tuple[str, str]] = []
    for entity_type, table, id_column in _TABLES:
        reset.extend((entity_type, entity_id) for entity_id in _reset_table(connection, table, id_column, now))
    return reset


def _reset_table(connection: Connection, table: Table, id_column: str, now: datetime) -> list[str]:
    c = table.c
    due = connection.execute(
        select(c[id_column], c.budget_duration, c.budget_reset_at)
        .where(c.budget_reset_at <= now, c.budget_duration.is_not(None))
        .order_by(c[id_column])
    ).all()
    done = []
    for entity_id, duration, reset_at in due:
        try:
            following = next_reset(duration, now)
        except ValueError:
            # Durations are validated on write, so this is hand-edited data: leave it and say so.
            log.warning("%s %s has an invalid budget_duration %r; not reset", table.name, entity_id, duration)
            continue
        # The reset_at guard makes a concurrent reset by another instance a no-op here, not a second reset.
        result = connection.execute(
            update(table)
            .where(c[id_column] == entity_id, c.budget_reset_at == reset_at)
            .values(spend=0.0, budget_reset_at=following)
        )
        if result.rowcount == 1:
            done.append(entity_id)
    return done
