"""Cache keys and per-request cache controls.

A cache key is the sha256 of the request's canonical form: every parameter that can change the answer, with
the model replaced by its model group (so every deployment and alias of a group shares entries), the call type,
and whether the answer is streamed (streams are stored as chunks, plain answers as one object). Parameters
that only say how to deliver, bill or trace the call (`stream_options`, `user`, `metadata`, `cache`...) are left
out. Messages are all kept, whatever their number: LiteLLM silently skips chats over 4 messages, and a cache
that ignores part of the prompt would answer a different question.

Canonical means: JSON with sorted keys and no spaces, and whole floats written as integers, so that
`"temperature": 1` and `1.0` share an entry.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from json.encoder import encode_basestring  # type: ignore[attr-defined]
from typing import Any

from edgeproxy.errors import InvalidRequestError, PermissionDeniedError
from edgeproxy.jsonwriter import writer
from edgeproxy.providers.base import CallType

# Delivery, billing and tracing fields: they never change what the model answers.
IGNORED_FIELDS = frozenset(
    {
        "model",  # replaced by the model group
        "stream",  # part of the key on its own, as a boolean
        "stream_options",
        "cache",
        "user",
        "metadata",
        "litellm_metadata",
        "tags",
        "timeout",
        "request_timeout",
        "num_retries",
        "fallbacks",
        "context_window_fallbacks",
        "mock_testing_fallbacks",
        "extra_headers",
        "store",
        "service_tier",
    }
)
CONTROL_NAMES = ("no-cache", "no-store", "ttl", "s-maxage", "namespace")
_NAMESPACE = re.compile(r"^[A-Za-z0-9_.:@/-]{1,128}$")
_HASH = re.compile(r"^[0-9a-f]{64}$")


def canonical(value: Any) -> Any:
    """The value with whole floats as ints (recursively), so equal numbers serialise the same way."""
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {str(k): canonical(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [canonical(v) for v in value]
    return value


_canonical_json = writer(sort_keys=True, allow_nan=False)
_json_string = encode_basestring  # a str as the encoder above writes it


def cache_key(call: CallType, group: str, body: Mapping[str, Any], *, stream: bool) -> str:
    """sha256 hex of the request's answer-changing parameters (see the module docstring).

    The hashed text is `{"call":..,"model":..,"params":..,"stream":..}` in canonical JSON (keys sorted), written
    out here rather than built as a dict and encoded whole, and the walk that rewrites whole floats is skipped
    when the parameters hold none: such a float is written `1.0` or `1e+16`, so text without `.0` and `e+`
    has none (a prompt that says "2.0" takes the walk, to the same key).
    """
    params = {k: v for k, v in body.items() if k not in IGNORED_FIELDS and v is not None}
    text = _canonical_json(params)
    if ".0" in text or "e+" in text:
        text = _canonical_json(canonical(params))
    flag = "true" if stream else "false"
    document = f'{{"call":{_json_string(call.value)},"model":{_json_string(group)},"params":{text},"stream":{flag}}}'
    return hashlib.sha256(document.encode("utf-8")).hexdigest()


def is_cache_hash(value: str) -> bool:
    return bool(_HASH.match(value))


@dataclass(frozen=True, slots=True)
class CacheControls:
    """The request's `cache` object (LiteLLM's dynamic cache controls)."""

    no_cache: bool = False  # do not answer from the cache (the fresh answer is still stored)
    no_store: bool = False  # do not store this answer
    ttl_s: float | None = None  # store for this long instead of the configured ttl
    max_age_s: float | None = None  # s-maxage: only accept an entry at most this old
    namespace: str | None = None  # read and write under this namespace instead of the configured one


NO_CONTROLS = CacheControls()  # most requests: made once (a frozen dataclass is slow to build)


def _seconds(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        raise InvalidRequestError(f"cache.{name} must be a number of seconds >= 0", param=f"cache.{name}")
    return float(value)


def parse_controls(raw: Any, allowed: Sequence[str] | None) -> CacheControls:
    """Read `body["cache"]`. 400 when malformed; 403 when the key's `allowed_cache_controls` (non-empty) lacks one.

    As in LiteLLM, an empty `allowed_cache_controls` allows every control; unknown control names are ignored
    (but still need permission when the key has a list).
    """
    if raw is None:
        return NO_CONTROLS
    if not isinstance(raw, dict):
        raise InvalidRequestError("'cache' must be an object like {\"no-cache\": true}", param="cache")
    if allowed:
        for name in raw:
            if name not in allowed:
                raise PermissionDeniedError(
                    f"this key may not set {name!r} as a cache control; allowed: {', '.join(allowed)}",
                    param=f"cache.{name}",
                )
    namespace = raw.get("namespace")
    if namespace is not None and not (isinstance(namespace, str) and _NAMESPACE.match(namespace)):
        raise InvalidRequestError(
            "cache.namespace must be 1-128 characters of letters, digits and . _ : @ / -", param="cache.namespace"
        )
    return CacheControls(
        no_cache=raw.get("no-cache") is True,
        no_store=raw.get("no-store") is True,
        ttl_s=_seconds(raw["ttl"], "ttl") if raw.get("ttl") is not None else None,
        max_age_s=_seconds(raw["s-maxage"], "s-maxage") if raw.get("s-maxage") is not None else None,
        namespace=namespace,
    )
