"""What instances share through Redis besides the response cache and the rate limits.

- Key changes: the instance whose admin API changes a key, user or team drops the affected entries from its own
  key cache at once (as before) and publishes the change on `<prefix>:events`; every other instance's listener
  drops them too, so a block applies everywhere at once instead of within the change poller's second. After a
  reconnect every instance empties its key cache, since events may have been missed while it was away.
- Router state (`SharedRouterState`): cooldown events go out at once on the same channel (and into a hash read
  on connect); usage increments for usage-based routing go out in batches every `FLUSH_INTERVAL_S`, one
  pipelined round trip that also reads everyone's totals back. No round trip happens on the routing path.

Without Redis every method still works, on this process only; when Redis is down, publishing is skipped and the
database change poller (about a second) remains the way other instances learn of key changes.
"""

from __future__ import annotations

import json
import logging
import math
import uuid
from collections.abc import Collection
from typing import Any

import trio

from edgeproxy.config import Config
from edgeproxy.keyauth import KeyAuth
from edgeproxy.redisclient import Client, RedisBackend, RedisUnavailable
from edgeproxy.router.shared import SharedRouterState, wall_minute
from edgeproxy.router.state import RouterState

log = logging.getLogger("edgeproxy.shared")
FLUSH_INTERVAL_S = 0.25
ECHO_WAIT_S = 0.5  # how long a key change waits to hear itself back (normally well under a millisecond)
USAGE_TTL_S = 180  # a minute's usage hash outlives the minute, then Redis drops it


class SharedState:
    def __init__(self, keys: KeyAuth, backend: RedisBackend | None, router_state: RouterState) -> None:
        self.keys = keys
        self.backend = backend
        self.router_state = router_state if isinstance(router_state, SharedRouterState) else None
        self.instance_id = uuid.uuid4().hex
        prefix = backend.settings.prefix if backend is not None else "edgeproxy"
        self.channel = f"{prefix}:events"
        self._cooldowns_key = f"{prefix}:router:cooldowns"
        self._usage_key = f"{prefix}:router:usage"
        self._subscribed_before = False
        self._subscribed = False
        self._echoes: dict[str, trio.Event] = {}  # our own messages we wait to hear back
        self._reload_cooldowns = True

    # ---------------------------------------------------------------- key changes (the admin API calls these)

    async def invalidate(self, *tokens: str) -> None:
        self.keys.invalidate(*tokens)
        await self._publish({"type": "keys", "tokens": list(tokens)})

    async def invalidate_entities(self, user_ids: Collection[str] = (), team_ids: Collection[str] = ()) -> None:
        self.keys.invalidate_entities(set(user_ids), set(team_ids))
        await self._publish({"type": "entities", "user_ids": sorted(user_ids), "team_ids": sorted(team_ids)})

    async def invalidate_all(self) -> None:
        self.keys.invalidate_all()
        await self._publish({"type": "all"})

    async def _publish(self, message: dict[str, Any]) -> None:
        """Publish, then wait (briefly) to hear our own message back.

        Redis writes a message to every subscriber in the same event-loop cycle, so once our own listener has it,
        it has been delivered to every other instance too, whose listeners wake at the same moment ours did. Without
        this wait the admin API could answer while the message is still in flight, and a client asking another
        instance straight away could beat that instance's listener thread (measured: by about a millisecond).
        """
        if self.backend is None:
            return
        echo_id = uuid.uuid4().hex
        echo = self._echoes[echo_id] = trio.Event()
        try:
            await self.backend.publish(self.channel, self._encode({**message, "echo": echo_id}))
            if self._subscribed:
                with trio.move_on_after(ECHO_WAIT_S):
                    await echo.wait()
        except RedisUnavailable as error:
            log.debug("key change not published (others poll the database for it): %s", error)
        finally:
            del self._echoes[echo_id]

    def _encode(self, message: dict[str, Any]) -> bytes:
        return json.dumps({**message, "from": self.instance_id}, separators=(",", ":")).encode()

    # ---------------------------------------------------------------- events from the other instances

    def on_message(self, data: bytes) -> None:
        message = json.loads(data)
        if message.get("from") == self.instance_id:
            echo = self._echoes.get(message.get("echo", ""))
            if echo is not None:
                echo.set()
            return
        kind = message.get("type")
        if kind == "keys":
            self.keys.invalidate(*message["tokens"])
        elif kind == "entities":
            self.keys.invalidate_entities(set(message["user_ids"]), set(message["team_ids"]))
        elif kind == "all":
            self.keys.invalidate_all()
        elif kind == "cooldown" and self.router_state is not None:
            self.router_state.apply_cooldown(str(message["id"]), message["until"])

    def _on_subscribed(self) -> None:
        if self._subscribed_before:
            self.keys.invalidate_all()  # changes published while we were away never reached us
        self._subscribed_before = self._subscribed = True
        self._reload_cooldowns = True
        if self.router_state is not None:
            self.router_state.wake.set()

    def _on_lost(self) -> None:
        self._subscribed = False

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Listen for other instances' changes and sync router state; started once the listener is subscribed."""
        if self.backend is None:
            task_status.started()
            return
        async with trio.open_nursery() as nursery:
            handlers = {self.channel: self.on_message}
            await nursery.start(self.backend.serve_subscriber, handlers, self._on_subscribed, self._on_lost)
            if self.router_state is not None:
                nursery.start_soon(self._serve_router_sync, self.router_state)
            task_status.started()

    # ---------------------------------------------------------------- router state

    async def _serve_router_sync(self, state: SharedRouterState) -> None:
        # Cooldowns wake the flusher at once; usage is flushed (and everyone's read back) on an interval.
        interval = FLUSH_INTERVAL_S if state.share_usage else math.inf
        while True:
            with trio.move_on_after(interval):
                await state.wake.wait()
            await self.sync_router(state)

    async def sync_router(self, state: SharedRouterState) -> None:
        """One pipelined round trip: publish cooldowns, add usage, read totals (and cooldowns after a connect)."""
        assert self.backend is not None
        outbox, batch, reload = state.take_outbox(), state.take_usage(), self._reload_cooldowns
        minute = wall_minute(trio.current_time())
        if not (outbox or batch or reload or state.share_usage):
            return

        def work(client: Client) -> list[Any]:
            pipe = client.pipeline(transaction=False)
            for event in outbox:
                if event["until"] is None:
                    pipe.hdel(self._cooldowns_key, event["id"])
                else:
                    pipe.hset(self._cooldowns_key, event["id"], repr(event["until"]))
                pipe.publish(self.channel, self._encode(event))
            for (batch_minute, deployment_id), (requests, tokens) in batch.items():
                key = f"{self._usage_key}:{batch_minute}"
                pipe.hincrby(key, f"{deployment_id}|r", requests)
                pipe.hincrby(key, f"{deployment_id}|t", tokens)
                pipe.expire(key, USAGE_TTL_S)
            if state.share_usage:
                pipe.hgetall(f"{self._usage_key}:{minute}")
            if reload:
                pipe.hgetall(self._cooldowns_key)
            return list(pipe.execute())

        try:
            results = await self.backend.run(work)
        except RedisUnavailable as error:
            log.debug("router state not synced: %s", error)
            state.usage_failed(minute)
            state.outbox[:0] = outbox  # try them again next time
            return
        if reload:
            self._reload_cooldowns = False
            state.apply_cooldowns({_text(k): float(v) for k, v in results.pop().items()})
        state.usage_sent(minute, _usage_totals(results.pop()) if state.share_usage else {})


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _usage_totals(raw: dict[bytes, bytes]) -> dict[str, tuple[int, int]]:
    totals: dict[str, list[int]] = {}
    for field, value in raw.items():
        deployment_id, _, kind = _text(field).rpartition("|")
        counts = totals.setdefault(deployment_id, [0, 0])
        counts[0 if kind == "r" else 1] += int(value)
    return {deployment_id: (c[0], c[1]) for deployment_id, c in totals.items()}


def router_state(config: Config, backend: RedisBackend | None) -> RouterState | None:
    """The router's state: shared when there is a Redis (usage only when a usage-based strategy reads it)."""
    if backend is None:
        return None
    return SharedRouterState(share_usage=config.router.routing_strategy.startswith("usage-based"))
