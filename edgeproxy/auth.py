"""Who is calling: the key from the request headers, checked against the master key and virtual keys."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from edgeproxy.aliases import AliasMap
from edgeproxy.errors import AuthenticationError, PermissionDeniedError

# COMPAT.md: Authorization first, then LiteLLM's own header, then the Anthropic/Azure style ones.
_KEY_HEADERS = ("x-litellm-api-key", "x-api-key", "api-key")


class Headers(Protocol):
    """Anything with case-insensitive `get` (werkzeug's Headers, httpx's Headers, a lower-cased dict)."""

    def get(self, key: str, /) -> Any: ...


def extract_key(headers: Headers) -> str | None:
    authorization: str | None = headers.get("authorization")
    if authorization:
        scheme, _, value = authorization.strip().partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
        if not value:  # a bare key in Authorization, as some clients send it
            return scheme
    for name in _KEY_HEADERS:
        found: str | None = headers.get(name)
        if found and found.strip():
            return found.strip().removeprefix("Bearer ").strip()
    return None


def hash_key(key: str) -> str:
    """Virtual keys are stored and looked up only as their sha256 hex digest."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def same_secret(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode("utf-8"), b.encode("utf-8"))


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller of one request."""

    is_master: bool = False
    token: str | None = None  # sha256 of the virtual key
    key_alias: str | None = None
    key_name: str | None = None
    user_id: str | None = None
    team_id: str | None = None
    user_role: str | None = None
    models: frozenset[str] | None = None  # None: every model
    # Model aliases in effect: key over team over the config's (edgeproxy/aliases.py); None: the config's alone.
    aliases: AliasMap | None = field(default=None, repr=False)
    # The stored rows behind a virtual key (budgets, limits, metadata); None for the master key.
    key: Mapping[str, Any] | None = field(default=None, repr=False)
    user: Mapping[str, Any] | None = field(default=None, repr=False)
    team: Mapping[str, Any] | None = field(default=None, repr=False)
    member: Mapping[str, Any] | None = field(default=None, repr=False)  # the user's team membership

    @property
    def is_admin(self) -> bool:
        return self.is_master or self.user_role == "proxy_admin"

    @property
    def may_read_all(self) -> bool:
        return self.is_admin or self.user_role == "proxy_admin_viewer"

    def may_use(self, model_group: str) -> bool:
        return self.models is None or model_group in self.models

    def check_model(self, model_group: str) -> None:
        if not self.may_use(model_group):
            allowed = ", ".join(sorted(self.models or ())) or "none"
            raise PermissionDeniedError(
                f"this key may not use model {model_group!r}; allowed: {allowed}",
                param="model",
            )

    def require_admin(self) -> None:
        if not self.is_admin:
            raise PermissionDeniedError("this route needs the master key or a proxy_admin key")


MASTER = Principal(is_master=True, key_alias="master", user_role="proxy_admin")


def missing_key_error() -> AuthenticationError:
    return AuthenticationError(
        "no API key: send it as 'Authorization: Bearer sk-...' (or x-litellm-api-key / x-api-key)"
    )
