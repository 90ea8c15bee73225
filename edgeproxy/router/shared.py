"""Router state that several instances share (through Redis), without a round trip on the routing path.

Strategies and cooldown code call the same synchronous methods as on `RouterState`; this subclass keeps a local
view and queues what others must learn. The I/O lives in `edgeproxy.shared`, which drains the queues in one
pipelined round trip per flush and feeds back what the other instances did:

- cooldowns: a cooldown started or ended early here is queued at once (and the flusher woken): every instance
  applies it when the event arrives, and an instance that (re)connects reads all of them from a hash. Times
  travel as wall-clock epochs, since each process has its own trio clock.
- usage (requests and tokens per deployment per minute, for usage-based routing): increments are batched;
  each flush adds them to a Redis hash per wall-clock minute and reads the totals back. The view a strategy
  sees is those totals plus what this process counted since, so it never counts less than its own traffic,
  and while Redis is down it simply routes on its own counts.

In-flight counts (least-busy), latencies and failure counts stay per process: they describe this instance's
own connections and calls.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import trio

from edgeproxy.router.state import RouterState

UsageBatch = dict[tuple[int, str], list[int]]  # (wall minute, deployment id) -> [requests, tokens]
MAX_OUTBOX = 1000  # cooldown events kept while Redis is away; older ones are stale by then anyway


def wall_minute(now: float) -> int:
    """The wall-clock minute of a trio time."""
    return int((now + time.time() - trio.current_time()) // 60)


class SharedRouterState(RouterState):
    def __init__(self, *, share_usage: bool) -> None:
        super().__init__()
        self.share_usage = share_usage
        self.outbox: list[dict[str, Any]] = []  # cooldown events for the other instances
        self.wake = trio.Event()  # set when the outbox has something urgent
        self._pending: UsageBatch = {}
        self._sending: UsageBatch = {}
        self._totals: dict[int, dict[str, tuple[int, int]]] = {}

    # ---------------------------------------------------------------- cooldowns

    def set_cooldown(self, deployment_id: str, until: float | None) -> None:
        previous = super().cooldown_until(deployment_id)
        super().set_cooldown(deployment_id, until)
        if until is None and (previous is None or previous <= trio.current_time()):
            return  # an expired cooldown being tidied away: every instance does that by itself
        wall = None if until is None else until + time.time() - trio.current_time()
        self.outbox.append({"type": "cooldown", "id": deployment_id, "until": wall})
        del self.outbox[:-MAX_OUTBOX]
        self.wake.set()

    def apply_cooldown(self, deployment_id: str, wall_until: float | None) -> None:
        """Another instance started (or ended) a cooldown."""
        until = None
        if wall_until is not None:
            until = wall_until - time.time() + trio.current_time()
            if until <= trio.current_time():
                until = None
        RouterState.set_cooldown(self, deployment_id, until)  # not queued again: it came from outside

    def apply_cooldowns(self, cooldowns: Mapping[str, float]) -> None:
        """Every cooldown currently recorded (after connecting): live ones apply, the rest are over."""
        for deployment_id, wall_until in cooldowns.items():
            if wall_until > time.time():
                self.apply_cooldown(deployment_id, wall_until)

    # ---------------------------------------------------------------- usage

    def start_call(self, deployment_id: str, now: float) -> None:
        super().start_call(deployment_id, now)
        if self.share_usage:
            self._count(deployment_id, now, 1, 0)

    def add_tokens(self, deployment_id: str, tokens: int, now: float) -> None:
        super().add_tokens(deployment_id, tokens, now)
        if self.share_usage and tokens > 0:
            self._count(deployment_id, now, 0, tokens)

    def _count(self, deployment_id: str, now: float, requests: int, tokens: int) -> None:
        counts = self._pending.setdefault((wall_minute(now), deployment_id), [0, 0])
        counts[0] += requests
        counts[1] += tokens

    def usage(self, deployment_id: str, now: float) -> tuple[int, int]:
        if not self.share_usage:
            return super().usage(deployment_id, now)
        minute = wall_minute(now)
        requests, tokens = self._totals.get(minute, {}).get(deployment_id, (0, 0))
        for batch in (self._sending, self._pending):
            counts = batch.get((minute, deployment_id))
            if counts is not None:
                requests, tokens = requests + counts[0], tokens + counts[1]
        return requests, tokens

    # ---------------------------------------------------------------- for the flusher

    def take_usage(self) -> UsageBatch:
        """The increments not sent yet; they still count in `usage()` until `usage_sent` or `usage_failed`."""
        self._sending, self._pending = self._pending, {}
        return self._sending

    def usage_sent(self, minute: int, totals: Mapping[str, tuple[int, int]]) -> None:
        """The flush landed; `totals` are everyone's counts for `minute`, this batch included."""
        self._sending = {}
        self._totals = {minute: dict(totals)}

    def usage_failed(self, current_minute: int) -> None:
        """Redis did not take the batch: keep what still matters for the next flush."""
        for key, counts in self._sending.items():
            if key[0] >= current_minute:
                mine = self._pending.setdefault(key, [0, 0])
                mine[0] += counts[0]
                mine[1] += counts[1]
        self._sending = {}
        for key in [k for k in self._pending if k[0] < current_minute]:
            del self._pending[key]

    def take_outbox(self) -> list[dict[str, Any]]:
        outbox, self.outbox = self.outbox, []
        self.wake = trio.Event()
        return outbox
