"""Who may do what on the management routes (LiteLLM's roles, docs.litellm.ai/docs/proxy/self_serve).

- the master key and `proxy_admin` users: everything;
- `proxy_admin_viewer`: reads everything, writes nothing;
- `internal_user`: creates, lists, reads, blocks and deletes their own keys, reads their own user;
- `internal_user_viewer`: reads their own keys and user only;
- a key without a user: reads its own /key/info only.
Team admins (team_members.role == "admin") additionally manage their team's members; that check needs the
database and lives with the team functions (`teams.is_team_admin`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from edgeproxy.auth import Principal
from edgeproxy.errors import PermissionDeniedError

SELF_SERVICE_WRITERS = ("internal_user",)
SELF_SERVICE_READERS = ("internal_user", "internal_user_viewer")


def require_reader(principal: Principal) -> None:
    if not principal.may_read_all:
        raise PermissionDeniedError("this route needs the master key or a proxy_admin / proxy_admin_viewer key")


def own_user_id(principal: Principal, write: bool) -> str:
    """The user a non-admin acts for; 403 when their role may not do this on their own things either."""
    roles = SELF_SERVICE_WRITERS if write else SELF_SERVICE_READERS
    if principal.user_id is None or principal.user_role not in roles:
        role = principal.user_role or "a key without a user"
        raise PermissionDeniedError(f"{role} may not {'change' if write else 'read'} this; ask a proxy admin")
    return principal.user_id


def check_own_user_id(principal: Principal, requested: Any, write: bool) -> str:
    """For self-service: the requested user_id must be the caller's own (absent means their own)."""
    own = own_user_id(principal, write)
    if requested is not None and requested != own:
        raise PermissionDeniedError(f"user {own} may only act on their own keys and user, not on {requested!r}")
    return own


def check_key_access(principal: Principal, key: Mapping[str, Any], write: bool) -> None:
    """May the caller read (or change) this key row?"""
    if principal.is_admin or (not write and principal.may_read_all):
        return
    if not write and key.get("token") == principal.token:
        return  # every key may look at itself (LiteLLM: /key/info with the key's own bearer)
    roles = SELF_SERVICE_WRITERS if write else SELF_SERVICE_READERS
    if principal.user_id is not None and principal.user_role in roles and key.get("user_id") == principal.user_id:
        return
    raise PermissionDeniedError(
        f"this key may not {'change' if write else 'read'} key {key.get('key_alias') or key.get('key_name')}"
    )


def created_by(principal: Principal) -> str | None:
    """Recorded on new keys: the acting user, or 'master_key' for the master key."""
    if principal.is_master:
        return "master_key"
    return principal.user_id or principal.token
