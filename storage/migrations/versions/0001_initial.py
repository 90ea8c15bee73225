"""Initial schema: keys, users, teams, team_members, spend_logs, daily_spend.

Revision ID: 0001
Revises:
Create Date: 2025-01-01

Migrations are frozen in time: they spell out their columns instead of importing storage.schema,
which keeps changing.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(JSONB(), "postgresql")
TS = sa.DateTime(timezone=True)
ID = sa.String(255)
EMPTY_LIST = sa.text("'[]'")
EMPTY_OBJECT = sa.text("'{}'")
ZERO = sa.text("0")


def _money(name: str) -> sa.Column[Any]:
    return sa.Column(name, sa.Double(), nullable=False, server_default=ZERO)


def _budget() -> list[sa.Column[Any]]:
    return [
        sa.Column("max_budget", sa.Double()),
        sa.Column("budget_duration", sa.String(16)),
        sa.Column("budget_reset_at", TS),
        _money("spend"),
        _money("total_spend"),
    ]


def _limits() -> list[sa.Column[Any]]:
    return [
        sa.Column("rpm_limit", sa.BigInteger()),
        sa.Column("tpm_limit", sa.BigInteger()),
        sa.Column("max_parallel_requests", sa.Integer()),
    ]


def _timestamps() -> list[sa.Column[Any]]:
    return [sa.Column("created_at", TS, nullable=False), sa.Column("updated_at", TS, nullable=False)]


def upgrade() -> None:
    op.create_table(
        "keys",
        sa.Column("token", sa.String(64), nullable=False),
        sa.Column("key_name", sa.String(64)),
        sa.Column("key_alias", ID),
        sa.Column("models", JSON, nullable=False, server_default=EMPTY_LIST),
        sa.Column("soft_budget", sa.Double()),
        *_budget(),
        sa.Column("expires", TS),
        sa.Column("user_id", ID),
        sa.Column("team_id", ID),
        sa.Column("metadata", JSON, nullable=False, server_default=EMPTY_OBJECT),
        *_limits(),
        sa.Column("blocked", sa.Boolean(), nullable=False, server_default=sa.false()),
        *_timestamps(),
        sa.Column("last_active", TS),
        sa.Column("created_by", ID),
        sa.PrimaryKeyConstraint("token", name="pk_keys"),
        sa.UniqueConstraint("key_alias", name="uq_keys_key_alias"),
    )
    op.create_index("ix_keys_user_id", "keys", ["user_id"])
    op.create_index("ix_keys_team_id", "keys", ["team_id"])

    op.create_table(
        "users",
        sa.Column("user_id", ID, nullable=False),
        sa.Column("user_email", ID),
        sa.Column("user_alias", ID),
        sa.Column("user_role", sa.String(32), nullable=False, server_default="internal_user"),
        *_budget(),
        sa.Column("models", JSON, nullable=False, server_default=EMPTY_LIST),
        *_limits(),
        sa.Column("blocked", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("metadata", JSON, nullable=False, server_default=EMPTY_OBJECT),
        *_timestamps(),
        sa.PrimaryKeyConstraint("user_id", name="pk_users"),
    )

    op.create_table(
        "teams",
        sa.Column("team_id", ID, nullable=False),
        sa.Column("team_alias", ID),
        sa.Column("models", JSON, nullable=False, server_default=EMPTY_LIST),
        *_budget(),
        *_limits(),
        sa.Column("blocked", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("metadata", JSON, nullable=False, server_default=EMPTY_OBJECT),
        *_timestamps(),
        sa.PrimaryKeyConstraint("team_id", name="pk_teams"),
        sa.UniqueConstraint("team_alias", name="uq_teams_team_alias"),
    )

    op.create_table(
        "team_members",
        sa.Column("team_id", ID, nullable=False),
        sa.Column("user_id", ID, nullable=False),
        sa.Column("role", sa.String(16), nullable=False, server_default="user"),
        sa.Column("max_budget_in_team", sa.Double()),
        _money("spend"),
        _money("total_spend"),
        sa.Column("created_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("team_id", "user_id", name="pk_team_members"),
        sa.ForeignKeyConstraint(
            ["team_id"], ["teams.team_id"], name="fk_team_members_team_id_teams", ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.user_id"], name="fk_team_members_user_id_users", ondelete="CASCADE"
        ),
    )
    op.create_index("ix_team_members_user_id", "team_members", ["user_id"])

    op.create_table(
        "spend_logs",
        sa.Column("request_id", ID, nullable=False),
        sa.Column("call_type", sa.String(32), nullable=False, server_default="completion"),
        sa.Column("api_key", sa.String(64)),
        sa.Column("key_alias", ID),
        sa.Column("user_id", ID),
        sa.Column("team_id", ID),
        sa.Column("model_group", ID),
        sa.Column("deployment_id", ID),
        sa.Column("provider", sa.String(64)),
        sa.Column("model", ID),
        sa.Column("prompt_tokens", sa.BigInteger(), nullable=False, server_default=ZERO),
        sa.Column("completion_tokens", sa.BigInteger(), nullable=False, server_default=ZERO),
        sa.Column("total_tokens", sa.BigInteger(), nullable=False, server_default=ZERO),
        sa.Column("cost", sa.Double(), nullable=False, server_default=ZERO),
        sa.Column("start_time", TS, nullable=False),
        sa.Column("end_time", TS),
        sa.Column("duration_ms", sa.Integer()),
        sa.Column("ttft_ms", sa.Integer()),
        sa.Column("cache_hit", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("status", sa.String(16), nullable=False, server_default="success"),
        sa.Column("error", sa.Text()),
        sa.Column("estimated", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("metadata", JSON, nullable=False, server_default=EMPTY_OBJECT),
        sa.PrimaryKeyConstraint("request_id", name="pk_spend_logs"),
    )
    op.create_index("ix_spend_logs_start_time", "spend_logs", ["start_time"])
    for column in ("api_key", "user_id", "team_id", "model_group"):
        op.create_index(f"ix_spend_logs_{column}", "spend_logs", [column, "start_time"])

    op.create_table(
        "daily_spend",
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("api_key", sa.String(64), nullable=False, server_default=""),
        sa.Column("user_id", ID, nullable=False, server_default=""),
        sa.Column("team_id", ID, nullable=False, server_default=""),
        sa.Column("model_group", ID, nullable=False, server_default=""),
        sa.Column("requests", sa.BigInteger(), nullable=False, server_default=ZERO),
        sa.Column("successes", sa.BigInteger(), nullable=False, server_default=ZERO),
        sa.Column("failures", sa.BigInteger(), nullable=False, server_default=ZERO),
        sa.Column("prompt_tokens", sa.BigInteger(), nullable=False, server_default=ZERO),
        sa.Column("completion_tokens", sa.BigInteger(), nullable=False, server_default=ZERO),
        _money("spend"),
        sa.PrimaryKeyConstraint("day", "api_key", "user_id", "team_id", "model_group", name="pk_daily_spend"),
    )


def downgrade() -> None:
    for table in ("daily_spend", "spend_logs", "team_members", "teams", "users", "keys"):
        op.drop_table(table)
