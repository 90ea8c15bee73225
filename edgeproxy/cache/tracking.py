"""Key tracking: the Redis response cache learns which entries exist, so that a miss costs no round trip.

Why: a lookup that finds nothing was most of what a Redis cache cost a request: ~110 µs of CPU per request on
the benchmark VM (a write that wakes Redis on the other core, the wait, the read), against ~5 µs to ask a filter
(`tests/benchmarks/run.py`, the Redis scenario, with and without the lookup). Most LLM requests miss.

How: Redis 6+ tells a RESP3 connection that asked (`CLIENT TRACKING ON BCAST PREFIX <namespace>:`) about every
key of the namespace that changes: stored by any instance (or by LiteLLM sharing the cache), deleted, expired,
evicted, and all at once on FLUSHDB/FLUSHALL. The tracker keeps a PresenceFilter (cache/presence.py) of the
digests that may exist: seeded by a SCAN of the namespace once tracking is on (so nothing stored meanwhile is
missed), added to on every invalidation and on this instance's own stores, rebuilt the same way once full.
Lookups trust it only while its connection is up and its seed complete; before that, and from the moment the
connection is lost (or a PING goes unanswered) until a new one is seeded, every lookup asks Redis as before.

The notices are read now and then (`_receive`), and by every lookup that would otherwise say "absent"
(`may_exist`), so an entry Redis holds is found by every instance that asks. What can go wrong is a miss that
could have been a hit, never a wrong answer: an entry whose notice is still on the wire.
Only on edgeproxy's own Redis connections (one server, `redis://` or `unix://`); with Sentinel, a cluster or TLS,
or a Redis that refuses tracking (before 6.0, an ACL without CLIENT), every lookup asks Redis.
"""

from __future__ import annotations

import logging
from typing import Any, NoReturn

import trio

from edgeproxy.cache.keys import is_cache_hash
from edgeproxy.cache.presence import DEFAULT_CAPACITY, PresenceFilter
from edgeproxy.cache.store import glob_escape
from edgeproxy.redisclient import RedisBackend, RedisUnavailable
from edgeproxy.resp import Connection, Endpoint, Push, ReplyError, RespConnectionError, auth_command, connect, encode

log = logging.getLogger("edgeproxy.cache")

RECEIVE_INTERVAL_S = 0.1  # how often notices no lookup has taken are (read buffers stay small)
PING_INTERVAL_S = 5.0  # how soon a connection that died without closing is noticed (plus the socket timeout)
RETRY_INTERVAL_S = 1.0
SCAN_COUNT = 1000
CONNECTION_NAME = "edgeproxy-key-tracking"  # as CLIENT LIST shows it


class _Refused(Exception):
    """Redis does not offer key tracking to us: asking again will not change that."""


class KeyTracker:
    def __init__(
        self,
        backend: RedisBackend,
        endpoint: Endpoint,
        namespace: str,
        *,
        capacity: int = DEFAULT_CAPACITY,
        ping_interval_s: float = PING_INTERVAL_S,
        retry_interval_s: float = RETRY_INTERVAL_S,
    ) -> None:
        self.backend = backend
        self.endpoint = endpoint
        self.prefix = namespace + ":"
        self.capacity = capacity
        self.ping_interval_s = ping_interval_s
        self.retry_interval_s = retry_interval_s
        self.timeout_s = backend.settings.socket_timeout_s
        self.trusted: PresenceFilter | None = None  # what lookups ask (None: ask Redis)
        self._filling: list[PresenceFilter] = []  # what invalidations and stores go into (the trusted one, a new one)
        self._full = trio.Event()
        self._pong = trio.Event()
        self._connection: Connection | None = None  # the tracking connection, while open
        self.state = "starting"  # /health/readiness: tracking | seeding | reconnecting | unavailable (...)

    # ---------------------------------------------------------------- per request

    def may_exist(self, digest: str) -> bool:
        """False only when the entry certainly does not exist."""
        trusted = self.trusted
        if trusted is None or trusted.might_contain(digest):
            return True
        # Absent as far as we have read: first take the invalidations already here, without waiting (a read that
        # finds nothing costs ~1 µs), so that an entry Redis has stored is found by every instance that asks.
        if not self._take_delivered():
            return False
        trusted = self.trusted
        return trusted is None or trusted.might_contain(digest)

    def _take_delivered(self) -> bool:
        """Apply what the tracking connection has received; True when there was something (or it closed)."""
        connection = self._connection
        if connection is None:
            return False
        try:
            messages = connection.read_ready()
        except OSError:
            messages = None
        if messages is None:  # closed: `_receive` finds out too, and the tracker reconnects
            self.trusted = None
            return True
        for message in messages:
            self._apply(message)
        return bool(messages)

    def stored(self, storage_key: str) -> None:
        """This instance stores an entry (its SET may still be on its way: a lookup must then ask)."""
        if storage_key.startswith(self.prefix):
            self._add(storage_key[len(self.prefix) :])

    def _add(self, digest: str) -> None:
        for presence in self._filling:
            presence.add(digest)
        if self.trusted is not None and self.trusted.full:
            self._full.set()

    # ---------------------------------------------------------------- the tracking connection

    async def serve(self) -> NoReturn:
        """Track keys for ever: reconnect after a loss; give up only if Redis refuses tracking."""
        while True:
            try:
                await self._track()
            except _Refused as refused:
                self.state = f"unavailable ({refused})"
                log.info("Redis does not offer key tracking (%s): every cache lookup asks Redis", refused)
                await trio.sleep_forever()
            except (RespConnectionError, RedisUnavailable, trio.TooSlowError) as lost:
                if self.trusted is not None:
                    log.info("cache key tracking lost (%s): lookups ask Redis until it is back", lost)
            finally:
                self.trusted = None
                self._filling = []
            self.state = "reconnecting"
            await trio.sleep(self.retry_interval_s)

    async def _track(self) -> None:
        with trio.fail_after(self.timeout_s):
            connection = await connect(self.endpoint)
        try:
            await self._start_tracking(connection)
            self._connection = connection
            lost: list[BaseException] = []
            async with trio.open_nursery() as nursery:

                async def guarded(fn: Any) -> None:
                    # The first of the three to fail ends the others; the error is raised after the nursery.
                    try:
                        await fn()
                    except (RespConnectionError, RedisUnavailable, trio.TooSlowError, OSError) as exc:
                        lost.append(exc)
                        nursery.cancel_scope.cancel()

                nursery.start_soon(guarded, lambda: self._receive(connection))
                nursery.start_soon(guarded, lambda: self._keep_alive(connection))
                nursery.start_soon(guarded, self._keep_seeded)
            if lost:
                error = lost[0]
                raise error if not isinstance(error, OSError) else RespConnectionError(str(error))
        finally:
            self._connection = None
            await trio.aclose_forcefully(connection.stream)

    async def _start_tracking(self, connection: Connection) -> None:
        endpoint = self.endpoint
        setup = [*auth_command(endpoint), ["HELLO", "3"], ["CLIENT", "SETNAME", CONNECTION_NAME]]
        if endpoint.db:
            setup.append(["SELECT", endpoint.db])
        setup.append(["CLIENT", "TRACKING", "ON", "BCAST", "PREFIX", self.prefix])
        deadline = trio.current_time() + self.timeout_s
        try:
            await connection.write(encode(setup), deadline)
            replies = await connection.read(len(setup), deadline)
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise RespConnectionError(f"{type(exc).__name__}: {exc}") from None
        for command, reply in zip(setup, replies, strict=True):
            if isinstance(reply, ReplyError):
                if command[0] == "AUTH":
                    raise RespConnectionError(f"Redis refused the credentials: {reply}")
                raise _Refused(f"{' '.join(str(part) for part in command[:2])}: {reply}")

    async def _receive(self, connection: Connection) -> None:
        """What arrives, taken now and then: lookups that would say "absent" take it first anyway (may_exist),
        so waking up for every notice (one per batch of stores, ours included) would only cost CPU."""
        while True:
            await trio.sleep(RECEIVE_INTERVAL_S)
            messages = connection.read_ready()
            if messages is None:
                raise RespConnectionError("Redis closed the key-tracking connection")
            for message in messages:
                self._apply(message)

    def _apply(self, message: Any) -> None:
        """An invalidation into the filters; anything else is a PING's answer."""
        if not isinstance(message, Push):
            self._pong.set()
        elif len(message) >= 2 and message[0] == b"invalidate":
            keys = message[1]
            if keys is None:  # FLUSHDB / FLUSHALL: every entry is gone
                for presence in self._filling:
                    presence.clear()
                return
            prefix = len(self.prefix)
            for key in keys:
                digest = key[prefix:].decode(errors="replace") if isinstance(key, bytes) else ""
                if is_cache_hash(digest):
                    self._add(digest)

    async def _keep_alive(self, connection: Connection) -> None:
        """A PING now and then: a connection that died without closing must not be trusted for long."""
        while True:
            await trio.sleep(self.ping_interval_s)
            self._pong = trio.Event()
            await connection.write(encode([["PING"]]), trio.current_time() + self.timeout_s)
            with trio.fail_after(self.timeout_s):
                await self._pong.wait()

    async def _keep_seeded(self) -> None:
        """Seed a filter from a SCAN, trust it, and seed a new one each time it fills up."""
        while True:
            self.state = "seeding"
            fresh = PresenceFilter(self.capacity)
            self._filling.append(fresh)  # invalidations from now on: nothing stored during the SCAN is missed
            await self._seed(fresh)
            self.trusted = fresh
            self._filling = [fresh]
            self._full = trio.Event()
            self.state = "tracking"
            await self._full.wait()

    async def _seed(self, presence: PresenceFilter) -> None:
        pattern = glob_escape(self.prefix) + "*"
        prefix = len(self.prefix)
        cursor: bytes | int = 0
        while True:
            (reply,) = await self.backend.execute([("SCAN", cursor, "MATCH", pattern, "COUNT", SCAN_COUNT)])
            if isinstance(reply, ReplyError):
                raise RedisUnavailable(f"SCAN failed: {reply}")
            cursor, keys = reply
            for key in keys:
                digest = key[prefix:].decode(errors="replace")
                if is_cache_hash(digest):
                    presence.add(digest)
            if cursor in (b"0", 0):
                return
