"""Virtual keys: stored by the sha256 hex digest of the plaintext key (``token``), never the key itself."""

from __future__ import annotations

import builtins
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, delete, or_, select, update

from storage.coltypes import utc_now
from storage.database import Database
from storage.errors import NotFound
from storage.inlist import in_list
from storage.records import Record, add_model_spend, check_page, count, prepare_create, prepare_update, row_dict
from storage.schema import keys, model_spend

__all__ = ["KeyRepository"]

_ENTITY = "key"


class KeyRepository:
    """CRUD for virtual keys. Each method is one short transaction; rows are plain dicts with
    every column of ``keys`` plus ``model_spend`` ({model_group: lifetime spend})."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def create(self, record: Mapping[str, Any]) -> Record:
        """Insert a key; Conflict when the token or key_alias is taken."""
        values = prepare_create(keys, record, "token")
        with self._db.write() as connection:
            connection.execute(keys.insert().values(values))
            return self._fetch(connection, values["token"])

    def get(self, token: str) -> Record | None:
        with self._db.read() as connection:
            return self._find(connection, keys.c.token == token)

    def get_by_alias(self, key_alias: str) -> Record | None:
        with self._db.read() as connection:
            return self._find(connection, keys.c.key_alias == key_alias)

    def list(
        self,
        page: int = 1,
        size: int = 50,
        user_id: str | None = None,
        team_id: str | None = None,
        key_alias: str | None = None,
    ) -> tuple[list[Record], int]:
        """One page of keys, oldest first (stable across pages), and the total matching the filters."""
        offset = check_page(page, size)
        conditions = [
            column == value
            for column, value in ((keys.c.user_id, user_id), (keys.c.team_id, team_id), (keys.c.key_alias, key_alias))
            if value is not None
        ]
        query = select(keys).where(*conditions).order_by(keys.c.created_at, keys.c.token).offset(offset).limit(size)
        with self._db.read() as connection:
            rows = [row_dict(row) for row in connection.execute(query)]
            return add_model_spend(connection, _ENTITY, rows, "token"), count(connection, keys, *conditions)

    def update(self, token: str, fields: Mapping[str, Any]) -> Record:
        """Change some fields; NotFound for an unknown token, Conflict for a key_alias in use."""
        values = prepare_update(keys, fields, "token")
        with self._db.write() as connection:
            result = connection.execute(update(keys).where(keys.c.token == token).values(values))
            if result.rowcount == 0:
                raise NotFound(f"key {token} not found")
            return self._fetch(connection, token)

    def set_blocked(self, token: str, blocked: bool) -> Record:
        return self.update(token, {"blocked": blocked})

    def delete(self, tokens: Iterable[str] = (), aliases: Iterable[str] = ()) -> builtins.list[str]:
        """Delete keys given by token or alias; returns the tokens actually deleted (unknown ones are skipped)."""
        tokens, aliases = list(tokens), list(aliases)
        if not tokens and not aliases:
            return []
        match = or_(keys.c.token.in_(tokens), keys.c.key_alias.in_(aliases))
        with self._db.write() as connection:
            deleted = sorted(connection.scalars(delete(keys).where(match).returning(keys.c.token)))
            delete_model_spend(connection, deleted)
            return deleted

    def regenerate(self, old_token: str, new_token: str, new_key_name: str) -> Record:
        """Replace a key's secret: the row (budgets, spend, alias) moves to the new token."""
        changes = {"token": new_token, "key_name": new_key_name, "updated_at": utc_now()}
        with self._db.write() as connection:
            result = connection.execute(update(keys).where(keys.c.token == old_token).values(changes))
            if result.rowcount == 0:
                raise NotFound(f"key {old_token} not found")
            connection.execute(
                update(model_spend)
                .where(model_spend.c.entity_type == _ENTITY, model_spend.c.entity_id == old_token)
                .values(entity_id=new_token)
            )
            return self._fetch(connection, new_token)

    def touch_last_active(self, tokens: Iterable[str], at: datetime | None = None) -> None:
        """Record that these keys were just used (batched by the caller; sorted to keep lock order)."""
        ordered = sorted(set(tokens))
        if not ordered:
            return
        with self._db.write() as connection:
            used = in_list(connection, keys.c.token, ordered)
            connection.execute(update(keys).where(used).values(last_active=at or utc_now()))

    def _find(self, connection: Connection, condition: Any) -> Record | None:
        row = connection.execute(select(keys).where(condition)).first()
        if row is None:
            return None
        return add_model_spend(connection, _ENTITY, [row_dict(row)], "token")[0]

    def _fetch(self, connection: Connection, token: str) -> Record:
        found = self._find(connection, keys.c.token == token)
        if found is None:  # only if deleted concurrently between our statements
            raise NotFound(f"key {token} not found")
        return found


def delete_model_spend(connection: Connection, tokens: Iterable[str]) -> None:
    """Forget per-model spend of deleted keys (used by user and team deletion too)."""
    ordered = list(tokens)
    if ordered:
        connection.execute(
            delete(model_spend).where(model_spend.c.entity_type == _ENTITY, model_spend.c.entity_id.in_(ordered))
        )
