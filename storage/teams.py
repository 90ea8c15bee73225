"""Teams and their members (with a per-member role, budget and spend)."""

from __future__ import annotations

import builtins
from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy import Connection, delete, select, update

from storage.coltypes import utc_now
from storage.database import Database
from storage.errors import Conflict, NotFound
from storage.keys import delete_model_spend
from storage.records import Record, add_model_spend, check_page, count, prepare_create, prepare_update, row_dict
from storage.schema import keys, model_spend, team_members, teams, users

__all__ = ["MEMBER_ROLES", "TeamRepository"]

MEMBER_ROLES = frozenset({"admin", "user"})
_ENTITY = "team"


class TeamRepository:
    """CRUD for teams and memberships; team rows are dicts of the ``teams`` columns plus ``model_spend``."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def create(self, record: Mapping[str, Any]) -> Record:
        """Insert a team; Conflict when team_id or team_alias is taken."""
        values = prepare_create(teams, record, "team_id")
        with self._db.write() as connection:
            connection.execute(teams.insert().values(values))
            return self._fetch(connection, values["team_id"])

    def get(self, team_id: str) -> Record | None:
        with self._db.read() as connection:
            return self._find(connection, team_id)

    def list(self, page: int = 1, size: int = 50) -> tuple[list[Record], int]:
        """One page of teams, oldest first, and the total count."""
        offset = check_page(page, size)
        query = select(teams).order_by(teams.c.created_at, teams.c.team_id).offset(offset).limit(size)
        with self._db.read() as connection:
            rows = [row_dict(row) for row in connection.execute(query)]
            return add_model_spend(connection, _ENTITY, rows, "team_id"), count(connection, teams)

    def update(self, team_id: str, fields: Mapping[str, Any]) -> Record:
        """Change some fields; NotFound for an unknown team, Conflict for a team_alias in use."""
        values = prepare_update(teams, fields, "team_id")
        with self._db.write() as connection:
            result = connection.execute(update(teams).where(teams.c.team_id == team_id).values(values))
            if result.rowcount == 0:
                raise NotFound(f"team {team_id} not found")
            return self._fetch(connection, team_id)

    def set_blocked(self, team_id: str, blocked: bool) -> Record:
        return self.update(team_id, {"blocked": blocked})

    def delete(self, team_ids: Iterable[str]) -> builtins.list[str]:
        """Delete teams with their memberships and their keys (as LiteLLM does); returns the ids deleted."""
        ids = sorted(set(team_ids))
        if not ids:
            return []
        with self._db.write() as connection:
            connection.execute(delete(team_members).where(team_members.c.team_id.in_(ids)))
            tokens = connection.scalars(delete(keys).where(keys.c.team_id.in_(ids)).returning(keys.c.token))
            delete_model_spend(connection, tokens)
            connection.execute(
                delete(model_spend).where(model_spend.c.entity_type == _ENTITY, model_spend.c.entity_id.in_(ids))
            )
            return sorted(connection.scalars(delete(teams).where(teams.c.team_id.in_(ids)).returning(teams.c.team_id)))

    def add_member(
        self, team_id: str, user_id: str, role: str = "user", max_budget_in_team: float | None = None
    ) -> Record:
        """Add a user to a team; the user is created (internal_user) if unknown, as LiteLLM's member_add does.

        NotFound for an unknown team, Conflict when the user is already a member.
        """
        _check_member_role(role)
        now = utc_now()
        with self._db.write() as connection:
            self._require_team(connection, team_id)
            if connection.scalar(select(users.c.user_id).where(users.c.user_id == user_id)) is None:
                connection.execute(
                    users.insert().values(user_id=user_id, models=[], metadata={}, created_at=now, updated_at=now)
                )
            elif self._membership(connection, team_id, user_id) is not None:
                raise Conflict(f"user {user_id} is already a member of team {team_id}", field="user_id")
            connection.execute(
                team_members.insert().values(
                    team_id=team_id, user_id=user_id, role=role, max_budget_in_team=max_budget_in_team, created_at=now
                )
            )
            return self._require_membership(connection, team_id, user_id)

    def update_member(self, team_id: str, user_id: str, fields: Mapping[str, Any]) -> Record:
        """Change a member's ``role`` or ``max_budget_in_team``; NotFound when not a member."""
        unknown = set(fields) - {"role", "max_budget_in_team"}
        if unknown:
            raise ValueError(f"team_members: cannot update {', '.join(sorted(unknown))}")
        if "role" in fields:
            _check_member_role(fields["role"])
        with self._db.write() as connection:
            if fields:
                connection.execute(update(team_members).where(*_member(team_id, user_id)).values(dict(fields)))
            return self._require_membership(connection, team_id, user_id)

    def remove_member(self, team_id: str, user_id: str) -> None:
        """Remove a user from a team; NotFound when the user is not a member."""
        with self._db.write() as connection:
            result = connection.execute(delete(team_members).where(*_member(team_id, user_id)))
            if result.rowcount == 0:
                raise NotFound(f"user {user_id} is not a member of team {team_id}")

    def members(self, team_id: str) -> builtins.list[Record]:
        """Memberships of a team (user_id, role, max_budget_in_team, spend...), by user_id; NotFound for no team."""
        query = select(team_members).where(team_members.c.team_id == team_id).order_by(team_members.c.user_id)
        with self._db.read() as connection:
            self._require_team(connection, team_id)
            return [row_dict(row) for row in connection.execute(query)]

    def teams_of_user(self, user_id: str) -> builtins.list[Record]:
        """The teams a user belongs to, each with the user's ``member_role``, by team_id."""
        query = (
            select(teams, team_members.c.role.label("member_role"))
            .join(team_members, team_members.c.team_id == teams.c.team_id)
            .where(team_members.c.user_id == user_id)
            .order_by(teams.c.team_id)
        )
        with self._db.read() as connection:
            rows = [row_dict(row) for row in connection.execute(query)]
            return add_model_spend(connection, _ENTITY, rows, "team_id")

    def _find(self, connection: Connection, team_id: str) -> Record | None:
        row = connection.execute(select(teams).where(teams.c.team_id == team_id)).first()
        if row is None:
            return None
        return add_model_spend(connection, _ENTITY, [row_dict(row)], "team_id")[0]

    def _fetch(self, connection: Connection, team_id: str) -> Record:
        found = self._find(connection, team_id)
        if found is None:
            raise NotFound(f"team {team_id} not found")
        return found

    def _require_team(self, connection: Connection, team_id: str) -> None:
        if connection.scalar(select(teams.c.team_id).where(teams.c.team_id == team_id)) is None:
            raise NotFound(f"team {team_id} not found")

    def _membership(self, connection: Connection, team_id: str, user_id: str) -> Record | None:
        row = connection.execute(select(team_members).where(*_member(team_id, user_id))).first()
        return None if row is None else row_dict(row)

    def _require_membership(self, connection: Connection, team_id: str, user_id: str) -> Record:
        found = self._membership(connection, team_id, user_id)
        if found is None:
            raise NotFound(f"user {user_id} is not a member of team {team_id}")
        return found


def _member(team_id: str, user_id: str) -> tuple[Any, Any]:
    return team_members.c.team_id == team_id, team_members.c.user_id == user_id


def _check_member_role(role: str) -> None:
    if role not in MEMBER_ROLES:
        raise ValueError(f"invalid team member role {role!r}: expected admin or user")
