"""Virtual keys: generate, read, change, block, delete, list and regenerate.

A key is `sk-` + 22 url-safe random characters (128 bits). Only its sha256 (`token`) is stored; the plaintext
is returned by `generate_key` and `regenerate_key` and nowhere else, so a database leak leaks no usable key.
"""

from __future__ import annotations

import contextlib
import re
import secrets
from collections.abc import Collection, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from edgeproxy.admin import fields as f
from edgeproxy.admin import render
from edgeproxy.auth import hash_key
from edgeproxy.errors import InvalidRequestError, NotFoundError
from storage import Conflict, Storage, add_duration

_TOKEN = re.compile(r"^[0-9a-f]{64}$")
LIST_PAGE_SIZE = 1000  # storage's largest page; used when every key of a user or team is wanted


def new_key() -> str:
    # token_urlsafe(16) is 16 random bytes as exactly 22 url-safe base64 characters.
    return "sk-" + secrets.token_urlsafe(16)


def key_name(key: str) -> str:
    """What lists and logs show instead of the key: enough to recognise it, useless to use it."""
    return "sk-..." + key[-4:]


def token_of(key_or_token: Any, param: str = "key") -> str:
    """The stored token for a plaintext key, or the token itself when given its 64-hex form."""
    ident = f.required_text(param, key_or_token)
    return ident if _TOKEN.match(ident) else hash_key(ident)


def _checks(known_models: Collection[str], action: str) -> dict[str, f.Check]:
    checks = {
        **f.shared_checks(known_models),
        "key_alias": f.text,
        "duration": f.duration,
        "soft_budget": f.budget,
        "user_id": f.text,
        "team_id": f.text,
        "aliases": f.alias_map(known_models),
        "allowed_cache_controls": f.string_list,
    }
    if action == "generate":
        checks["key"] = f.virtual_key
    else:
        checks.update(expires=f.moment, spend=f.budget)
    if action == "regenerate":
        checks["new_key"] = f.virtual_key
    return checks


def _apply_duration(values: dict[str, Any]) -> None:
    """`duration` is relative to now: store the absolute `expires` (null duration: never expires)."""
    if "duration" in values:
        duration = values.pop("duration")
        values["expires"] = None if duration is None else add_duration(datetime.now(UTC), duration)


def _check_owners(storage: Storage, values: Mapping[str, Any]) -> None:
    """A key's user is created on first mention (as LiteLLM does); its team must already exist."""
    user_id, team_id = values.get("user_id"), values.get("team_id")
    if team_id is not None and storage.teams.get(team_id) is None:
        raise NotFoundError(f"team {team_id} not found; create it first with /team/new", param="team_id")
    if user_id is not None and storage.users.get(user_id) is None:
        with contextlib.suppress(Conflict):  # created concurrently by another request: just as good
            storage.users.create({"user_id": user_id})


def _with_secret(row: Mapping[str, Any], key: str, **extra: Any) -> dict[str, Any]:
    return {**render.record(row), "key": key, "token_id": row["token"], **extra}


def generate_key(
    storage: Storage, known_models: Collection[str], fields: Mapping[str, Any], created_by: str | None = None
) -> dict[str, Any]:
    """Create a key; the response is the only time its plaintext is shown."""
    values = f.validate(fields, _checks(known_models, "generate"), "key")
    key = values.pop("key", None) or new_key()
    duration = values.get("duration")
    _apply_duration(values)
    _check_owners(storage, values)
    record = {**values, "token": hash_key(key), "key_name": key_name(key), "created_by": created_by}
    row = storage.keys.create(record)
    return _with_secret(row, key, duration=duration)


def find_key(storage: Storage, key_or_token: Any) -> dict[str, Any]:
    """The stored row for a plaintext key or token; 404 when there is none."""
    token = token_of(key_or_token)
    row = storage.keys.get(token)
    if row is None:
        raise NotFoundError(f"key {_shown(key_or_token)} not found", param="key")
    return row


def key_info(storage: Storage, key_or_token: Any) -> dict[str, Any]:
    row = find_key(storage, key_or_token)
    # "key" carries the token, not the plaintext: responses never repeat a secret.
    return {"key": row["token"], "info": render.record(row)}


def update_key(storage: Storage, known_models: Collection[str], fields: Mapping[str, Any]) -> dict[str, Any]:
    """Change any field of the key named by `fields["key"]`."""
    changes = dict(fields)
    token = token_of(changes.pop("key", None))
    values = f.validate(changes, _checks(known_models, "update"), "key")
    _apply_duration(values)
    _check_owners(storage, values)
    return render.record(storage.keys.update(token, values))


def set_key_blocked(storage: Storage, key_or_token: Any, blocked: bool) -> dict[str, Any]:
    return render.record(storage.keys.set_blocked(token_of(key_or_token), blocked))


def find_keys(storage: Storage, keys: Iterable[Any] = (), key_aliases: Iterable[Any] = ()) -> list[dict[str, Any]]:
    """Rows for keys named by key/token or by alias; 404 naming the first that does not exist."""
    rows: dict[str, dict[str, Any]] = {}
    for key in keys:
        row = find_key(storage, key)
        rows[row["token"]] = row
    for alias in key_aliases:
        found = storage.keys.get_by_alias(f.required_text("key_aliases", alias))
        if found is None:
            raise NotFoundError(f"no key has the alias {alias!r}", param="key_aliases")
        rows[found["token"]] = found
    return list(rows.values())


def delete_keys(storage: Storage, keys: Iterable[Any] = (), key_aliases: Iterable[Any] = ()) -> list[str]:
    """Delete keys (all or none are known: a typo must not half-succeed); returns the tokens deleted."""
    rows = find_keys(storage, keys, key_aliases)
    if not rows:
        raise InvalidRequestError("name the keys to delete in 'keys' or 'key_aliases'", param="keys")
    return storage.keys.delete(tokens=[row["token"] for row in rows])


def list_keys(
    storage: Storage,
    page: int = 1,
    size: int = 50,
    user_id: str | None = None,
    team_id: str | None = None,
    key_alias: str | None = None,
) -> dict[str, Any]:
    rows, total = storage.keys.list(page=page, size=size, user_id=user_id, team_id=team_id, key_alias=key_alias)
    return render.page([render.record(row) for row in rows], total, page, size, "keys")


def all_keys(storage: Storage, user_id: str | None = None, team_id: str | None = None) -> list[dict[str, Any]]:
    """Every key of a user or team (for /user/info and /team/info), page by page."""
    found: list[dict[str, Any]] = []
    page = 1
    while True:
        rows, total = storage.keys.list(page=page, size=LIST_PAGE_SIZE, user_id=user_id, team_id=team_id)
        found.extend(render.record(row) for row in rows)
        if len(found) >= total or not rows:
            return found
        page += 1


def regenerate_key(
    storage: Storage, known_models: Collection[str], key_or_token: Any, fields: Mapping[str, Any]
) -> dict[str, Any]:
    """Give a key a new secret (the old one stops working); budgets, spend and alias stay with it.

    `fields` may change other fields at the same time (as LiteLLM's regenerate does) and may bring
    the new key in `new_key`.
    """
    old_token = token_of(key_or_token)
    values = f.validate(fields, _checks(known_models, "regenerate"), "key")
    key = values.pop("new_key", None) or new_key()
    _apply_duration(values)
    _check_owners(storage, values)
    row = storage.keys.regenerate(old_token, hash_key(key), key_name(key))
    if values:
        row = storage.keys.update(row["token"], values)
    return _with_secret(row, key)


def _shown(key_or_token: Any) -> str:
    """Name a key in an error without echoing a plaintext secret."""
    text = str(key_or_token)
    return text if _TOKEN.match(text) else key_name(text)
