"""Validating management input: each field is checked (and coerced) by one small function.

Every failure is a 400 `InvalidRequestError` whose `param` names the field, so API clients and the CLI
can point at exactly what to fix. Numbers may arrive as JSON numbers or as numeric strings (LiteLLM's
pydantic models coerce "10" too, and the CLI passes its options through as text to share this code).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Mapping
from datetime import UTC, datetime
from typing import Any

from edgeproxy.aliases import AliasError, model_groups, parse_aliases, stored_form
from edgeproxy.errors import InvalidRequestError
from storage import parse_duration

Check = Callable[[str, Any], Any]

ALL_MODELS = ("all-proxy-models", "*")  # keyauth treats these (and []) as "every model"
USER_ROLES = ("proxy_admin", "proxy_admin_viewer", "internal_user", "internal_user_viewer")
MEMBER_ROLES = ("admin", "user")
MAX_ID_CHARS = 255  # the width of id and alias columns


def validate(fields: Mapping[str, Any], checks: Mapping[str, Check], entity: str) -> dict[str, Any]:
    """Check every field with its function; an unknown field is refused by name (typos must not be ignored).

    An unknown field left empty (null, [], {}) is dropped: LiteLLM's clients send many optional fields as null,
    and a null asks for nothing we would be ignoring.
    """
    fields = {name: value for name, value in fields.items() if name in checks or value not in (None, [], {}, "")}
    unknown = sorted(set(fields) - set(checks))
    if unknown:
        raise InvalidRequestError(
            f"unknown field {unknown[0]!r} for a {entity}; accepted fields: {', '.join(sorted(checks))}",
            param=unknown[0],
        )
    return {name: checks[name](name, value) for name, value in fields.items()}


def _bad(name: str, what: str, value: Any) -> InvalidRequestError:
    return InvalidRequestError(f"{name!r} must be {what}, got {value!r}", param=name)


def text(name: str, value: Any) -> str | None:
    """An optional id, alias or email: a non-empty string that fits its column, or null."""
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise _bad(name, "a non-empty string", value)
    if len(value) > MAX_ID_CHARS:
        raise InvalidRequestError(f"{name!r} is longer than {MAX_ID_CHARS} characters", param=name)
    return value.strip()


def required_text(name: str, value: Any) -> str:
    found = text(name, value)
    if found is None:
        raise InvalidRequestError(f"missing required field {name!r}", param=name)
    return found


def _number(name: str, value: Any, what: str) -> float:
    if isinstance(value, bool):  # bool is an int in Python, but true is no budget
        raise _bad(name, what, value)
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            raise _bad(name, what, value) from None
    if not isinstance(value, int | float) or not math.isfinite(value):
        raise _bad(name, what, value)
    return value


def budget(name: str, value: Any) -> float | None:
    """USD amounts: finite and not negative (a negative budget would block every request)."""
    if value is None:
        return None
    amount = _number(name, value, "a number of USD >= 0")
    if amount < 0:
        raise _bad(name, "a number of USD >= 0", value)
    return float(amount)


def limit(name: str, value: Any) -> int | None:
    """rpm/tpm/parallel limits: whole numbers >= 0, or null for no limit."""
    if value is None:
        return None
    number = _number(name, value, "a whole number >= 0")
    if number < 0 or number != int(number):
        raise _bad(name, "a whole number >= 0", value)
    return int(number)


def duration(name: str, value: Any) -> str | None:
    """`30s`, `30m`, `30h`, `30d`, `2w`, `1mo`, or null."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise _bad(name, "a duration such as 30s, 30m, 30h, 30d, 2w or 1mo", value)
    try:
        parse_duration(value)
    except ValueError as error:
        raise InvalidRequestError(f"{name!r}: {error}", param=name) from None
    return value.strip()


def flag(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise _bad(name, "true or false", value)


def obj(name: str, value: Any) -> dict[str, Any]:
    """metadata: a JSON object (null means empty)."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _bad(name, "a JSON object", value)
    return value


def string_list(name: str, value: Any) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise _bad(name, "a list of strings", value)
    return value


def user_role(name: str, value: Any) -> str:
    if value is None:  # LiteLLM clients send null for "the default"
        return "internal_user"
    if value not in USER_ROLES:
        raise InvalidRequestError(f"{name!r} must be one of {', '.join(USER_ROLES)}, got {value!r}", param=name)
    return str(value)


def member_role(name: str, value: Any) -> str:
    if value is None:
        return "user"
    if value not in MEMBER_ROLES:
        raise InvalidRequestError(f"{name!r} must be admin or user, got {value!r}", param=name)
    return str(value)


def virtual_key(name: str, value: Any) -> str | None:
    """A bring-your-own key: it must look like ours so clients and logs treat it alike."""
    if value is None:
        return None
    if not isinstance(value, str) or not value.startswith("sk-") or len(value) < 8 or value != value.strip():
        raise _bad(name, "a key starting with 'sk-' (at least 8 characters, no spaces)", value)
    return value


def moment(name: str, value: Any) -> datetime | None:
    """An ISO 8601 timestamp (naive ones are UTC), or null."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            raise _bad(name, "an ISO 8601 timestamp such as 2030-01-31T00:00:00Z", value) from None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    raise _bad(name, "an ISO 8601 timestamp such as 2030-01-31T00:00:00Z", value)


def models(known: Collection[str]) -> Check:
    """A list of model names this proxy serves; [] (or all-proxy-models) means every model."""

    def check(name: str, value: Any) -> list[str]:
        names = string_list(name, value)
        unknown = [m for m in names if m not in known and m not in ALL_MODELS]
        if unknown:
            raise InvalidRequestError(
                f"unknown model {unknown[0]!r} in {name!r}; valid: {', '.join([*sorted(known), ALL_MODELS[0]])}",
                param=name,
            )
        return list(dict.fromkeys(names))  # drop repeats, keep order

    return check


def alias_map(known: Collection[str]) -> Check:
    """Model aliases (a key's `aliases`, a team's `model_aliases`): alias -> an existing model group.

    Stored in one normal form ("alias": "group", or {"model", "hidden": true} for hidden ones); an alias naming
    no model group, or another alias, is refused with `param` pointing at that entry.
    """
    groups = model_groups(known)

    def check(name: str, value: Any) -> dict[str, Any]:
        try:
            return stored_form(parse_aliases(value, name, groups))
        except AliasError as error:
            raise InvalidRequestError(str(error), param=error.path) from None

    return check


def query_int(name: str, raw: str | None, default: int, minimum: int = 1, maximum: int = 1000) -> int:
    """A paging parameter from a query string or a CLI option."""
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except (TypeError, ValueError):
        raise _bad(name, "a whole number", raw) from None
    if not minimum <= value <= maximum:
        raise InvalidRequestError(f"{name!r} must be between {minimum} and {maximum}, got {value}", param=name)
    return value


def shared_checks(known_models: Collection[str]) -> dict[str, Check]:
    """Budget, limit and access fields that keys, users and teams all have."""
    return {
        "models": models(known_models),
        "max_budget": budget,
        "budget_duration": duration,
        "rpm_limit": limit,
        "tpm_limit": limit,
        "max_parallel_requests": limit,
        "blocked": flag,
        "metadata": obj,
    }
