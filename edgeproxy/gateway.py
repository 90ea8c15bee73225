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
from edgeproxy.errors import AuthenticationError, InvalidRequestError
from edgeproxy.router import Router
from edgeproxy.upstream import Upstreams

log = logging.getLogger("edgeproxy.gateway")


@dataclass
class Gateway:
    config: Config
    router: Router
    upstreams: Upstreams
    calls: Calls = field(init=False)
    started_at: float = field(default_factory=trio.current_time)

    def __post_init__(self) -> None:
        self.calls = Calls(self.router, self.upstreams, self.on_call_finished)

    async def authenticate(self, headers: Headers) -> Principal:
        key = extract_key(headers)
        if key is None:
            raise missing_key_error()
        master = self.config.general.master_key
        if master is not None and same_secret(key, master):
            return MASTER
        raise AuthenticationError("invalid API key")

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
        return {"status": "healthy", "db": "not configured", "cache": "not configured"}

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


@asynccontextmanager
async def open_gateway(config: Config) -> AsyncIterator[Gateway]:
    """Build the gateway inside the trio run; release its connections on exit."""
    upstreams = Upstreams(config.deployments)
    try:
        yield Gateway(config=config, router=Router(config), upstreams=upstreams)
    finally:
        await upstreams.aclose()
