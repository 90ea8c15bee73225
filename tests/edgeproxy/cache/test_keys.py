"""Cache keys: what changes the answer changes the key, and nothing else does."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest

from edgeproxy.cache import CacheControls, cache_key, parse_controls
from edgeproxy.cache.keys import IGNORED_FIELDS, canonical
from edgeproxy.errors import InvalidRequestError, PermissionDeniedError
from edgeproxy.providers.base import CallType

CHAT: dict[str, Any] = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], "temperature": 0.5}


def key(body: dict[str, Any], group: str = "g", call: CallType = CallType.CHAT, stream: bool = False) -> str:
    return cache_key(call, group, body, stream=stream)


def test_the_model_is_replaced_by_its_group() -> None:
    assert key(CHAT) == key({**CHAT, "model": "an-alias-of-g"})
    assert key(CHAT, group="g") != key(CHAT, group="other-group")


def test_field_order_whole_floats_and_delivery_fields_do_not_matter() -> None:
    reordered = {"temperature": 0.5, "messages": [{"content": "hi", "role": "user"}], "model": "x"}
    assert key(CHAT) == key(reordered)
    assert key({**CHAT, "temperature": 1}) == key({**CHAT, "temperature": 1.0})
    delivery = {
        "user": "u1", "metadata": {"a": 1}, "stream_options": {"include_usage": True}, "cache": {"ttl": 5},
        "timeout": 30, "tags": ["x"], "max_tokens": None,
    }  # fmt: skip
    assert key(CHAT) == key({**CHAT, **delivery})


@pytest.mark.parametrize(
    "change",
    [
        {"temperature": 0.6},
        {"max_tokens": 10},
        {"top_p": 0.9},
        {"tools": [{"type": "function", "function": {"name": "f"}}]},
        {"response_format": {"type": "json_object"}},
        {"seed": 1},
        {"messages": [{"role": "user", "content": "hi!"}]},
        {"messages": [{"role": "system", "content": "hi"}]},
    ],
)
def test_what_changes_the_answer_changes_the_key(change: dict[str, Any]) -> None:
    assert key(CHAT) != key({**CHAT, **change})


def test_every_message_counts_however_many_there_are() -> None:
    # LiteLLM skips caching chats of more than 4 messages; here message 20 matters as much as message 1.
    long = [{"role": "user" if i % 2 == 0 else "assistant", "content": f"m{i}"} for i in range(20)]
    changed = [*long[:-1], {"role": "user", "content": "m19 but different"}]
    assert key({**CHAT, "messages": long}) != key({**CHAT, "messages": changed})


def test_call_type_and_streaming_are_part_of_the_key() -> None:
    body = {"model": "m", "input": "hi"}
    assert key(body, call=CallType.EMBEDDING) != key({"model": "m", "prompt": "hi"}, call=CallType.COMPLETION)
    assert key(CHAT, stream=True) != key(CHAT, stream=False)
    assert len(key(CHAT)) == 64 and int(key(CHAT), 16) >= 0


def test_controls() -> None:
    assert parse_controls(None, None) == CacheControls()
    parsed = parse_controls({"no-cache": True, "no-store": True, "ttl": 5, "s-maxage": 10, "namespace": "a.b"}, None)
    assert parsed == CacheControls(no_cache=True, no_store=True, ttl_s=5.0, max_age_s=10.0, namespace="a.b")
    assert parse_controls({"no-cache": False, "use-cache": True}, []) == CacheControls()  # unknown: ignored


def test_controls_a_key_may_not_use_are_refused() -> None:
    assert parse_controls({"no-cache": True}, ["no-cache"]).no_cache
    with pytest.raises(PermissionDeniedError) as refused:
        parse_controls({"no-cache": True, "ttl": 5}, ["no-cache"])
    assert refused.value.param == "cache.ttl"


@pytest.mark.parametrize(
    "raw", ["no-cache", ["ttl"], {"ttl": -1}, {"ttl": "5"}, {"s-maxage": True}, {"namespace": "has space"}]
)
def test_malformed_controls_are_a_400(raw: Any) -> None:
    with pytest.raises(InvalidRequestError):
        parse_controls(raw, None)


def _key_as_first_written(call: CallType, group: str, body: dict[str, Any], stream: bool) -> str:
    """The key as the first version computed it: entries stored by it (or by another instance still running
    it) must keep their keys."""
    params = {k: v for k, v in body.items() if k not in IGNORED_FIELDS and v is not None}
    document = {"call": call.value, "model": group, "stream": stream, "params": canonical(params)}
    text = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@pytest.mark.parametrize(
    "body",
    [
        CHAT,
        {**CHAT, "temperature": 1.0, "top_p": 1e16, "max_tokens": 5},  # whole floats, written 1.0 and 1e+16
        {**CHAT, "temperature": 0.05, "frequency_penalty": -2e-05},  # floats that are not whole
        {"model": "m", "messages": [{"role": "user", "content": 'version 2.0, é ☀️ "quoted" \\ e+1'}]},
        {"model": "m", "tools": [{"type": "function", "function": {"parameters": {"minimum": 3.0, "b": [1.0, 2]}}}]},
        {"model": "m", "input": ["a", "b"], "dimensions": 256},
    ],
)
@pytest.mark.parametrize("stream", [False, True])
def test_keys_stay_what_they_were(body: dict[str, Any], stream: bool) -> None:
    for call, group in ((CallType.CHAT, "g"), (CallType.EMBEDDING, 'a "quoted" group é')):
        assert cache_key(call, group, body, stream=stream) == _key_as_first_written(call, group, body, stream)
