"""KeyAuth's cache: one Principal per load of a key, and an expiry that still holds for a cached key."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from edgeproxy.auth import hash_key
from edgeproxy.errors import AuthenticationError
from edgeproxy.keyauth import KeyAuth, KeyBundle

START = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


class OneKeyDb:
    """Answers load_bundle for one key, counting the loads."""

    storage = None

    def __init__(self, key: dict[str, Any]) -> None:
        self.key = key
        self.loads = 0

    async def run(self, fn: Any, *args: Any) -> KeyBundle:
        self.loads += 1
        return KeyBundle(self.key, None, None)


async def test_a_cached_key_expires_on_time_and_is_built_once_per_load() -> None:
    now = [START]
    key = {"token": hash_key("sk-cached"), "key_alias": "cached", "expires": START + timedelta(minutes=5)}
    db = OneKeyDb(key)
    auth = KeyAuth(db, ttl_s=3600, now=lambda: now[0])  # type: ignore[arg-type]
    first = await auth.principal("sk-cached")
    assert first.key_alias == "cached"
    assert await auth.principal("sk-cached") is first  # built once per load, not per request
    now[0] = START + timedelta(minutes=5)
    with pytest.raises(AuthenticationError, match="expired"):
        await auth.principal("sk-cached")  # still cached (ttl 1 h), but past its expiry
    assert db.loads == 1
