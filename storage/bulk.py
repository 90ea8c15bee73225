"""Inserting many rows while skipping those whose key already exists, and learning which were new."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Column, Connection, Select, Table, bindparam, func, literal_column, select
from sqlalchemy.dialects import postgresql, sqlite

__all__ = ["insert_new"]


def insert_new(connection: Connection, table: Table, key: Column[Any], rows: Sequence[dict[str, Any]]) -> set[Any]:
    """INSERT ... ON CONFLICT (key) DO NOTHING RETURNING key: the keys of the rows actually inserted.

    RETURNING is what makes this exact under concurrency: a row another transaction is inserting at the
    same moment makes ours wait for it, then count as a duplicate, never as ours.
    """
    if not rows:
        return set()
    if connection.dialect.name == "postgresql":
        return _insert_new_postgresql(connection, table, key, rows)
    statement = sqlite.insert(table).on_conflict_do_nothing(index_elements=[key]).returning(key)
    return set(connection.scalars(statement, list(rows)))


def _insert_new_postgresql(
    connection: Connection, table: Table, key: Column[Any], rows: Sequence[dict[str, Any]]
) -> set[Any]:
    # One statement with one array per column, unpacked by unnest(), instead of executemany: psycopg
    # re-parses a multi-row VALUES statement with thousands of placeholders in Python on every batch
    # (measured 4x slower for 5000 rows). Rows keep their order, so lock order stays the caller's.
    columns = list(table.c)
    arrays = [bindparam(f"a_{column.name}", type_=postgresql.ARRAY(column.type)) for column in columns]
    source: Select[Any] = select(literal_column("*")).select_from(func.unnest(*arrays).alias("batch"))
    statement = (
        postgresql.insert(table)
        .from_select([column.name for column in columns], source)
        .on_conflict_do_nothing(index_elements=[key])
        .returning(key)
    )
    params = {f"a_{column.name}": [row.get(column.name) for row in rows] for column in columns}
    return set(connection.scalars(statement, params))
