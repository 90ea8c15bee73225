"""The application object: everything a request needs, built once at startup inside the trio run.

No module-level mutable state: handlers reach this object through the Quart app.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import trio

from edgeproxy.auth import MASTER, Headers, Principal, extract_key, missing_key_error, same_secret
from edgeproxy.calls import CallRecord, Calls
from edgeproxy.config import Config
from edgeproxy.db import Db
from edgeproxy.errors import InvalidRequestError, ProxyError
from edgeproxy.keyauth import KeyAuth
from edgeproxy.router import Router
from edgeproxy.upstream import Upstreams
from storage import Storage, StorageError
from storage.changes import change_marker

CHANGE_POLL_INTERVAL_S = 1.0


class StartupError(Exception):
    """The proxy cannot start; the message is one line saying why and what to do."""


log = logging.getLogger("edgeproxy.gateway")


@dataclass
class Gateway:
    config: Config
    router: Router
    upstreams: Upstreams
    db: Db
    keys: KeyAuth = field(init=False)
    calls: Calls = field(init=False)
    started_at: float = field(default_factory=trio.current_time)

    def __post_init__(self) -> None:
        self.calls = Calls(self.router, self.upstreams, self.on_call_finished)
        self.keys = KeyAuth(self.db, self.config.general.key_cache_ttl_s)

    @property
    def storage(self) -> Storage:
        return self.db.storage

    @property
    def known_models(self) -> list[str]:
        """Model names a key may be limited to: groups and aliases."""
        return self.router.group_names() + list(self.config.router.model_group_alias)

    async def authenticate(self, headers: Headers) -> Principal:
        key = extract_key(headers)
        if key is None:
            raise missing_key_error()
        master = self.config.general.master_key
        if master is not None and same_secret(key, master):
            return MASTER
        return await self.keys.principal(key)

    def resolve_model(self, requested: str, principal: Principal) -> str:
        """The model group a request names, or 400 listing what the caller may use."""
        group = self.config.router.model_group_alias.get(requested, requested)
        if not self.router.has_group(group):
            usable = [g for g in self.router.group_names() if principal.may_use(g)]
            raise InvalidRequestError(f"unknown model {requested!r}; available: {', '.join(usable)}", param="model")
        principal.check_model(group)
        return group

    def visible_models(self, principal: Principal) -> list[str]:
        names = [g for g in self.router.group_names() if principal.may_use(g)]
        router = self.config.router
        aliases = [
            alias
            for alias, target in router.model_group_alias.items()
            if alias not in router.hidden_aliases and principal.may_use(target)
        ]
        return names + [a for a in aliases if a not in names]

    async def readiness(self) -> dict[str, object]:
        """Ready means every dependency we were configured with answers."""
        try:
            with trio.fail_after(5):
                await self.db.run(self.storage.ping)
            db = "connected"
        except (ProxyError, trio.TooSlowError):
            db = "unreachable"
        return {
            "status": "healthy" if db == "connected" else "unhealthy",
            "db": db,
            "db_backend": self.storage.dialect,
            "cache": "not configured",
        }

    async def serve_change_poller(self, interval_s: float = CHANGE_POLL_INTERVAL_S) -> None:
        """Notice key, user and team changes made by other instances or the CLI within about a second."""
        marker = None
        while True:
            try:
                current = await self.db.run(change_marker, self.storage._db)
            except ProxyError:
                current = marker  # the database is away: keep serving from the cache
            if marker is not None and current != marker:
                self.keys.invalidate_all()
            marker = current
            await trio.sleep(interval_s)

    def on_call_finished(self, record: CallRecord) -> None:
        usage = record.usage
        log.info(
            "call %s %s group=%s deployment=%s status=%s tokens=%s",
            record.call_id,
            record.call_type.value,
            record.model_group,
            record.deployment.deployment_id if record.deployment else "-",
            record.status,
            f"{usage.prompt_tokens}+{usage.completion_tokens}" if usage else "-",
        )


def open_storage(config: Config) -> Storage:
    """Connect, check and migrate the database (sync: the CLI calls it directly, the server in a thread)."""
    storage = Storage.open(config.general.database_url, config.general.database_connection_pool_limit)
    try:
        storage.ping()
        storage.migrate()
    except StorageError as error:
        storage.close()
        raise StartupError(f"database {storage.describe()} is not usable: {error}") from None
    return storage


@asynccontextmanager
async def open_gateway(config: Config) -> AsyncIterator[Gateway]:
    """Build the gateway inside the trio run; release its connections on exit."""
    limiter = trio.CapacityLimiter(1)
    storage = await trio.to_thread.run_sync(open_storage, config, limiter=limiter)
    upstreams = Upstreams(config.deployments)
    try:
        db = Db(storage, config.general.database_connection_pool_limit)
        yield Gateway(config=config, router=Router(config), upstreams=upstreams, db=db)
    finally:
        await upstreams.aclose()
        await trio.to_thread.run_sync(storage.close, limiter=limiter)
