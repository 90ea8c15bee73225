"""The one door to Redis: the sync redis-py client in worker threads, with a health state callers fall back on.

`redis.asyncio` does not run under trio (DESIGN.md), so every call runs in a thread through
`trio.to_thread.run_sync` under a limiter of our own sized to the connection pool: trio's default limiter is
shared with DNS lookups, and a stalled Redis must not hold up new upstream connections. The pool (per node, in a
cluster) is the limiter's size plus one spare connection for the pub/sub listener, which never takes a place
under the limiter, so calls never wait for a connection nor open more.

Redis is an accelerator, never a dependency: when it does not answer, `run` raises `RedisUnavailable` and the
caller falls back (cache miss, per-process limits). While it is down only one call per `retry_interval_s`
tries it (the rest fail at once, so requests do not each wait for a connect timeout); the first success marks
it up again. The outage is logged when it starts, then at most once per `log_interval_s`, and when it ends.

With redistopology.py (which builds the client for one server, Sentinel or a cluster), this is the only module
that imports redis.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from functools import partial
from typing import Any, NoReturn, TypeVar

import trio

from edgeproxy.redisconfig import RedisSettings
from edgeproxy.redistopology import Client, RedisConnection
from edgeproxy.resp import Command, Endpoint, ReplyError, RespConnectionError, RespPool, endpoint_of

T = TypeVar("T")
log = logging.getLogger("edgeproxy.redis")

RETRY_INTERVAL_S = 1.0
LOG_INTERVAL_S = 60.0
# How long cache stores wait for a pipeline or more stores to ride with before they go on their own: each write
# wakes Redis on its core, which cost the sender ~20-40 µs of CPU on the benchmark VM. With key tracking a miss
# makes no lookup, so at c=1 the stores of ~4 requests now share a write: -5 % CPU per request at c=1, -2.5 % at
# c=8 (4 alternating rounds). 20 ms rather than 5: each flush costs ~100k instructions (callgrind: no window
# against 1 s), and at ~600 requests/s a flush then carries ~12 stores instead of ~3. Other instances find an entry
# that much later (nothing beside an LLM call's seconds); this one's next pipeline carries it.
DEFER_WINDOW_S = 0.02
# How long the listener thread waits for a message before handing control back to trio: this bounds how long a
# shutdown waits for that thread, not how fast messages arrive (get_message returns as soon as one does).
LISTEN_POLL_S = 0.2

__all__ = ["Client", "Command", "LuaScript", "RedisBackend", "RedisUnavailable", "ReplyError", "open_redis"]


class RedisUnavailable(Exception):
    """Redis did not answer, or answered with an error: fall back to what works without it."""


class LuaScript:
    """A Lua script sent by its SHA1 (EVALSHA); `RedisBackend.execute` loads it when the server does not know it."""

    def __init__(self, lua: str) -> None:
        self.sha = hashlib.sha1(lua.encode()).hexdigest()  # the backend keeps the text, to load it if need be

    def command(self, keys: Sequence[str], args: Sequence[int | str]) -> list[int | str]:
        return ["EVALSHA", self.sha, len(keys), *keys, *args]


class RedisBackend:
    def __init__(
        self,
        settings: RedisSettings,
        *,
        retry_interval_s: float = RETRY_INTERVAL_S,
        log_interval_s: float = LOG_INTERVAL_S,
        defer_window_s: float | None = None,  # None: DEFER_WINDOW_S as it is when built (tests may patch it)
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        # redis is imported only when a Redis is configured: a proxy without one saves its 6 MiB of memory.
        from redis.exceptions import ConnectionError as RedisConnectionError
        from redis.exceptions import RedisClusterException, RedisError
        from redis.exceptions import TimeoutError as RedisTimeoutError

        # RedisClusterException is no RedisError: the cluster client raises it when no node answers.
        self._unreachable_errors: tuple[type[BaseException], ...] = (
            RedisConnectionError,
            RedisTimeoutError,
            RedisClusterException,
            OSError,
        )
        self._redis_error: type[BaseException] = RedisError
        self.settings = settings
        self._retry_interval_s = retry_interval_s
        self._log_interval_s = log_interval_s
        self._defer_window_s = DEFER_WINDOW_S if defer_window_s is None else defer_window_s
        self._clock = clock
        # One server, Sentinel or a cluster (redistopology.py); + 1 connection for the pub/sub listener.
        self._connection = RedisConnection(settings, max_connections=settings.max_connections + 1)
        self._limiter = trio.CapacityLimiter(settings.max_connections)
        # The hot path's commands (limits, cache reads and writes) go over trio sockets where we can (resp.py).
        endpoint = endpoint_of(settings.url) if settings.mode == "standalone" else None
        self._native = (
            RespPool(endpoint, max_connections=settings.max_connections, timeout_s=settings.socket_timeout_s)
            if endpoint is not None
            else None
        )
        self._scripts: dict[str, str] = {}
        self._deferred: list[Command] = []
        self._deferred_added = trio.Event()
        self._deferred_urgent = trio.Event()  # something deferred that must not wait (see `defer`)
        self._flushing: trio.Event | None = None  # set once the deferred commands on their way have gone
        self._down_since: float | None = None
        self._next_attempt = 0.0
        self._last_logged = 0.0
        self.last_error: str | None = None

    # ---------------------------------------------------------------- state

    @property
    def up(self) -> bool:
        """False from the first failed call until the next successful one."""
        return self._down_since is None

    @property
    def native_endpoint(self) -> Endpoint | None:
        """The one server the hot path reaches over its own connections (resp.py); None with Sentinel, a
        cluster or TLS."""
        return self._native.endpoint if self._native is not None else None

    @property
    def describe(self) -> str:
        return f"{self.settings.public_url} (from {self.settings.source})"

    def _mark_down(self, exc: BaseException) -> None:
        now = self._clock()
        self.last_error = f"{type(exc).__name__}: {exc}"
        self._next_attempt = now + self._retry_interval_s
        if self._down_since is None:
            self._down_since = self._last_logged = now
            log.warning(
                "Redis %s is unreachable (%s): serving without it (cache misses, per-process limits) until it is back",
                self.settings.public_url,
                self.last_error,
            )
        elif now - self._last_logged >= self._log_interval_s:
            self._last_logged = now
            log.warning(
                "Redis %s still unreachable after %.0f s (%s)",
                self.settings.public_url,
                now - self._down_since,
                self.last_error,
            )

    def _mark_up(self) -> None:
        if self._down_since is not None:
            log.warning("Redis %s is back after %.1f s", self.settings.public_url, self._clock() - self._down_since)
            self._down_since = None
            self.last_error = None

    # ---------------------------------------------------------------- calls

    def _fail_fast_while_down(self) -> None:
        if self._down_since is not None:
            if self._clock() < self._next_attempt:
                raise RedisUnavailable(f"Redis is unreachable ({self.last_error})")
            self._next_attempt = self._clock() + self._retry_interval_s  # one caller tries; the others fail fast

    async def run(self, fn: Callable[[Client], T], *, probe: bool = False) -> T:
        """`fn(client)` in a worker thread. Raises RedisUnavailable; while down, fails fast unless it is time to try.

        `probe=True` always tries (health checks, /cache/ping): their answer must be current.
        """
        if not probe:
            self._fail_fast_while_down()
        try:
            result = await trio.to_thread.run_sync(self._call, fn, limiter=self._limiter)
        except self._unreachable_errors as exc:
            self._mark_down(exc)
            raise RedisUnavailable(f"Redis is unreachable ({self.last_error})") from None
        except self._redis_error as exc:
            # It answered, with an error (out of memory, wrong type...): up, but this call failed.
            self._mark_up()
            raise RedisUnavailable(f"Redis refused the command: {exc}") from None
        self._mark_up()
        return result

    def _call(self, fn: Callable[[Client], T]) -> T:
        return fn(self._connection.client())

    def lua(self, lua: str) -> LuaScript:
        script = LuaScript(lua)
        self._scripts[script.sha] = lua
        return script

    def defer(self, commands: Sequence[Command], *, can_wait: bool = False) -> None:
        """Commands nobody waits for (rate-limit settlements, cache stores), sent off the response path.

        They go in front of this process's next pipeline, or with `serve_deferred` a moment later, unanswered
        (`flush_deferred`), whichever comes first; many requests' share one write. `can_wait` (cache stores):
        they may wait up to `DEFER_WINDOW_S` for company, since other instances lose nothing but a hit in the
        meantime; a settlement frees a parallel slot another instance may be refusing a request for, so it (and
        all that waits with it) goes at once. In front, or when they left a moment before, the next pipeline
        waits for them to have gone: a request that follows on this instance finds its predecessor's parallel
        slot freed and its answer stored. A failure is dropped, as it would have been had we waited (a slot's
        lease then runs out by itself); with replies it is logged.
        """
        self._deferred.extend(commands)
        self._deferred_added.set()
        if not can_wait:
            self._deferred_urgent.set()

    async def serve_deferred(self) -> NoReturn:
        """Send deferred commands as soon as the event loop gets to them, or `DEFER_WINDOW_S` later when they
        can wait (see `defer`)."""
        while True:
            await self._deferred_added.wait()
            self._deferred_added = trio.Event()
            if not self._deferred_urgent.is_set() and self._defer_window_s > 0:
                with trio.move_on_after(self._defer_window_s):  # a pipeline may take them meanwhile
                    await self._deferred_urgent.wait()
            self._deferred_urgent = trio.Event()
            await self.flush_deferred()

    async def flush_deferred(self) -> None:
        """Send the deferred commands now; on our own connections Redis is told not to reply (resp.py `send`)."""
        deferred, self._deferred = self._deferred, []
        if not deferred:
            return
        flushing = self._flushing = trio.Event()
        try:
            # Unanswered, a NOSCRIPT would go unseen: scripts go with their text (Redis caches it by its SHA).
            replies = await self._send([self._with_text(command) for command in deferred], answered=False)
        except RedisUnavailable as error:
            log.debug("%d deferred Redis commands dropped: %s", len(deferred), error)
            return
        finally:
            flushing.set()
            if self._flushing is flushing:
                self._flushing = None
        _log_failures(replies)

    def _with_text(self, command: Command) -> Command:
        """An EVALSHA of one of our scripts as EVAL with the script's text; any other command as it is."""
        if command[0] == "EVALSHA" and str(command[1]) in self._scripts:
            return ["EVAL", self._scripts[str(command[1])], *command[2:]]
        return command

    async def execute(self, commands: Sequence[Command]) -> list[Any]:
        """Send commands as one pipeline (one round trip), deferred ones in front; replies in order, error
        replies as ReplyError values.

        Raises RedisUnavailable like `run`. An EVALSHA the server does not know yet (after a restart or
        SCRIPT FLUSH) is sent again as EVAL, which also loads it.
        """
        if self._flushing is not None:
            # Deferred commands are on their way on another connection (through redis-py, in another thread):
            # sent now, this pipeline could overtake them and miss the answer they store.
            await self._flushing.wait()
        deferred, self._deferred = self._deferred, []
        if not deferred and not commands:
            return []
        try:
            replies = await self._pipeline([*deferred, *commands])
        except RedisUnavailable as error:
            if deferred:
                log.debug("%d deferred Redis commands dropped: %s", len(deferred), error)
            raise
        _log_failures(replies[: len(deferred)])
        return replies[len(deferred) :]

    async def _pipeline(self, commands: Sequence[Command]) -> list[Any]:
        replies = await self._send(commands)
        retry = [i for i, reply in enumerate(replies) if _no_script(reply) and str(commands[i][1]) in self._scripts]
        if retry:
            again = await self._send([self._with_text(commands[i]) for i in retry])
            for i, reply in zip(retry, again, strict=True):
                replies[i] = reply
        return replies

    async def _send(self, commands: Sequence[Command], answered: bool = True) -> list[Any]:
        """The replies; with answered=False, none where Redis can be told not to send them (resp.py `send`)."""
        if self._native is None:
            return await self.run(lambda client: [_one(client, command) for command in commands])
        self._fail_fast_while_down()
        try:
            replies = await (self._native.execute(commands) if answered else self._native.send(commands))
        except RespConnectionError as exc:
            self._mark_down(exc)
            raise RedisUnavailable(f"Redis is unreachable ({self.last_error})") from None
        self._mark_up()
        return replies

    async def ping(self) -> bool:
        """True when Redis answers now (always tries, even while marked down)."""
        try:
            return bool(await self.run(lambda client: client.ping(), probe=True))
        except RedisUnavailable:
            return False

    async def publish(self, channel: str, message: bytes) -> None:
        await self.run(lambda client: client.publish(channel, message))

    async def aclose(self) -> None:
        with trio.CancelScope(shield=True):
            with trio.move_on_after(self.settings.socket_timeout_s):
                await self.flush_deferred()  # free the slots of the last calls before we go
            if self._native is not None:
                await self._native.aclose()
            await trio.to_thread.run_sync(self._connection.close, limiter=trio.CapacityLimiter(1))

    # ---------------------------------------------------------------- pub/sub

    async def serve_subscriber(
        self,
        handlers: Mapping[str, Callable[[bytes], None]],
        on_subscribed: Callable[[], None],
        on_lost: Callable[[], None] = lambda: None,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> NoReturn:
        """Deliver messages on `handlers`' channels for ever, resubscribing after every outage.

        `on_subscribed` runs after each (re)subscription, so the caller can resynchronise what it may have missed
        while the connection was away; `on_lost` when the subscription is lost. Started once the first attempt is
        over, whether or not it succeeded: a Redis that is down at startup must not hold the server up.
        """
        limiter = trio.CapacityLimiter(1)  # one thread at a time: a PubSub object is not thread-safe
        started = False
        while True:
            pubsub: Any = None
            try:
                # Made in the thread: a cluster's client connects when it is first built.
                pubsub = await trio.to_thread.run_sync(self._new_pubsub, limiter=limiter)
                await trio.to_thread.run_sync(partial(pubsub.subscribe, *handlers), limiter=limiter)
                self._mark_up()
                on_subscribed()
                if not started:
                    started = True
                    task_status.started()
                while True:
                    message = await trio.to_thread.run_sync(
                        partial(pubsub.get_message, timeout=LISTEN_POLL_S), limiter=limiter
                    )
                    if message is not None and message.get("type") == "message":
                        _deliver(handlers, message)
            except (self._redis_error, *self._unreachable_errors) as exc:
                self._mark_down(exc)
                on_lost()
            finally:
                if pubsub is not None:
                    with trio.CancelScope(shield=True):
                        await trio.to_thread.run_sync(pubsub.close, limiter=limiter)
            if not started:
                started = True
                task_status.started()
            await trio.sleep(self._retry_interval_s)

    def _new_pubsub(self) -> Any:
        return self._connection.client().pubsub(ignore_subscribe_messages=True)


def _one(client: Client, command: Command) -> Any:
    """One command through redis-py (Sentinel, cluster, TLS): an error reply becomes a ReplyError value."""
    from redis.exceptions import NoScriptError, ResponseError

    try:
        return client.execute_command(*command)
    except NoScriptError as exc:  # redis-py drops the error's code from its message
        return ReplyError(f"NOSCRIPT {exc}")
    except ResponseError as exc:
        return ReplyError(str(exc))


def _log_failures(deferred_replies: Sequence[Any]) -> None:
    for reply in deferred_replies:
        if isinstance(reply, ReplyError):
            log.debug("a deferred Redis command failed: %s", reply)


def _no_script(reply: Any) -> bool:
    return isinstance(reply, ReplyError) and str(reply).startswith("NOSCRIPT")


def _deliver(handlers: Mapping[str, Callable[[bytes], None]], message: dict[str, Any]) -> None:
    channel = message["channel"]
    channel = channel.decode() if isinstance(channel, bytes) else str(channel)
    handler = handlers.get(channel)
    if handler is None:
        return
    try:
        handler(message["data"])
    except Exception:  # one bad message must not end the listener
        log.exception("could not apply a message from Redis channel %s", channel)


@asynccontextmanager
async def open_redis(settings: RedisSettings | None) -> AsyncIterator[RedisBackend | None]:
    """The backend for `settings` (None when no Redis is configured); says at startup whether Redis answers."""
    if settings is None:
        yield None
        return
    backend = RedisBackend(settings)
    try:
        if await backend.ping():
            log.info("Redis %s: connected", backend.describe)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(backend.serve_deferred)
            yield backend
            nursery.cancel_scope.cancel()
    finally:
        await backend.aclose()  # sends what is still deferred
