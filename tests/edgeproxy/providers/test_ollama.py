from __future__ import annotations

import json
from typing import Any

import pytest

from edgeproxy.errors import InvalidRequestError, UpstreamProtocolError
from edgeproxy.providers import get_provider
from edgeproxy.providers.base import CallType, Usage

from .support import Feed, deployment, feed_bytewise, feed_whole, sample, strip_volatile

PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
CHAT: dict[str, Any] = {"model": "qwen-dell", "messages": [{"role": "user", "content": "Why is the sky blue?"}]}


def _dep(**kw: Any) -> Any:
    return deployment("ollama", model="qwen2.5:14b-instruct-q4_K_M", api_base="http://192.168.1.10:11434", **kw)


def _chat_request(body: dict[str, Any], *, stream: bool = False, **kw: Any) -> Any:
    return get_provider("ollama_chat").build_request(_dep(**kw), CallType.CHAT, body, stream=stream)


def test_chat_request_maps_options_format_and_keep_alive() -> None:
    body = dict(
        CHAT,
        temperature=0.1,
        top_p=0.5,
        seed=7,
        stop="END",
        max_completion_tokens=99,
        presence_penalty=0.2,
        frequency_penalty=0.3,
        response_format={"type": "json_object"},
        keep_alive="10m",
    )
    request = _chat_request(body, stream=True, params={"num_ctx": 8192, "keep_alive": "1h"})
    assert request.url == "http://192.168.1.10:11434/api/chat"
    assert request.json == {
        "model": "qwen2.5:14b-instruct-q4_K_M",
        "stream": True,
        "messages": [{"role": "user", "content": "Why is the sky blue?"}],
        "options": {
            "temperature": 0.1,
            "top_p": 0.5,
            "seed": 7,
            "presence_penalty": 0.2,
            "frequency_penalty": 0.3,
            "stop": ["END"],
            "num_predict": 99,
            "num_ctx": 8192,
        },
        "format": "json",
        "keep_alive": "10m",  # the client's wins over the deployment's
    }


def test_keep_alive_and_max_tokens_from_deployment() -> None:
    request = _chat_request(CHAT, params={"keep_alive": -1}, max_tokens=300)
    assert request.json["keep_alive"] == -1
    assert request.json["options"] == {"num_predict": 300}
    assert request.json["stream"] is False


def test_json_schema_becomes_format() -> None:
    schema = {"type": "object", "properties": {"age": {"type": "integer"}}, "required": ["age"]}
    body = dict(CHAT, response_format={"type": "json_schema", "json_schema": {"name": "p", "schema": schema}})
    assert _chat_request(body).json["format"] == schema


def test_images_tools_and_tool_results_to_ollama() -> None:
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    body = {
        "messages": [
            {"role": "developer", "content": "Be brief."},
            {"role": "user", "content": [
                {"type": "text", "text": "What is this?"},
                {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
            ]},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "call_1", "type": "function",
                 "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
            ]},
            {"role": "tool", "tool_call_id": "call_1", "content": "18C, sunny"},
        ],
        "tools": tools,
        "tool_choice": "auto",
    }  # fmt: skip
    request = _chat_request(body)
    assert request.json["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What is this?", "images": [PNG]},
        {"role": "assistant", "content": "", "tool_calls": [
            {"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]},
        {"role": "tool", "content": "18C, sunny", "tool_name": "get_weather"},
    ]  # fmt: skip
    assert request.json["tools"] == tools
    assert "tool_choice" not in request.json  # Ollama has no such option


@pytest.mark.parametrize(
    "messages",
    [
        [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x.test/cat.png"}}]}],
        [{"role": "assistant", "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": "{nope"}}]}],
        [],
        "hello",
    ],
)
def test_bad_messages_raise_invalid_request(messages: Any) -> None:
    with pytest.raises(InvalidRequestError) as info:
        _chat_request({"messages": messages})
    assert info.value.param == "messages"


def test_parse_chat_response() -> None:
    obj, usage = get_provider("ollama").parse_response(_dep(), CallType.CHAT, CHAT, sample("ollama_chat.json"))
    assert obj["object"] == "chat.completion"
    assert obj["id"].startswith("chatcmpl-")
    assert obj["model"] == "qwen2.5:14b-instruct-q4_K_M"
    assert obj["choices"] == [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Paris is the capital of France."},
            "finish_reason": "stop",
            "logprobs": None,
        }
    ]
    assert obj["usage"] == {"prompt_tokens": 36, "completion_tokens": 8, "total_tokens": 44}
    assert usage == Usage(prompt_tokens=36, completion_tokens=8)


def test_parse_tool_call_response() -> None:
    obj, _ = get_provider("ollama").parse_response(_dep(), CallType.CHAT, CHAT, sample("ollama_chat_tools.json"))
    choice = obj["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    calls = choice["message"]["tool_calls"]
    assert [c["function"]["name"] for c in calls] == ["get_weather", "get_time"]
    assert json.loads(calls[0]["function"]["arguments"]) == {"city": "Paris", "unit": "celsius"}
    assert all(c["id"].startswith("call_") and c["type"] == "function" for c in calls)
    assert calls[0]["id"] != calls[1]["id"]


def test_parse_response_length_and_missing_counts() -> None:
    raw = json.dumps({"message": {"role": "assistant", "content": "abcdefgh"}, "done": True, "done_reason": "length"})
    obj, usage = get_provider("ollama").parse_response(_dep(), CallType.CHAT, CHAT, raw.encode())
    assert obj["choices"][0]["finish_reason"] == "length"
    assert usage == Usage(prompt_tokens=0, completion_tokens=2, estimated=True)


@pytest.mark.parametrize("raw", [b"garbage", b'{"model": "x", "done": true}', b'{"message": {"content": 5}}'])
def test_parse_garbage_raises(raw: bytes) -> None:
    with pytest.raises(UpstreamProtocolError):
        get_provider("ollama").parse_response(_dep(), CallType.CHAT, CHAT, raw)


@pytest.mark.parametrize("feed", [feed_whole, feed_bytewise])
def test_chat_stream_sample(feed: Feed) -> None:
    translator = get_provider("ollama").stream_translator(_dep(), CallType.CHAT, CHAT)
    chunks = feed(translator, sample("ollama_chat_stream.ndjson"))
    deltas = [c["choices"][0]["delta"] for c in chunks]
    assert deltas[0] == {"role": "assistant", "content": "The"}
    assert [d.get("content") for d in deltas[1:-1]] == [" sky", " is", " blue — Rayleigh", " scattering."]
    assert deltas[-1] == {}
    assert [c["choices"][0]["finish_reason"] for c in chunks][-2:] == [None, "stop"]
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert len({(c["id"], c["created"]) for c in chunks}) == 1
    assert translator.usage == Usage(prompt_tokens=31, completion_tokens=8)
    assert translator.text == "The sky is blue — Rayleigh scattering."
    assert translator.finished


def test_stream_bytewise_equals_whole() -> None:
    provider = get_provider("ollama")
    data = sample("ollama_chat_stream.ndjson")
    whole = feed_whole(provider.stream_translator(_dep(), CallType.CHAT, CHAT), data)
    split = feed_bytewise(provider.stream_translator(_dep(), CallType.CHAT, CHAT), data)
    assert strip_volatile(whole) == strip_volatile(split)


def test_tool_call_stream() -> None:
    translator = get_provider("ollama").stream_translator(_dep(), CallType.CHAT, CHAT)
    chunks = feed_bytewise(translator, sample("ollama_chat_tools_stream.ndjson"))
    first = chunks[0]["choices"][0]["delta"]
    assert first["role"] == "assistant"
    call = first["tool_calls"][0]
    assert (call["index"], call["type"], call["function"]["name"]) == (0, "function", "get_current_weather")
    assert json.loads(call["function"]["arguments"]) == {"format": "celsius", "location": "Toronto"}
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"
    assert translator.usage == Usage(prompt_tokens=226, completion_tokens=27)


def test_stream_error_line_and_garbage_raise() -> None:
    translator = get_provider("ollama").stream_translator(_dep(), CallType.CHAT, CHAT)
    with pytest.raises(UpstreamProtocolError, match="out of memory"):
        translator.feed(b'{"error":"llama runner process has terminated: out of memory"}\n')
    translator = get_provider("ollama").stream_translator(_dep(), CallType.CHAT, CHAT)
    with pytest.raises(UpstreamProtocolError):
        translator.feed(b"<html>\n")
    translator = get_provider("ollama").stream_translator(_dep(), CallType.CHAT, CHAT)
    with pytest.raises(UpstreamProtocolError, match="message"):
        translator.feed(b'{"done": false}\n')


def test_stream_cut_before_done_is_unfinished_without_usage() -> None:
    translator = get_provider("ollama").stream_translator(_dep(), CallType.CHAT, CHAT)
    lines = sample("ollama_chat_stream.ndjson").splitlines(keepends=True)
    feed_whole(translator, b"".join(lines[:3]))
    assert not translator.finished
    assert translator.usage is None
    assert translator.text == "The sky is"


def test_completion_request_and_stream() -> None:
    dep = _dep()
    provider = get_provider("ollama")
    body = {"prompt": ["def add("], "suffix": "\n", "max_tokens": 9}
    request = provider.build_request(dep, CallType.COMPLETION, body, stream=True)
    assert request.url.endswith("/api/generate")
    assert request.json == {
        "model": dep.model, "stream": True, "options": {"num_predict": 9}, "prompt": "def add(", "suffix": "\n",
    }  # fmt: skip
    translator = provider.stream_translator(dep, CallType.COMPLETION, body)
    chunks = feed_bytewise(translator, sample("ollama_generate_stream.ndjson"))
    assert {c["object"] for c in chunks} == {"text_completion"}
    assert "".join(c["choices"][0]["text"] for c in chunks) == "def add(a, b):\n    return a + b"
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    assert translator.usage == Usage(prompt_tokens=12, completion_tokens=9)


def test_completion_response_and_multi_prompt_rejected() -> None:
    raw = b'{"model":"m","response":"42","done":true,"done_reason":"stop","prompt_eval_count":5,"eval_count":2}'
    obj, usage = get_provider("ollama").parse_response(_dep(), CallType.COMPLETION, {"prompt": "q"}, raw)
    assert obj["object"] == "text_completion" and obj["id"].startswith("cmpl-")
    assert obj["choices"] == [{"text": "42", "index": 0, "logprobs": None, "finish_reason": "stop"}]
    assert usage == Usage(prompt_tokens=5, completion_tokens=2)
    with pytest.raises(InvalidRequestError):
        get_provider("ollama").build_request(_dep(), CallType.COMPLETION, {"prompt": ["a", "b"]}, stream=False)


def test_embeddings_request_and_response() -> None:
    dep = deployment("ollama", model="nomic-embed-text", api_base="http://localhost:11434")
    body = {"input": ["first", "second"], "dimensions": 4}
    request = get_provider("ollama").build_request(dep, CallType.EMBEDDING, body, stream=False)
    assert request.url == "http://localhost:11434/api/embed"
    assert request.json == {
        "model": "nomic-embed-text",
        "input": ["first", "second"],
        "truncate": True,
        "dimensions": 4,
    }
    obj, usage = get_provider("ollama").parse_response(dep, CallType.EMBEDDING, body, sample("ollama_embed.json"))
    assert obj["object"] == "list" and obj["model"] == "nomic-embed-text"
    assert [(d["object"], d["index"]) for d in obj["data"]] == [("embedding", 0), ("embedding", 1)]
    assert obj["data"][1]["embedding"][1] == pytest.approx(0.060121342)
    assert obj["usage"] == {"prompt_tokens": 8, "total_tokens": 8}
    assert usage == Usage(prompt_tokens=8)


def test_embeddings_reject_token_arrays() -> None:
    with pytest.raises(InvalidRequestError) as info:
        get_provider("ollama").build_request(_dep(), CallType.EMBEDDING, {"input": [[1, 2, 3]]}, stream=False)
    assert info.value.param == "input"


def test_probe_and_error_message() -> None:
    provider = get_provider("ollama")
    probe = provider.probe_request(_dep(api_key="secret"))
    assert (probe.method, probe.url) == ("GET", "http://192.168.1.10:11434/api/tags")
    assert probe.headers == {"Authorization": "Bearer secret"}
    assert provider.error_message(404, b'{"error":"model \'qwen9\' not found"}') == "model 'qwen9' not found"
