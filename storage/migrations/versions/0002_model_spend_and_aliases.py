"""Per-model spend, per-key model aliases and cache controls, per-team model aliases.

Revision ID: 0002
Revises: 0001
Create Date: 2025-01-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "model_spend",
        sa.Column("entity_type", sa.String(8), nullable=False),
        sa.Column("entity_id", sa.String(255), nullable=False),
        sa.Column("model_group", sa.String(255), nullable=False),
        sa.Column("spend", sa.Double(), nullable=False, server_default=sa.text("0")),
        sa.PrimaryKeyConstraint("entity_type", "entity_id", "model_group", name="pk_model_spend"),
    )
    # Existing rows get the server defaults, so NOT NULL is safe to add in one step.
    with op.batch_alter_table("keys") as batch:
        batch.add_column(sa.Column("aliases", JSON, nullable=False, server_default=sa.text("'{}'")))
        batch.add_column(sa.Column("allowed_cache_controls", JSON, nullable=False, server_default=sa.text("'[]'")))
    with op.batch_alter_table("teams") as batch:
        batch.add_column(sa.Column("model_aliases", JSON, nullable=False, server_default=sa.text("'{}'")))


def downgrade() -> None:
    with op.batch_alter_table("teams") as batch:
        batch.drop_column("model_aliases")
    with op.batch_alter_table("keys") as batch:
        batch.drop_column("allowed_cache_controls")
        batch.drop_column("aliases")
    op.drop_table("model_spend")
