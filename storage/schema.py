"""The database schema (SQLAlchemy Core). Migrations in storage/migrations must produce exactly this;
tests/storage/test_migrations.py compares the two.

Money is stored as double precision floats (``Double``), like LiteLLM: per-token prices are around 1e-7 USD,
so a fixed-scale Numeric would either round them away or need an unusual scale, and nothing here needs
decimal-exact accounting. Increments are summed with ``math.fsum`` before they reach the database.

Missing ids in ``daily_spend`` are stored as '' rather than NULL because NULLs never collide in a unique
constraint, which would break the upsert on both databases.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Date,
    Double,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    false,
    text,
)

from storage.coltypes import JSONValue, UTCDateTime

__all__ = [
    "daily_spend",
    "keys",
    "metadata",
    "model_spend",
    "spend_logs",
    "team_members",
    "teams",
    "users",
]

# Deterministic constraint names, so migrations can refer to them on both databases.
metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_name)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

ID = String(255)
EMPTY_LIST = text("'[]'")
EMPTY_OBJECT = text("'{}'")
ZERO = text("0")


def _money(name: str) -> Column[Any]:
    return Column(name, Double, nullable=False, server_default=ZERO)


def _limits() -> list[Column[Any]]:
    return [
        Column("rpm_limit", BigInteger),
        Column("tpm_limit", BigInteger),
        Column("max_parallel_requests", Integer),
    ]


def _budget() -> list[Column[Any]]:
    return [
        Column("max_budget", Double),
        Column("budget_duration", String(16)),
        Column("budget_reset_at", UTCDateTime),
        _money("spend"),  # the current budget window; zeroed by SpendRepository.reset_budgets
        _money("total_spend"),  # lifetime, never reset
    ]


def _timestamps() -> list[Column[Any]]:
    return [
        Column("created_at", UTCDateTime, nullable=False),
        Column("updated_at", UTCDateTime, nullable=False),
    ]


keys = Table(
    "keys",
    metadata,
    Column("token", String(64), primary_key=True),  # sha256 hex of the plaintext key
    Column("key_name", String(64)),
    Column("key_alias", ID, unique=True),
    Column("models", JSONValue, nullable=False, server_default=EMPTY_LIST),
    Column("soft_budget", Double),
    *_budget(),
    Column("expires", UTCDateTime),
    Column("user_id", ID, index=True),
    Column("team_id", ID, index=True),
    Column("metadata", JSONValue, nullable=False, server_default=EMPTY_OBJECT),
    *_limits(),
    Column("blocked", Boolean, nullable=False, server_default=false()),
    Column("aliases", JSONValue, nullable=False, server_default=EMPTY_OBJECT),
    Column("allowed_cache_controls", JSONValue, nullable=False, server_default=EMPTY_LIST),
    *_timestamps(),
    Column("last_active", UTCDateTime),
    Column("created_by", ID),
)

users = Table(
    "users",
    metadata,
    Column("user_id", ID, primary_key=True),
    Column("user_email", ID),
    Column("user_alias", ID),
    Column("user_role", String(32), nullable=False, server_default="internal_user"),
    *_budget(),
    Column("models", JSONValue, nullable=False, server_default=EMPTY_LIST),
    *_limits(),
    Column("blocked", Boolean, nullable=False, server_default=false()),
    Column("metadata", JSONValue, nullable=False, server_default=EMPTY_OBJECT),
    *_timestamps(),
)

teams = Table(
    "teams",
    metadata,
    Column("team_id", ID, primary_key=True),
    Column("team_alias", ID, unique=True),
    Column("models", JSONValue, nullable=False, server_default=EMPTY_LIST),
    *_budget(),
    *_limits(),
    Column("blocked", Boolean, nullable=False, server_default=false()),
    Column("model_aliases", JSONValue, nullable=False, server_default=EMPTY_OBJECT),
    Column("metadata", JSONValue, nullable=False, server_default=EMPTY_OBJECT),
    *_timestamps(),
)

team_members = Table(
    "team_members",
    metadata,
    Column("team_id", ID, ForeignKey("teams.team_id", ondelete="CASCADE"), primary_key=True),
    Column("user_id", ID, ForeignKey("users.user_id", ondelete="CASCADE"), primary_key=True, index=True),
    Column("role", String(16), nullable=False, server_default="user"),
    Column("max_budget_in_team", Double),
    _money("spend"),
    _money("total_spend"),
    Column("created_at", UTCDateTime, nullable=False),
)

spend_logs = Table(
    "spend_logs",
    metadata,
    Column("request_id", ID, primary_key=True),
    Column("call_type", String(32), nullable=False, server_default="completion"),
    Column("api_key", String(64)),
    Column("key_alias", ID),
    Column("user_id", ID),
    Column("team_id", ID),
    Column("model_group", ID),
    Column("deployment_id", ID),
    Column("provider", String(64)),
    Column("model", ID),
    Column("prompt_tokens", BigInteger, nullable=False, server_default=ZERO),
    Column("completion_tokens", BigInteger, nullable=False, server_default=ZERO),
    Column("total_tokens", BigInteger, nullable=False, server_default=ZERO),
    Column("cost", Double, nullable=False, server_default=ZERO),
    Column("start_time", UTCDateTime, nullable=False),
    Column("end_time", UTCDateTime),
    Column("duration_ms", Integer),
    Column("ttft_ms", Integer),
    Column("cache_hit", Boolean, nullable=False, server_default=false()),
    Column("status", String(16), nullable=False, server_default="success"),
    Column("error", Text),
    Column("estimated", Boolean, nullable=False, server_default=false()),
    Column("metadata", JSONValue, nullable=False, server_default=EMPTY_OBJECT),
    # The logs view filters by one of these and sorts newest first: (filter, start_time) serves both.
    Index("ix_spend_logs_start_time", "start_time"),
    Index("ix_spend_logs_api_key", "api_key", "start_time"),
    Index("ix_spend_logs_user_id", "user_id", "start_time"),
    Index("ix_spend_logs_team_id", "team_id", "start_time"),
    Index("ix_spend_logs_model_group", "model_group", "start_time"),
)

daily_spend = Table(
    "daily_spend",
    metadata,
    Column("day", Date, primary_key=True),
    Column("api_key", String(64), primary_key=True, server_default=""),
    Column("user_id", ID, primary_key=True, server_default=""),
    Column("team_id", ID, primary_key=True, server_default=""),
    Column("model_group", ID, primary_key=True, server_default=""),
    Column("requests", BigInteger, nullable=False, server_default=ZERO),
    Column("successes", BigInteger, nullable=False, server_default=ZERO),
    Column("failures", BigInteger, nullable=False, server_default=ZERO),
    Column("prompt_tokens", BigInteger, nullable=False, server_default=ZERO),
    Column("completion_tokens", BigInteger, nullable=False, server_default=ZERO),
    _money("spend"),
)

# Lifetime spend per model for each key, user and team (LiteLLM's model_spend). Not reset with the budget.
model_spend = Table(
    "model_spend",
    metadata,
    Column("entity_type", String(8), primary_key=True),  # key | user | team
    Column("entity_id", ID, primary_key=True),
    Column("model_group", ID, primary_key=True),
    _money("spend"),
)
