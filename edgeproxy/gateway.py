"""The application object: everything a request needs, built once at startup inside the trio run.

No module-level mutable state: handlers reach this object through the Quart app.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import InitVar, dataclass, field
from pathlib import Path

import trio

from edgeproxy.accounting import Accounting
from edgeproxy.aliases import AliasMap, ModelCatalog
from edgeproxy.auth import MASTER, Headers, Principal, extract_key, missing_key_error, same_secret
from edgeproxy.calls import CallRecord, Calls
from edgeproxy.config import Config
from edgeproxy.db import Db
from edgeproxy.errors import InvalidRequestError, ProxyError
from edgeproxy.keyauth import KeyAuth
from edgeproxy.operations import Operations
from edgeproxy.pricing import Pricing
from edgeproxy.redisclient import RedisBackend, open_redis
from edgeproxy.router import Router
from edgeproxy.serving import Serving
from edgeproxy.shared import SharedState, router_state
from edgeproxy.spend import BudgetLedger, SpendWriter
from edgeproxy.upstream import Upstreams
from storage import Storage, StorageError

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
    accounting: Accounting
    redis: RedisBackend | None = None  # response cache, rate limits and shared state (None: per process)
    operations: InitVar[Operations | None] = None
    ops: Operations = field(init=False)  # metrics, alerts, config reloads (edgeproxy/operations.py)
    aliases: AliasMap = field(init=False)  # router_settings.model_group_alias (keys and teams may override)
    keys: KeyAuth = field(init=False)
    calls: Calls = field(init=False)
    shared: SharedState = field(init=False)  # key changes (call its invalidate*), other instances' events
    serving: Serving = field(init=False)  # limits, cache, budget around each call
    started_at: float = field(default_factory=trio.current_time)

    def __post_init__(self, operations: Operations | None) -> None:
        self.ops = operations or Operations(self.config)
        self.calls = Calls(self.router, self.upstreams, self.on_call_finished)
        router = self.config.router
        self.aliases = AliasMap(router.model_group_alias, router.hidden_aliases)
        self.keys = KeyAuth(self.db, self.config.general.key_cache_ttl_s, aliases=self.aliases)
        self.shared = SharedState(self.keys, self.redis, self.router.state)
        self.serving = Serving.build(self.config, self.redis, self.calls, self.accounting, self.on_call_finished)

    @property
    def storage(self) -> Storage:
        return self.db.storage

    @property
    def known_models(self) -> ModelCatalog:
        """Model names a key may be limited to: groups and aliases (alias targets must be groups)."""
        return ModelCatalog(self.router.group_names(), self.config.router.model_group_alias)

    async def authenticate(self, headers: Headers) -> Principal:
        key = extract_key(headers)
        if key is None:
            raise missing_key_error()
        master = self.config.general.master_key
        if master is not None and same_secret(key, master):
            return MASTER
        return await self.keys.principal(key)

    def resolve_model(self, requested: str, principal: Principal) -> str:
        """The model group a request names (through the caller's aliases), or 400 listing what it may use.

        Resolved before anything else looks at the model, so access checks, routing, the cache key, pricing,
        spend and metrics all see the target group; the access check applies to that target (aliases.py).
        """
        group = self._aliases_of(principal).resolve(requested)
        if not self.router.has_group(group):
            usable = ", ".join(self.visible_models(principal))
            raise InvalidRequestError(f"unknown model {requested!r}; available: {usable}", param="model")
        principal.check_model(group)
        return group

    def visible_models(self, principal: Principal) -> list[str]:
        """What /v1/models lists: every name this caller may ask for, except hidden aliases."""
        aliases = self._aliases_of(principal)
        names = [g for g in self.router.group_names() if g not in aliases.targets and principal.may_use(g)]
        for alias, target in aliases.visible():
            if alias not in names and self.router.has_group(target) and principal.may_use(target):
                names.append(alias)
        return names

    def _aliases_of(self, principal: Principal) -> AliasMap:
        return principal.aliases if principal.aliases is not None else self.aliases

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
            **await self.serving.readiness(),
        }

    async def serve_change_poller(self, interval_s: float = CHANGE_POLL_INTERVAL_S) -> None:
        """Notice key, user and team changes made by other instances or the CLI within about a second."""
        marker: tuple[object, ...] | None = None
        while True:
            current: tuple[object, ...] | None
            try:
                current = await self.db.run(self.storage.change_marker)
            except ProxyError:
                current = marker  # the database is away: keep serving from the cache
            if marker is not None and current != marker:
                self.keys.invalidate_all()
            marker = current
            await trio.sleep(interval_s)

    def swap_models(self, config: Config, router: Router, upstreams: Upstreams) -> Upstreams:
        """Serve a reloaded model_list and router_settings from now on (edgeproxy/reload.py builds them).

        Synchronous, so no request sees half of the change. Requests already running keep the clients they
        hold; the old upstreams are returned for the caller to close once those requests are done.
        """
        old, aliases = self.upstreams, AliasMap(config.router.model_group_alias, config.router.hidden_aliases)
        self.config, self.router, self.upstreams = config, router, upstreams
        self.calls = self.serving.calls = Calls(router, upstreams, self.on_call_finished)
        self.accounting.use_config(config)
        if aliases != self.aliases:
            self.aliases = self.keys.aliases = aliases
            self.keys.invalidate_all()  # cached keys hold aliases merged with the old ones
        return old

    def on_call_finished(self, record: CallRecord) -> None:
        self.accounting.finish(record)
        record.key_spend = self.accounting.key_spend(record)

    async def serve_budget_resets(self, interval_s: float) -> None:
        """Start new budget windows in the database on schedule (the ledger already did in memory)."""
        while True:
            try:
                reset = await self.db.run(self.storage.spend.reset_budgets)
            except ProxyError as error:
                log.warning("budget reset skipped: %s", error.message)
                reset = []
            if reset:
                self.accounting.ledger.reset(reset)
                self.keys.invalidate_all()
            await trio.sleep(interval_s)


def open_storage(config: Config, *, migrate_in_child: bool = False) -> Storage:
    """Connect, check and migrate the database (sync: the CLI calls it directly, the server in a thread).

    `migrate_in_child`: migrations, when there are any, in a child process (Storage.migrate; server.py).
    """
    storage = Storage.open(config.general.database_url, config.general.database_connection_pool_limit)
    try:
        storage.ping()
        storage.migrate(in_child=migrate_in_child)
    except StorageError as error:
        storage.close()
        raise StartupError(f"database {storage.describe()} is not usable: {error}") from None
    return storage


def journal_path(config: Config, storage: Storage) -> Path:
    if config.general.spend_journal:
        return Path(config.general.spend_journal)
    database = storage.engine.url.database
    if storage.dialect == "sqlite" and database and database != ":memory:":
        return Path(database).resolve().parent / "edgeproxy-spend.journal"
    return Path("edgeproxy-spend.journal").resolve()


@asynccontextmanager
async def open_gateway(config: Config) -> AsyncIterator[Gateway]:
    """Build the gateway inside the trio run; on exit flush spend and release every connection.

    The spend writer lives in this nursery, not the server's: it must outlive the HTTP server so that
    records from drained requests are written before the process exits.
    """
    limiter = trio.CapacityLimiter(1)
    storage = await trio.to_thread.run_sync(open_storage, config, limiter=limiter)
    upstreams = Upstreams(config.deployments)
    gateway: Gateway | None = None
    try:
        db = Db(storage, config.general.database_connection_pool_limit)
        ops = Operations(config)  # the ledger reports budget thresholds to its alerts, accounting to its metrics
        ledger = BudgetLedger(config.general.budget_exceeded_status_code, **ops.ledger_hooks())
        writer = SpendWriter(db, ledger, config.general.proxy_batch_write_at_s, journal_path(config, storage))
        accounting = Accounting(config, Pricing(), ledger, writer, metrics=ops.metrics)
        async with open_redis(config.redis) as redis, trio.open_nursery() as background:
            await background.start(writer.serve)
            router = Router(config, state=router_state(config, redis))
            try:
                gateway = Gateway(config, router, upstreams, db, accounting, redis=redis, operations=ops)
                background.start_soon(gateway.serving.limits.serve)
                if gateway.serving.cache is not None:
                    background.start_soon(gateway.serving.cache.serve)
                yield gateway
            finally:
                writer.close()
                if gateway is not None:
                    gateway.serving.limits.close()  # gives back the rate-limit leases' unused requests
                    if gateway.serving.cache is not None:
                        gateway.serving.cache.close()
    finally:
        # After a config reload the gateway holds newer clients (reload.py closes the ones it replaced).
        await (gateway.upstreams if gateway is not None else upstreams).aclose()
        await trio.to_thread.run_sync(storage.close, limiter=limiter)
