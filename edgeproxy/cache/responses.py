"""The response cache: decide per request whether to read and write it, and encode and replay entries.

An entry is JSON: the creation time (for `s-maxage`), the usage the original call reported (hits are logged
with it, at cost 0), and either the response object or, for a stream, its chunks (replayed as SSE, with a usage
chunk when the new request asks for one). A cache that does not answer is a miss: reads and writes never fail a
request.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from typing import Any

import trio

from edgeproxy.cache.keys import CacheControls, cache_key, is_cache_hash, parse_controls
from edgeproxy.cache.local import DEFAULT_MAX_BYTES, DEFAULT_MAX_ENTRIES, LocalLRU
from edgeproxy.cache.store import CacheStore, LocalStore, RedisStore
from edgeproxy.cache.tracking import KeyTracker
from edgeproxy.calls import SSE_DONE, CallRecord, dumps, sse_event
from edgeproxy.config import CacheSettings
from edgeproxy.errors import InvalidRequestError
from edgeproxy.providers.base import CallType, Usage
from edgeproxy.redisclient import Command, RedisBackend, RedisUnavailable, ReplyError

log = logging.getLogger("edgeproxy.cache")
DEFAULT_NAMESPACE = "litellm.cache"
ENTRY_VERSION = 1
CALL_TYPES = {
    "acompletion": CallType.CHAT,
    "completion": CallType.CHAT,
    "atext_completion": CallType.COMPLETION,
    "text_completion": CallType.COMPLETION,
    "aembedding": CallType.EMBEDDING,
    "embedding": CallType.EMBEDDING,
}


@dataclass(slots=True)  # not frozen: a frozen dataclass costs ~2 µs more to build, and one is built per request
class CachePlan:
    """What the cache does for one request (not changed once made)."""

    hash: str
    namespace: str
    header_key: str  # x-litellm-cache-key: the hash, prefixed by the namespace when not the configured one
    read: bool
    write: bool
    ttl_s: float
    max_age_s: float | None

    @property
    def storage_key(self) -> str:
        return f"{self.namespace}:{self.hash}"


@dataclass(slots=True)  # not frozen, as CachePlan
class Entry:
    """An encoded answer and where and for how long to keep it."""

    key: str
    value: bytes
    ttl_s: float


@dataclass(frozen=True, slots=True)
class CachedAnswer:
    usage: Usage
    response: dict[str, Any] | None = None
    chunks: list[dict[str, Any]] | None = None


class ResponseCache:
    def __init__(self, settings: CacheSettings, store: CacheStore, tracker: KeyTracker | None = None) -> None:
        self.settings = settings
        self.store = store
        self.namespace = settings.namespace or DEFAULT_NAMESPACE
        self.tracker = tracker  # which entries exist in Redis, when it tells us (cache/tracking.py)
        self._closing = trio.Event()
        self._call_types = frozenset(CALL_TYPES[n] for n in settings.supported_call_types if n in CALL_TYPES)

    @property
    def kind(self) -> str:
        return self.store.kind

    # ---------------------------------------------------------------- per request

    def plan(self, record: CallRecord, raw_controls: Any, *, stream: bool) -> CachePlan | None:
        """None when this call type is not cached; 400/403 for cache controls that are malformed or not allowed."""
        key_row = record.principal.key or {}
        controls = parse_controls(raw_controls, key_row.get("allowed_cache_controls") or None)
        if record.call_type not in self._call_types:
            return None
        digest = cache_key(record.call_type, record.model_group, record.body, stream=stream)
        namespace = controls.namespace or self.namespace
        ttl_s = controls.ttl_s if controls.ttl_s is not None else self.settings.ttl_s
        return CachePlan(
            hash=digest,
            namespace=namespace,
            header_key=digest if namespace == self.namespace else f"{namespace}:{digest}",
            read=not controls.no_cache,
            write=not controls.no_store and ttl_s > 0,
            ttl_s=ttl_s,
            max_age_s=controls.max_age_s,
        )

    def known_absent(self, plan: CachePlan) -> bool:
        """The entry certainly does not exist: a miss without asking Redis (key tracking)."""
        tracker = self.tracker
        return tracker is not None and plan.namespace == self.namespace and not tracker.may_exist(plan.hash)

    async def lookup(self, plan: CachePlan) -> CachedAnswer | None:
        try:
            raw = await self.store.get(plan.storage_key)
        except RedisUnavailable as error:
            log.debug("cache lookup skipped: %s", error)
            return None
        return self.answer_from(raw, plan)

    def read_command(self, plan: CachePlan) -> Command | None:
        """The lookup as a Redis command, to pipeline with the rate-limit admission (None: not a Redis cache)."""
        return self.store.get_command(plan.storage_key)

    def answer_from(self, raw: Any, plan: CachePlan) -> CachedAnswer | None:
        """A stored entry (or a lookup's reply: None, an error) as an answer; None for a miss."""
        if isinstance(raw, ReplyError):
            log.debug("cache lookup failed: %s", raw)
            return None
        return _decode(raw, plan.max_age_s) if isinstance(raw, bytes) else None

    def entry(
        self,
        plan: CachePlan,
        usage: Usage | None,
        *,
        body: bytes | None = None,
        chunks: list[dict[str, Any]] | None = None,
    ) -> Entry:
        """A finished call's answer, ready to store under the plan's key: `body`, the response object as the
        client got it (JSON, put in as it is rather than encoded a second time), or a stream's chunks."""
        if body is not None and usage is not None:
            # The common case written out: the same JSON as the dict below through dumps, at a third of the cost.
            head = b'{"v":%d,"created":%r,"usage":[%d,%d],"response":' % (
                ENTRY_VERSION,
                time.time(),
                usage.prompt_tokens,
                usage.completion_tokens,
            )
            return Entry(plan.storage_key, head + body + b"}", plan.ttl_s)
        entry: dict[str, Any] = {"v": ENTRY_VERSION, "created": time.time()}
        if usage is not None:
            entry["usage"] = [usage.prompt_tokens, usage.completion_tokens]
        if body is not None:
            return Entry(plan.storage_key, dumps(entry)[:-1] + b',"response":' + body + b"}", plan.ttl_s)
        entry["chunks"] = chunks or []
        return Entry(plan.storage_key, dumps(entry), plan.ttl_s)

    async def write(self, entry: Entry) -> None:
        if self.tracker is not None:
            self.tracker.stored(entry.key)
        try:
            await self.store.put(entry.key, entry.value, entry.ttl_s)
        except RedisUnavailable as error:
            log.debug("cache write skipped: %s", error)

    # ---------------------------------------------------------------- admin

    def storage_keys(self, keys: Sequence[str]) -> list[str]:
        """Storage keys for the values clients saw in x-litellm-cache-key (a hash, or namespace:hash)."""
        found = []
        for key in keys:
            namespace, _, digest = key.rpartition(":")
            if not is_cache_hash(digest):
                raise InvalidRequestError(f"{key!r} is not a cache key (see x-litellm-cache-key)", param="keys")
            found.append(f"{namespace or self.namespace}:{digest}")
        return found

    async def delete(self, keys: Sequence[str]) -> int:
        return await self.store.delete(self.storage_keys(keys))

    async def flush(self, namespace: str | None = None) -> int:
        return await self.store.flush(namespace or self.namespace)

    async def ping(self) -> bool:
        return await self.store.ping()

    async def serve(self) -> None:
        """Key tracking, until `close` (nothing to do without it)."""
        if self.tracker is None:
            return
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.tracker.serve)
            await self._closing.wait()
            nursery.cancel_scope.cancel()

    def close(self) -> None:
        self._closing.set()


def _decode(raw: bytes, max_age_s: float | None) -> CachedAnswer | None:
    try:
        entry = json.loads(raw)
        if entry.get("v") != ENTRY_VERSION:
            return None
        if max_age_s is not None and time.time() - float(entry["created"]) > max_age_s:
            return None
        prompt, completion = entry.get("usage") or (0, 0)
        usage = Usage(prompt_tokens=int(prompt), completion_tokens=int(completion))
        if "response" in entry:
            return CachedAnswer(usage, response=entry["response"])
        return CachedAnswer(usage, chunks=list(entry["chunks"]))
    except (ValueError, TypeError, KeyError, AttributeError):
        log.warning("ignoring an unreadable cache entry")
        return None


async def replay(answer: CachedAnswer, record: CallRecord, include_usage: bool) -> AsyncGenerator[bytes, None]:
    """A cached stream as SSE, as the original was sent (model renamed to what this request asked for)."""
    last: dict[str, Any] = {}
    for chunk in answer.chunks or []:
        last = {**chunk, "model": record.requested_model}
        yield sse_event(last)
    if include_usage:
        yield sse_event(
            {
                "id": last.get("id", f"chatcmpl-{record.call_id}"),
                "object": last.get("object", "chat.completion.chunk"),
                "created": last.get("created", int(record.start_time)),
                "model": record.requested_model,
                "choices": [],
                "usage": answer.usage.to_openai(),
            }
        )
    yield SSE_DONE


def open_response_cache(settings: CacheSettings, backend: RedisBackend | None) -> ResponseCache | None:
    """The configured response cache, or None when `litellm_settings.cache` is off."""
    if not settings.enabled:
        return None
    if settings.type == "redis":
        if backend is None:  # config resolution refuses this; a second line of defence costs nothing
            raise ValueError("cache type redis without a Redis")
        endpoint = backend.native_endpoint
        tracker = None
        if endpoint is not None and settings.track_keys:
            tracker = KeyTracker(backend, endpoint, settings.namespace or DEFAULT_NAMESPACE)
        return ResponseCache(settings, RedisStore(backend), tracker)
    params = settings.params
    lru = LocalLRU(
        max_entries=int(params.get("max_entries") or DEFAULT_MAX_ENTRIES),
        max_bytes=int(params.get("max_size_bytes") or DEFAULT_MAX_BYTES),
    )
    return ResponseCache(settings, LocalStore(lru))


__all__ = ["CacheControls", "CachePlan", "CachedAnswer", "Entry", "ResponseCache", "open_response_cache", "replay"]
