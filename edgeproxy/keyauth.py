"""Virtual keys on the hot path: a known key is answered from memory, never from the database.

Entries are loaded once (key, its user and its team in one thread hop) and kept for `key_cache_ttl`
seconds. Changes made through this instance invalidate at once; changes made elsewhere (another instance,
the CLI) are picked up by the change poller within about a second, or when the entry expires. When the
database is down, an expired entry keeps serving until it comes back: cached keys keep flowing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import trio

from edgeproxy.aliases import AliasMap
from edgeproxy.auth import Principal, hash_key
from edgeproxy.db import Db
from edgeproxy.errors import AuthenticationError, ServiceUnavailableError
from storage import Storage

log = logging.getLogger("edgeproxy.keyauth")
NEGATIVE_TTL_S = 2.0  # unknown keys: enough to blunt a flood of bad keys, short enough for a new key
ALL_MODELS = ("all-proxy-models", "*")


@dataclass(frozen=True, slots=True)
class KeyBundle:
    key: Mapping[str, Any] | None
    user: Mapping[str, Any] | None
    team: Mapping[str, Any] | None
    member: Mapping[str, Any] | None = None


def load_bundle(storage: Storage, token: str) -> KeyBundle:
    key = storage.keys.get(token)
    if key is None:
        return KeyBundle(None, None, None)
    user = storage.users.get(key["user_id"]) if key.get("user_id") else None
    team = storage.teams.get(key["team_id"]) if key.get("team_id") else None
    member = None
    if team is not None and user is not None:
        member = next((m for m in storage.teams.members(team["team_id"]) if m["user_id"] == user["user_id"]), None)
    return KeyBundle(key, user, team, member)


def allowed_models(*lists: Any, configured: AliasMap | None = None) -> frozenset[str] | None:
    """Key models ∩ team models ∩ user models; an empty list (or all-proxy-models) allows everything.

    A name in a list that is one of the config's aliases stands for its target group: access is decided on
    groups (aliases.py). Only the config's aliases count here, never a key's or team's own, which would let
    whoever sets those widen a list an admin set.
    """
    allowed: frozenset[str] | None = None
    for models in lists:
        if not models or any(m in ALL_MODELS for m in models):
            continue
        groups = frozenset(models) if configured is None else frozenset(configured.resolve(m) for m in models)
        allowed = groups if allowed is None else allowed & groups
    return allowed


def principal_for(
    bundle: KeyBundle, now: datetime, aliases: AliasMap | None = None, configured: AliasMap | None = None
) -> Principal:
    """The caller behind a key, or 401. `aliases`: the key's effective alias map (`effective_aliases`);
    `configured`: the config's alone (what allow-lists may name)."""
    key, user, team = bundle.key, bundle.user, bundle.team
    if key is None:
        raise AuthenticationError("invalid API key")
    alias = key.get("key_alias") or key.get("key_name")
    if key.get("blocked"):
        raise AuthenticationError(f"key {alias} is blocked")
    if _expired(bundle, now):
        raise AuthenticationError(f"key {alias} expired at {key['expires'].isoformat()}")
    if user is not None and user.get("blocked"):
        raise AuthenticationError(f"user {user['user_id']} is blocked")
    if team is not None and team.get("blocked"):
        raise AuthenticationError(f"team {team['team_id']} is blocked")
    return Principal(
        token=key["token"],
        key_alias=key.get("key_alias"),
        key_name=key.get("key_name"),
        user_id=key.get("user_id"),
        team_id=key.get("team_id"),
        user_role=(user or {}).get("user_role"),
        models=allowed_models(
            key.get("models"), (team or {}).get("models"), (user or {}).get("models"), configured=configured
        ),
        aliases=aliases,
        key=key,
        user=user,
        team=team,
        member=bundle.member,
    )


def _expired(bundle: KeyBundle, now: datetime) -> bool:
    expires = (bundle.key or {}).get("expires")
    return expires is not None and expires <= now


def effective_aliases(bundle: KeyBundle, configured: AliasMap) -> AliasMap:
    """Key aliases over team model_aliases over the config's model_group_alias."""
    return configured.overridden_by((bundle.team or {}).get("model_aliases"), (bundle.key or {}).get("aliases"))


@dataclass(slots=True)
class _Entry:
    bundle: KeyBundle
    loaded_at: float
    aliases: AliasMap  # merged once per load, not per request
    principal: Principal | None = None  # built once per load; only the expiry is checked per request


class KeyAuth:
    def __init__(
        self,
        db: Db,
        ttl_s: float,
        now: Callable[[], datetime] | None = None,
        aliases: AliasMap | None = None,
    ) -> None:
        self._db = db
        self._ttl_s = ttl_s
        self._now = now or (lambda: datetime.now(UTC))
        self.aliases = aliases or AliasMap()  # the config's model_group_alias
        self._entries: dict[str, _Entry] = {}
        self.loads = 0  # database round trips made for keys (tests show the hot path makes none)

    async def principal(self, key: str) -> Principal:
        token = hash_key(key)
        entry = self._entries.get(token)
        age = trio.current_time() - entry.loaded_at if entry else None
        ttl = self._ttl_s if entry and entry.bundle.key is not None else NEGATIVE_TTL_S
        if entry is None or (age is not None and age > ttl):
            entry = await self._load(token, entry)
        now = self._now()
        principal = entry.principal
        if principal is not None and not _expired(entry.bundle, now):
            return principal
        configured = self.aliases if self.aliases.targets else None  # most configs have none: skip the lookups
        principal = entry.principal = principal_for(entry.bundle, now, entry.aliases, configured)
        return principal

    async def _load(self, token: str, stale: _Entry | None) -> _Entry:
        self.loads += 1
        try:
            bundle = await self._db.run(load_bundle, self._db.storage, token)
        except ServiceUnavailableError:
            if stale is not None and stale.bundle.key is not None:
                log.warning("database unavailable: serving a cached key past its refresh time")
                return stale
            raise
        entry = _Entry(bundle, trio.current_time(), effective_aliases(bundle, self.aliases))
        self._entries[token] = entry
        return entry

    def invalidate(self, *tokens: str) -> None:
        for token in tokens:
            self._entries.pop(token, None)

    def invalidate_entities(self, user_ids: set[str] = frozenset(), team_ids: set[str] = frozenset()) -> None:  # type: ignore[assignment]
        """Drop every cached key belonging to these users or teams (their limits, roles or blocks changed)."""
        for token, entry in list(self._entries.items()):
            key = entry.bundle.key or {}
            if key.get("user_id") in user_ids or key.get("team_id") in team_ids:
                del self._entries[token]

    def invalidate_all(self) -> None:
        self._entries.clear()
