"""The response cache (`litellm_settings.cache`): keys, controls, the local LRU, the Redis store, replay."""

from edgeproxy.cache.keys import CacheControls, cache_key, parse_controls
from edgeproxy.cache.local import LocalLRU
from edgeproxy.cache.responses import CachedAnswer, CachePlan, Entry, ResponseCache, open_response_cache, replay

__all__ = [
    "CacheControls",
    "CachePlan",
    "CachedAnswer",
    "Entry",
    "LocalLRU",
    "ResponseCache",
    "cache_key",
    "open_response_cache",
    "parse_controls",
    "replay",
]
