"""Internal users: budgets and limits shared by all their keys."""

from __future__ import annotations

import builtins
from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy import Connection, delete, select, update

from storage.database import Database
from storage.errors import NotFound
from storage.keys import delete_model_spend
from storage.records import Record, add_model_spend, check_page, count, prepare_create, prepare_update, row_dict
from storage.schema import keys, model_spend, team_members, users

__all__ = ["USER_ROLES", "UserRepository"]

USER_ROLES = frozenset({"proxy_admin", "proxy_admin_viewer", "internal_user", "internal_user_viewer"})
_ENTITY = "user"


class UserRepository:
    """CRUD for users; rows are dicts of the ``users`` columns plus ``model_spend``."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def create(self, record: Mapping[str, Any]) -> Record:
        """Insert a user (role defaults to internal_user); Conflict when user_id is taken."""
        values = prepare_create(users, record, "user_id")
        _check_role(values)
        with self._db.write() as connection:
            connection.execute(users.insert().values(values))
            return self._fetch(connection, values["user_id"])

    def get(self, user_id: str) -> Record | None:
        with self._db.read() as connection:
            return self._find(connection, user_id)

    def list(self, page: int = 1, size: int = 50, user_role: str | None = None) -> tuple[list[Record], int]:
        """One page of users, oldest first, and the total count."""
        offset = check_page(page, size)
        conditions = [users.c.user_role == user_role] if user_role is not None else []
        query = (
            select(users).where(*conditions).order_by(users.c.created_at, users.c.user_id).offset(offset).limit(size)
        )
        with self._db.read() as connection:
            rows = [row_dict(row) for row in connection.execute(query)]
            return add_model_spend(connection, _ENTITY, rows, "user_id"), count(connection, users, *conditions)

    def update(self, user_id: str, fields: Mapping[str, Any]) -> Record:
        """Change some fields; NotFound for an unknown user."""
        values = prepare_update(users, fields, "user_id")
        _check_role(values)
        with self._db.write() as connection:
            result = connection.execute(update(users).where(users.c.user_id == user_id).values(values))
            if result.rowcount == 0:
                raise NotFound(f"user {user_id} not found")
            return self._fetch(connection, user_id)

    def set_blocked(self, user_id: str, blocked: bool) -> Record:
        return self.update(user_id, {"blocked": blocked})

    def delete(self, user_ids: Iterable[str]) -> builtins.list[str]:
        """Delete users with their team memberships and their keys; returns the user ids deleted."""
        ids = sorted(set(user_ids))
        if not ids:
            return []
        with self._db.write() as connection:
            connection.execute(delete(team_members).where(team_members.c.user_id.in_(ids)))
            # A deleted user's keys must stop working, so they go too (LiteLLM does the same).
            tokens = connection.scalars(delete(keys).where(keys.c.user_id.in_(ids)).returning(keys.c.token))
            delete_model_spend(connection, tokens)
            connection.execute(
                delete(model_spend).where(model_spend.c.entity_type == _ENTITY, model_spend.c.entity_id.in_(ids))
            )
            return sorted(connection.scalars(delete(users).where(users.c.user_id.in_(ids)).returning(users.c.user_id)))

    def _find(self, connection: Connection, user_id: str) -> Record | None:
        row = connection.execute(select(users).where(users.c.user_id == user_id)).first()
        if row is None:
            return None
        return add_model_spend(connection, _ENTITY, [row_dict(row)], "user_id")[0]

    def _fetch(self, connection: Connection, user_id: str) -> Record:
        found = self._find(connection, user_id)
        if found is None:
            raise NotFound(f"user {user_id} not found")
        return found


def _check_role(values: dict[str, Any]) -> None:
    if "user_role" in values and values["user_role"] is None:
        values["user_role"] = "internal_user"
    role = values.get("user_role", "internal_user")
    if role not in USER_ROLES:
        raise ValueError(f"invalid user_role {role!r}: expected one of {', '.join(sorted(USER_ROLES))}")
