"""`column IN (values)` as SQL whose text does not depend on how many values there are.

Why: `column.in_(values)` renders one `?` per value, so every list length is a different statement, and the
SQLite driver keeps up to 128 prepared statements per pooled connection. The spend writer looks up a batch of
request ids per flush, a different count each time: prepared statements of up to 500 parameters piled up in
the driver's caches (measured: 124 MiB for 10 connections) and the proxy's memory grew for tens of minutes.
One JSON array parameter on SQLite (`json_each`) and one array parameter on PostgreSQL (`= ANY`) keep a
single statement per query, with no limit on the number of values either.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from typing import Any

from sqlalchemy import Connection, Select, any_, func, literal, literal_column, select
from sqlalchemy.dialects import postgresql
from sqlalchemy.sql.elements import ColumnElement

__all__ = ["in_list"]


def in_list(connection: Connection, column: ColumnElement[Any], values: Collection[str]) -> ColumnElement[bool]:
    """`column IN (values)` for string values, one fixed statement on SQLite and PostgreSQL."""
    if connection.dialect.name == "postgresql":
        return column == any_(literal(list(values), type_=postgresql.ARRAY(column.type)))
    members: Select[Any] = select(literal_column("value")).select_from(
        func.json_each(literal(json.dumps(list(values))))
    )
    return column.in_(members.scalar_subquery())
