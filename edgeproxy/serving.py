"""One LLM request around the call itself: cache controls, rate limits, budget, cache lookup, then the call.

The order matters:
1. the request's `cache` controls are read (and removed from the body: they are ours, not the upstream's);
   a control the key may not use is refused (403) before anything is counted;
2. rate limits count the request (429 with retry-after refuses it; cache hits count, as in LiteLLM);
3. the cache lookup (one GET, sent in the same Redis round trip as the limits' admission when both live in
   Redis), before the budget reservation, so nothing is reserved across an await that might be cancelled;
4. the budget is checked and reserved (a hit settles it at once at cost 0);
5. the call; then, in a `finally`, the rate-limit ticket settled (parallel slot freed, tokens counted) and the
   answer stored in the cache when the call succeeded, for streams when the stream ends or the client leaves.
   With Redis neither waits for a round trip: both go in front of the process's next pipeline, or a moment
   later (`RedisBackend.defer`).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, Callable
from contextlib import aclosing
from dataclasses import dataclass, field

import trio

from edgeproxy.accounting import Accounting
from edgeproxy.cache import CachedAnswer, CachePlan, Entry, ResponseCache, open_response_cache, replay
from edgeproxy.calls import CallRecord, Calls, dumps
from edgeproxy.config import Config
from edgeproxy.errors import ProxyError, RateLimitError
from edgeproxy.limits import RateLimiter, Ticket
from edgeproxy.redisclient import RedisBackend
from edgeproxy.upstream import UpstreamStream

log = logging.getLogger("edgeproxy.serving")
# A parallel slot held in Redis by an instance that died is forgotten this long after the longest call may last.
LEASE_MARGIN_S = 60.0


@dataclass(slots=True)
class Answer:
    """What the API layer renders: a JSON body, or SSE chunks."""

    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | None = None
    chunks: AsyncGenerator[bytes, None] | None = None


class Serving:
    def __init__(
        self,
        calls: Calls,
        accounting: Accounting,
        on_finish: Callable[[CallRecord], None],
        cache: ResponseCache | None,
        limits: RateLimiter,
        redis: RedisBackend | None = None,
    ) -> None:
        self.calls = calls
        self.accounting = accounting
        self._on_finish = on_finish
        self.cache = cache
        self.limits = limits
        self.redis = redis
        self.metrics = accounting.metrics  # cache results and rate-limit refusals (edgeproxy/metrics.py)

    @classmethod
    def build(
        cls,
        config: Config,
        redis: RedisBackend | None,
        calls: Calls,
        accounting: Accounting,
        on_finish: Callable[[CallRecord], None],
    ) -> Serving:
        lease_s = max((d.timeout_s for d in config.deployments), default=600.0) + LEASE_MARGIN_S
        prefix = config.redis.prefix if config.redis is not None else "edgeproxy"
        cache = open_response_cache(config.litellm.cache, redis)
        return cls(calls, accounting, on_finish, cache, RateLimiter(redis, prefix, lease_s), redis)

    async def readiness(self) -> dict[str, object]:
        """The cache and Redis part of /health/readiness. Redis down does not make the proxy unready: it serves
        without it (cache misses, per-process limits), so pulling every instance out of a load balancer at once
        would turn a degraded service into an outage."""
        report: dict[str, object] = {"cache": "not configured"}
        if self.redis is not None:
            up = await self.redis.ping()
            report["redis"] = "connected" if up else "unreachable"
            report["redis_url"] = self.redis.settings.public_url
            if not up:
                report["redis_error"] = self.redis.last_error
        if self.cache is not None:
            report["cache"] = report["redis"] if self.cache.kind == "redis" else "local"
            report["cache_type"] = self.cache.kind
            if self.cache.tracker is not None:
                report["cache_key_tracking"] = self.cache.tracker.state
        return report

    async def answer(self, record: CallRecord, *, stream: bool, include_usage: bool) -> Answer:
        raw_controls = record.body.pop("cache", None)
        plan = self.cache.plan(record, raw_controls, stream=stream) if self.cache is not None else None
        reading = plan if self.cache is not None and plan is not None and plan.read else None
        # Key tracking knows most misses without asking Redis (cache/tracking.py).
        absent = self.cache is not None and reading is not None and self.cache.known_absent(reading)
        # The cache lookup rides along with the admission when both go to Redis: one round trip for the two.
        lookup = self.cache.read_command(reading) if self.cache is not None and reading and not absent else None
        try:
            ticket = await self.limits.admit(record.principal, record.call_id, also=() if lookup is None else [lookup])
        except RateLimitError:
            if self.metrics is not None:
                self.metrics.rate_limited()
            raise
        handed_over = False  # a stream settles its ticket when it ends
        entry: Entry | None = None  # the answer to store in the cache
        try:
            hit = await self._look_up(reading, ticket, absent) if reading is not None else None
            self.accounting.admit(record)
            if hit is not None and plan is not None:
                return self._from_cache(record, plan, hit, ticket, stream, include_usage)
            if not stream:
                body = dumps(await self.calls.complete(record))
                if self.cache is not None and plan is not None and plan.write:
                    entry = self.cache.entry(plan, record.usage, body=body)
                return Answer({**record.headers(), **ticket.headers}, body=body)
            upstream = await self.calls.open_stream(record)
            handed_over = True
            chunks = self._relay(record, upstream, include_usage, plan, ticket)
            return Answer({**record.headers(), **ticket.headers}, chunks=chunks)
        except ProxyError as exc:
            exc.headers = {**ticket.headers, **exc.headers}
            raise
        finally:
            if not handed_over:
                with trio.CancelScope(shield=True):
                    await self._settle(ticket, record, entry)

    async def _look_up(self, plan: CachePlan, ticket: Ticket, absent: bool) -> CachedAnswer | None:
        assert self.cache is not None
        if absent:
            hit = None
        elif ticket.also is not None:  # sent with the admission
            hit = self.cache.answer_from(ticket.also[0], plan)
        else:
            hit = await self.cache.lookup(plan)
        if self.metrics is not None:
            self.metrics.cache_lookup(hit is not None)
        return hit

    async def _settle(self, ticket: Ticket, record: CallRecord, entry: Entry | None) -> None:
        """Settle the rate-limit ticket and store the answer; with Redis, both leave with the next pipeline."""
        await ticket.release(_tokens(record))
        if self.cache is not None and entry is not None:
            await self.cache.write(entry)

    def _from_cache(
        self, record: CallRecord, plan: CachePlan, hit: CachedAnswer, ticket: Ticket, stream: bool, include_usage: bool
    ) -> Answer:
        record.cache_hit = True
        record.cache_key = plan.header_key
        record.output = hit.response if hit.response is not None else hit.chunks  # for stored prompts (opt-in)
        record.usage = hit.usage
        self._on_finish(record)  # cost 0: no deployment was called
        headers = {**record.headers(), **ticket.headers}
        if stream:
            return Answer(headers, chunks=replay(hit, record, include_usage))
        return Answer(headers, body=dumps({**(hit.response or {}), "model": record.requested_model}))

    async def _relay(
        self,
        record: CallRecord,
        upstream: UpstreamStream,
        include_usage: bool,
        plan: CachePlan | None,
        ticket: Ticket,
    ) -> AsyncGenerator[bytes, None]:
        storing = self.cache is not None and plan is not None and plan.write
        if storing:
            record.chunks = []
        entry: Entry | None = None
        try:
            async with aclosing(self.calls.relay(record, upstream, include_usage)) as relayed:
                async for data in relayed:
                    yield data
            # Only a stream that reached its end is worth replaying (not one cut by an error or a departed client).
            if storing and self.cache is not None and plan is not None and record.error is None:
                entry = self.cache.entry(plan, record.usage, chunks=record.chunks)
        finally:
            with trio.CancelScope(shield=True):
                await self._settle(ticket, record, entry)


def _tokens(record: CallRecord) -> int:
    """What the call counts against tpm limits: a cache hit or a failed call before any usage costs nothing."""
    if record.cache_hit or record.usage is None:
        return 0
    return record.usage.total_tokens
