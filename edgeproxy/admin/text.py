"""The command line's plain text: option values → API fields, and records → tables and detail lists.

No click here (the CLI module echoes what these return), so the formatting is testable on its own.
"""

from __future__ import annotations

import json
from typing import Any

from edgeproxy.errors import InvalidRequestError

# Options where the word "none" clears the value (JSON null in the API).
NULLABLE = frozenset(
    {"max_budget", "soft_budget", "budget_duration", "duration", "rpm_limit", "tpm_limit", "max_parallel_requests"}
    | {"key_alias", "team_alias", "user_alias", "user_email", "expires", "max_budget_in_team"}
)
JSON_OPTIONS = frozenset({"metadata", "aliases", "model_aliases"})  # options given as JSON text
KEY_COLUMNS = {
    "key_name": "KEY",
    "key_alias": "ALIAS",
    "user_id": "USER",
    "team_id": "TEAM",
    "models": "MODELS",
    "spend": "SPEND",
    "max_budget": "BUDGET",
    "expires": "EXPIRES",
    "blocked": "BLOCKED",
    "token": "TOKEN",
}
USER_COLUMNS = {"user_id": "USER", "user_role": "ROLE", "user_email": "EMAIL", "models": "MODELS"}
USER_COLUMNS |= {"spend": "SPEND", "max_budget": "BUDGET", "blocked": "BLOCKED"}
TEAM_COLUMNS = {"team_id": "TEAM", "team_alias": "ALIAS", "models": "MODELS", "spend": "SPEND"}
TEAM_COLUMNS |= {"max_budget": "BUDGET", "blocked": "BLOCKED", "members": "MEMBERS"}


def option_fields(options: dict[str, Any]) -> dict[str, Any]:
    """Given options → API fields. Options left out are not sent, so an update changes only what was given."""
    fields: dict[str, Any] = {}
    for name, value in options.items():
        if value is None:
            continue
        if name in NULLABLE and value == "none":
            fields[name] = None
        elif name in ("models", "teams"):
            fields[name] = [item.strip() for item in value.split(",") if item.strip()]
        elif name in JSON_OPTIONS:
            try:
                fields[name] = json.loads(value)
            except json.JSONDecodeError as error:
                option = "--" + name.replace("_", "-")
                raise InvalidRequestError(f"{option} is not valid JSON: {error}", param=name) from None
        else:
            fields[name] = value
    return fields


def cell(value: Any) -> str:
    if value is None or value == []:
        return "-"
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    if isinstance(value, float):
        return f"{value:.4f}".rstrip("0").rstrip(".")
    if isinstance(value, dict):
        return json.dumps(value)
    return str(value)


def table(rows: list[dict[str, Any]], columns: dict[str, str]) -> str:
    cells = [[cell(row.get(field)) for field in columns] for row in rows]
    widths = [max([len(title), *(len(line[i]) for line in cells)]) for i, title in enumerate(columns.values())]
    lines = [list(columns.values()), *cells]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in lines)


def details(record: dict[str, Any]) -> str:
    width = max((len(name) for name in record), default=0)
    return "\n".join(f"{name:<{width}}  {cell(value)}" for name, value in record.items())


def secret(result: dict[str, Any]) -> str:
    """A new key: the secret first and loud, then its other fields."""
    rest = {name: value for name, value in result.items() if name not in ("key", "token_id")}
    return f"key: {result['key']}\n  (shown once: store it now; only its hash is kept)\n{details(rest)}"


def team(record: dict[str, Any]) -> str:
    members = record.get("members_with_roles") or []
    shown = ", ".join(f"{m['user_id']} ({m['role']})" for m in members) or "-"
    hidden = ("members_with_roles", "updated_users", "updated_team_memberships")
    rest = {name: value for name, value in record.items() if name not in hidden}
    return f"{details(rest)}\nmembers: {shown}"
