"""Alembic environment: runs on the connection storage.migrate hands over in config.attributes.

There is deliberately no URL handling here: storage.migrate owns connecting and locking, so the same
code path works from a source checkout, an installed wheel and a PyInstaller bundle.
"""

from __future__ import annotations

from alembic import context

from storage.schema import metadata

connection = context.config.attributes.get("connection")
if connection is None or context.is_offline_mode():
    raise RuntimeError("run storage migrations through storage.migrate.migrate(engine)")

context.configure(
    connection=connection,
    target_metadata=metadata,
    # SQLite cannot ALTER most things in place; batch mode copies the table instead.
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
