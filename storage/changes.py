"""A cheap fingerprint of the tables that key checks read, so instances can notice changes made elsewhere.

Every write to keys, users, teams or memberships bumps `updated_at` or changes a row count, so a change
in (count, newest updated_at) per table means something changed. One small query answers it.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select

from storage.database import Database
from storage.schema import keys, team_members, teams, users

__all__ = ["change_marker"]


def change_marker(db: Database) -> tuple[Any, ...]:
    columns = []
    for table in (keys, users, teams):
        columns.append(select(func.count()).select_from(table).scalar_subquery())
        columns.append(select(func.max(table.c.updated_at)).scalar_subquery())
    columns.append(select(func.count()).select_from(team_members).scalar_subquery())
    columns.append(select(func.sum(team_members.c.max_budget_in_team)).scalar_subquery())
    with db.read() as connection:
        return tuple(connection.execute(select(*columns)).one())
