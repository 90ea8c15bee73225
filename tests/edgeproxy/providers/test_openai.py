from __future__ import annotations

import json
from typing import Any

import pytest

from edgeproxy.errors import UpstreamProtocolError
from edgeproxy.providers import get_provider
from edgeproxy.providers.base import CallType, Usage

from .support import Feed, deployment, feed_bytewise, feed_whole, sample, strip_volatile

CHAT: dict[str, Any] = {"model": "gpt-4o", "messages": [{"role": "user", "content": "Hi"}]}


def test_chat_request_url_headers_and_model() -> None:
    dep = deployment(
        "openai",
        model="gpt-4o",
        api_base="https://api.openai.com/v1",
        api_key="sk-test",
        params={"organization": "org-1", "extra_headers": {"X-Trace": "abc"}},
    )
    request = get_provider("openai").build_request(dep, CallType.CHAT, dict(CHAT, model="public-name"), stream=False)
    assert request.method == "POST"
    assert request.url == "https://api.openai.com/v1/chat/completions"
    assert request.headers == {"Authorization": "Bearer sk-test", "X-Trace": "abc", "OpenAI-Organization": "org-1"}
    assert request.json["model"] == "gpt-4o"
    assert request.json["messages"] == CHAT["messages"]


@pytest.mark.parametrize(
    ("call", "path"),
    [(CallType.CHAT, "/chat/completions"), (CallType.COMPLETION, "/completions"), (CallType.EMBEDDING, "/embeddings")],
)
def test_paths_and_deepseek_base_without_v1(call: CallType, path: str) -> None:
    dep = deployment("deepseek", model="deepseek-chat", api_base="https://api.deepseek.com")
    request = get_provider("deepseek").build_request(dep, call, {"input": "x", "prompt": "x"}, stream=False)
    assert request.url == "https://api.deepseek.com" + path
    assert "Authorization" not in request.headers  # no key configured


def test_stream_forces_usage_and_keeps_other_stream_options() -> None:
    body: dict[str, Any] = dict(
        CHAT, stream=True, stream_options={"include_usage": False, "include_obfuscation": False}
    )
    request = get_provider("openai").build_request(deployment("openai"), CallType.CHAT, body, stream=True)
    assert request.json["stream"] is True
    assert request.json["stream_options"] == {"include_usage": True, "include_obfuscation": False}
    assert body["stream_options"]["include_usage"] is False  # the client's body is not mutated


def test_non_stream_drops_stream_options() -> None:
    body = dict(CHAT, stream=True, stream_options={"include_usage": True})
    request = get_provider("openai").build_request(deployment("openai"), CallType.CHAT, body, stream=False)
    assert "stream" not in request.json and "stream_options" not in request.json


def test_deployment_defaults_apply_only_when_unset() -> None:
    dep = deployment("moonshot", params={"temperature": 0.3, "top_p": 0.8}, max_tokens=512)
    body = dict(CHAT, temperature=0.9)
    request = get_provider("moonshot").build_request(dep, CallType.CHAT, body, stream=False)
    assert (request.json["temperature"], request.json["top_p"], request.json["max_tokens"]) == (0.9, 0.8, 512)


def test_parse_response_passes_through_with_cached_usage() -> None:
    raw = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "gpt-4o-2024-08-06",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hey"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 2006, "completion_tokens": 300, "total_tokens": 2306,
                  "prompt_tokens_details": {"cached_tokens": 1920}},
    }  # fmt: skip
    obj, usage = get_provider("openai").parse_response(
        deployment("openai"), CallType.CHAT, CHAT, json.dumps(raw).encode()
    )
    assert obj == raw
    assert usage == Usage(prompt_tokens=2006, completion_tokens=300, cache_read_tokens=1920)


def test_parse_response_without_usage_gives_none() -> None:
    raw = b'{"choices": [{"index": 0, "message": {"role": "assistant", "content": "x"}}]}'
    obj, usage = get_provider("openai").parse_response(deployment("openai", model="local"), CallType.CHAT, CHAT, raw)
    assert usage is None
    assert obj["model"] == "local"


@pytest.mark.parametrize(
    ("call", "raw"),
    [
        (CallType.CHAT, b"<html>502 Bad Gateway</html>"),
        (CallType.CHAT, b'{"object": "chat.completion"}'),
        (CallType.EMBEDDING, b'{"choices": []}'),
        (CallType.CHAT, b"[]"),
    ],
)
def test_parse_response_garbage_raises(call: CallType, raw: bytes) -> None:
    with pytest.raises(UpstreamProtocolError):
        get_provider("openai").parse_response(deployment("openai"), call, {}, raw)


@pytest.mark.parametrize("feed", [feed_whole, feed_bytewise])
def test_stream_sample_strips_usage_chunk_and_keeps_usage(feed: Feed) -> None:
    translator = get_provider("openai").stream_translator(deployment("openai"), CallType.CHAT, CHAT)
    chunks = feed(translator, sample("openai_chat_stream.sse"))
    assert len(chunks) == 5  # role, three content chunks, finish; not the usage chunk nor [DONE]
    assert all("usage" not in c for c in chunks)
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert translator.text == "Bonjour à tous ☀️"
    assert translator.usage == Usage(prompt_tokens=1523, completion_tokens=6, cache_read_tokens=1280)
    assert translator.finished


def test_stream_chunk_with_choices_and_usage_is_kept_without_usage() -> None:
    translator = get_provider("deepseek").stream_translator(deployment("deepseek"), CallType.CHAT, CHAT)
    chunks = feed_bytewise(translator, sample("openai_tool_stream.sse"))
    assert [c["choices"][0]["finish_reason"] for c in chunks] == [None, None, None, "tool_calls"]
    assert "usage" not in chunks[-1]
    assert translator.usage == Usage(prompt_tokens=120, completion_tokens=21, cache_read_tokens=64)
    calls = chunks[0]["choices"][0]["delta"]["tool_calls"]
    assert calls[0]["id"] == "call_0_5c3f3c70"
    assert translator.text == '{"city": "Paris"}'  # tool arguments count for the estimate


def test_stream_split_feeding_gives_identical_chunks() -> None:
    provider = get_provider("openai")
    data = sample("openai_chat_stream.sse")
    whole = feed_whole(provider.stream_translator(deployment("openai"), CallType.CHAT, CHAT), data)
    split = feed_bytewise(provider.stream_translator(deployment("openai"), CallType.CHAT, CHAT), data)
    assert strip_volatile(whole) == strip_volatile(split)
    assert whole == split  # passthrough: even ids are the upstream's


def test_stream_chunks_come_with_the_bytes_they_arrived_as() -> None:
    """feed_wire: each chunk's JSON as it came (minus a trailing usage: null), parsing to the chunk itself."""
    data = sample("openai_chat_stream.sse")
    translator = get_provider("openai").stream_translator(deployment("openai"), CallType.CHAT, CHAT)
    pairs = translator.feed_wire(data) + translator.close_wire()
    assert len(pairs) == 5
    for chunk, wire in pairs:
        assert wire is not None and json.loads(wire) == chunk
        assert wire.removesuffix(b"}") + b',"usage":null}' in data  # the upstream's bytes
    spaced = b'data: {"id": "c", "choices": [{"index": 0, "delta": {"content": "x"}}], "usage": null}\n\n'
    ((chunk, wire),) = translator.feed_wire(spaced)
    assert wire == b'{"id": "c", "choices": [{"index": 0, "delta": {"content": "x"}}]}'


@pytest.mark.parametrize(
    "event",
    [
        # usage numbers on a chunk with choices: the chunk sent on has none, so its bytes say too much
        b'data: {"id":"c","choices":[{"delta":{}}],"usage":{"prompt_tokens":1,"completion_tokens":2}}\n\n',
        # usage null, but not where it can be cut out alone
        b'data: {"usage":null,"id":"c","choices":[{"delta":{}}]}\n\n',
        # two documents in one event (several data lines): neither is the event's text
        b'data: {"id":"a","choices":[{"delta":{}}]}\ndata: {"id":"b","choices":[{"delta":{}}]}\n\n',
    ],
)
def test_stream_chunks_without_trustworthy_bytes_come_without(event: bytes) -> None:
    translator = get_provider("openai").stream_translator(deployment("openai"), CallType.CHAT, CHAT)
    pairs = translator.feed_wire(event)
    assert pairs and all(wire is None for _, wire in pairs)
    assert all("usage" not in chunk for chunk, _ in pairs)


def test_completion_stream_collects_text() -> None:
    data = (
        b'data: {"id":"cmpl-1","object":"text_completion","created":1,"model":"m",'
        b'"choices":[{"text":"def f","index":0,"logprobs":null,"finish_reason":null}]}\n\n'
        b'data: {"id":"cmpl-1","object":"text_completion","created":1,"model":"m",'
        b'"choices":[{"text":"():","index":0,"logprobs":null,"finish_reason":"length"}]}\n\n'
        b"data: [DONE]"  # no trailing blank line: close() must still see it
    )
    translator = get_provider("openai").stream_translator(deployment("openai"), CallType.COMPLETION, {})
    chunks = feed_bytewise(translator, data)
    assert len(chunks) == 2
    assert translator.text == "def f():"
    assert translator.finished
    assert translator.usage is None


def test_stream_garbage_and_error_events_raise() -> None:
    translator = get_provider("openai").stream_translator(deployment("openai"), CallType.CHAT, CHAT)
    with pytest.raises(UpstreamProtocolError):
        translator.feed(b"data: {not json\n\n")
    translator = get_provider("openai").stream_translator(deployment("openai"), CallType.CHAT, CHAT)
    with pytest.raises(UpstreamProtocolError, match="Rate limit reached"):
        translator.feed(b'data: {"error": {"message": "Rate limit reached for gpt-4o"}}\n\n')
    translator = get_provider("openai").stream_translator(deployment("openai"), CallType.CHAT, CHAT)
    with pytest.raises(UpstreamProtocolError, match="choices"):
        translator.feed(b'data: {"id": "x"}\n\n')


def test_stream_not_finished_without_done() -> None:
    translator = get_provider("openai").stream_translator(deployment("openai"), CallType.CHAT, CHAT)
    data = sample("openai_chat_stream.sse")
    translator.feed(data[: data.index(b"[DONE]")])
    assert not translator.finished
    assert translator.text.startswith("Bonjour")


def test_probe_request() -> None:
    dep = deployment("openai", api_base="http://mac:8001/v1", api_key="k")
    probe = get_provider("openai").probe_request(dep)
    assert (probe.method, probe.url, probe.headers["Authorization"]) == ("GET", "http://mac:8001/v1/models", "Bearer k")
