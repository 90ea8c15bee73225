from __future__ import annotations

import json
from typing import Any

import pytest

from edgeproxy.errors import InvalidRequestError, UpstreamProtocolError
from edgeproxy.providers import get_provider
from edgeproxy.providers.base import CallType, Usage

from .support import Feed, deployment, feed_bytewise, feed_whole, sample, strip_volatile

PROVIDER = get_provider("anthropic")
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather",
        "parameters": {"type": "object", "properties": {"location": {"type": "string"}}},
    },
}


def _dep(**kw: Any) -> Any:
    return deployment("anthropic", model="claude-sonnet-4-20250514", api_base="https://api.anthropic.com", **kw)


def _request(body: dict[str, Any], *, stream: bool = False, **kw: Any) -> Any:
    return PROVIDER.build_request(_dep(**kw), CallType.CHAT, body, stream=stream)


def test_headers_url_and_default_max_tokens() -> None:
    request = _request(
        {"messages": [{"role": "user", "content": "Hi"}]},
        api_key="sk-ant-1",
        params={"extra_headers": {"anthropic-beta": "prompt-caching-2024-07-31"}},
    )
    assert request.url == "https://api.anthropic.com/v1/messages"
    assert request.headers == {
        "x-api-key": "sk-ant-1",
        "anthropic-version": "2023-06-01",
        "content-type": "application/json",
        "anthropic-beta": "prompt-caching-2024-07-31",
    }
    assert "Authorization" not in request.headers
    assert request.json == {
        "model": "claude-sonnet-4-20250514",
        "messages": [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}],
        "max_tokens": 4096,
    }


def test_api_version_param_and_max_tokens_precedence() -> None:
    body = {"messages": [{"role": "user", "content": "Hi"}]}
    request = _request(body, params={"api_version": "2024-10-22"}, max_tokens=1000)
    assert request.headers["anthropic-version"] == "2024-10-22"
    assert request.json["max_tokens"] == 1000
    assert _request(dict(body, max_completion_tokens=77), max_tokens=1000).json["max_tokens"] == 77
    assert _request(dict(body, max_tokens=12)).json["max_tokens"] == 12


def test_system_messages_lifted_and_params_mapped() -> None:
    body = {
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "Hi"},
            {"role": "system", "content": [{"type": "text", "text": "Answer in French."}]},
        ],
        "temperature": 0.2,
        "top_p": 0.9,
        "stop": "\n\nHuman:",
        "user": "user-42",
    }
    request = _request(body, stream=True)
    assert request.json["system"] == "You are terse.\n\nAnswer in French."
    assert [m["role"] for m in request.json["messages"]] == ["user"]
    assert request.json["stop_sequences"] == ["\n\nHuman:"]
    assert request.json["metadata"] == {"user_id": "user-42"}
    assert (request.json["temperature"], request.json["top_p"], request.json["stream"]) == (0.2, 0.9, True)


def test_system_with_cache_control_keeps_blocks() -> None:
    cached = {"type": "text", "text": "Long manual...", "cache_control": {"type": "ephemeral"}}
    request = _request({"messages": [{"role": "system", "content": [cached]}, {"role": "user", "content": "Q"}]})
    assert request.json["system"] == [cached]


def test_system_only_conversation_becomes_user_turn() -> None:
    request = _request({"messages": [{"role": "system", "content": "Tell a joke."}]})
    assert "system" not in request.json
    assert request.json["messages"] == [{"role": "user", "content": [{"type": "text", "text": "Tell a joke."}]}]


def test_images_both_kinds() -> None:
    content = [
        {"type": "text", "text": "Compare"},
        {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9j/4AAQSkZJRg=="}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.png", "detail": "high"}},
    ]
    blocks = _request({"messages": [{"role": "user", "content": content}]}).json["messages"][0]["content"]
    assert blocks == [
        {"type": "text", "text": "Compare"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": "/9j/4AAQSkZJRg=="}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.png"}},
    ]


def _call(call_id: str, location: str) -> dict[str, Any]:
    arguments = json.dumps({"location": location})
    return {"id": call_id, "type": "function", "function": {"name": "get_weather", "arguments": arguments}}


def test_tools_tool_calls_and_results_to_anthropic() -> None:
    body = {
        "messages": [
            {"role": "user", "content": "Weather in Paris and Rome?"},
            {"role": "assistant", "content": "Checking.", "tool_calls": [
                _call("toolu_a", "Paris"), _call("toolu_b", "Rome")
            ]},
            {"role": "tool", "tool_call_id": "toolu_a", "content": "18C"},
            {"role": "tool", "tool_call_id": "toolu_b", "content": [{"type": "text", "text": "24C"}]},
            {"role": "user", "content": "Which is warmer?"},
        ],
        "tools": [WEATHER_TOOL],
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        "parallel_tool_calls": False,
    }  # fmt: skip
    json_body = _request(body).json
    assert json_body["tools"] == [
        {
            "name": "get_weather",
            "description": "Current weather",
            "input_schema": {"type": "object", "properties": {"location": {"type": "string"}}},
        }
    ]
    assert json_body["tool_choice"] == {"type": "tool", "name": "get_weather", "disable_parallel_tool_use": True}
    user, assistant, results = json_body["messages"]
    assert user["role"] == "user" and assistant["role"] == "assistant"
    assert assistant["content"] == [
        {"type": "text", "text": "Checking."},
        {"type": "tool_use", "id": "toolu_a", "name": "get_weather", "input": {"location": "Paris"}},
        {"type": "tool_use", "id": "toolu_b", "name": "get_weather", "input": {"location": "Rome"}},
    ]
    # Two tool results and the next user message merge into one user turn: Anthropic needs alternation.
    assert results == {
        "role": "user",
        "content": [
            {"type": "tool_result", "tool_use_id": "toolu_a", "content": "18C"},
            {"type": "tool_result", "tool_use_id": "toolu_b", "content": [{"type": "text", "text": "24C"}]},
            {"type": "text", "text": "Which is warmer?"},
        ],
    }


@pytest.mark.parametrize(
    ("choice", "expected"),
    [("auto", {"type": "auto"}), ("required", {"type": "any"}), ("none", {"type": "none"}), (None, None)],
)
def test_tool_choice_strings(choice: str | None, expected: dict[str, Any] | None) -> None:
    body = {"messages": [{"role": "user", "content": "x"}], "tools": [WEATHER_TOOL], "tool_choice": choice}
    assert _request(body).json.get("tool_choice") == expected


def test_consecutive_user_messages_merge() -> None:
    body = {"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]}
    assert _request(body).json["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}
    ]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}]}, "messages"),
        ({"messages": [{"role": "tool", "content": "x"}]}, "messages"),
        ({"messages": [{"role": "user", "content": "x"}], "tools": [{"type": "web_search"}]}, "tools"),
        ({"messages": [{"role": "user", "content": "x"}], "tools": [WEATHER_TOOL], "tool_choice": "any"},
         "tool_choice"),
    ],
)  # fmt: skip
def test_invalid_requests(body: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequestError) as info:
        _request(body)
    assert info.value.param == param


def test_embeddings_refused() -> None:
    with pytest.raises(InvalidRequestError, match="do not offer embeddings") as info:
        PROVIDER.build_request(_dep(), CallType.EMBEDDING, {"input": "x"}, stream=False)
    assert info.value.param == "model"


def test_parse_tool_use_response_with_cache_usage() -> None:
    obj, usage = PROVIDER.parse_response(_dep(), CallType.CHAT, {}, sample("anthropic_message_tool_use.json"))
    assert obj["object"] == "chat.completion" and obj["id"].startswith("chatcmpl-")
    assert obj["model"] == "claude-sonnet-4-20250514"
    choice = obj["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["logprobs"] is None
    assert choice["message"]["content"] == "I'll look that up."
    assert choice["message"]["tool_calls"] == [
        {
            "id": "toolu_01A09q90qw90lq917835lq9",
            "type": "function",
            "function": {
                "name": "get_weather",
                "arguments": json.dumps({"location": "San Francisco, CA", "unit": "celsius"}),
            },
        }
    ]
    # LiteLLM counts cache reads and writes in prompt_tokens.
    assert usage == Usage(
        prompt_tokens=412 + 2048 + 1024, completion_tokens=71, cache_read_tokens=1024, cache_write_tokens=2048
    )
    assert obj["usage"] == {
        "prompt_tokens": 3484, "completion_tokens": 71, "total_tokens": 3555,
        "prompt_tokens_details": {"cached_tokens": 1024},
    }  # fmt: skip


@pytest.mark.parametrize(
    ("reason", "expected"),
    [("end_turn", "stop"), ("stop_sequence", "stop"), ("max_tokens", "length"), ("tool_use", "tool_calls")],
)
def test_stop_reason_mapping(reason: str, expected: str) -> None:
    raw = {
        "content": [{"type": "text", "text": "x"}],
        "stop_reason": reason,
        "usage": {"input_tokens": 1, "output_tokens": 1},
    }
    obj, _ = PROVIDER.parse_response(_dep(), CallType.CHAT, {}, json.dumps(raw).encode())
    assert obj["choices"][0]["finish_reason"] == expected


@pytest.mark.parametrize("raw", [b"", b"Internal error", b'{"type": "message"}', b'{"content": "text"}'])
def test_parse_garbage_raises(raw: bytes) -> None:
    with pytest.raises(UpstreamProtocolError):
        PROVIDER.parse_response(_dep(), CallType.CHAT, {}, raw)


@pytest.mark.parametrize("feed", [feed_whole, feed_bytewise])
def test_text_stream_with_ping_and_cache_usage(feed: Feed) -> None:
    translator = PROVIDER.stream_translator(_dep(), CallType.CHAT, {})
    chunks = feed(translator, sample("anthropic_stream_text.sse"))
    deltas = [c["choices"][0]["delta"] for c in chunks]
    assert deltas == [{"role": "assistant", "content": ""}, {"content": "Hello"}, {"content": " there, ça va ? 👋"}, {}]
    assert [c["choices"][0]["finish_reason"] for c in chunks] == [None, None, None, "stop"]
    assert len({(c["id"], c["created"], c["object"]) for c in chunks}) == 1
    assert translator.text == "Hello there, ça va ? 👋"
    assert translator.usage == Usage(prompt_tokens=1825, completion_tokens=15, cache_read_tokens=1800)
    assert translator.finished


def test_text_stream_with_crlf_line_endings() -> None:
    data = sample("anthropic_stream_text.sse").replace(b"\n", b"\r\n")
    translator = PROVIDER.stream_translator(_dep(), CallType.CHAT, {})
    chunks = feed_bytewise(translator, data)
    assert len(chunks) == 4 and translator.finished


def test_tool_use_stream() -> None:
    translator = PROVIDER.stream_translator(_dep(), CallType.CHAT, {})
    chunks = feed_bytewise(translator, sample("anthropic_stream_tool_use.sse"))
    calls = [c["choices"][0]["delta"]["tool_calls"][0] for c in chunks if "tool_calls" in c["choices"][0]["delta"]]
    assert calls[0] == {
        "index": 0,
        "id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6",
        "type": "function",
        "function": {"name": "get_weather", "arguments": ""},
    }
    assert all(set(c) == {"index", "function"} and c["index"] == 0 for c in calls[1:])
    arguments = "".join(c["function"]["arguments"] for c in calls)
    assert json.loads(arguments) == {"location": "San Francisco, CA", "unit": "fahrenheit"}
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"
    assert translator.usage == Usage(prompt_tokens=472, completion_tokens=89)


def test_stream_bytewise_equals_whole() -> None:
    data = sample("anthropic_stream_tool_use.sse")
    whole = feed_whole(PROVIDER.stream_translator(_dep(), CallType.CHAT, {}), data)
    split = feed_bytewise(PROVIDER.stream_translator(_dep(), CallType.CHAT, {}), data)
    assert strip_volatile(whole) == strip_volatile(split)


def test_error_event_raises_with_message_and_keeps_partial_usage() -> None:
    translator = PROVIDER.stream_translator(_dep(), CallType.CHAT, {})
    with pytest.raises(UpstreamProtocolError, match="Overloaded"):
        feed_whole(translator, sample("anthropic_stream_error.sse"))
    assert translator.text == "Partial"
    assert translator.usage is not None and translator.usage.prompt_tokens == 12
    assert not translator.finished


def test_cut_stream_estimates_completion_until_message_delta() -> None:
    translator = PROVIDER.stream_translator(_dep(), CallType.CHAT, {})
    data = sample("anthropic_stream_text.sse")
    translator.feed(data[: data.index(b"event: message_delta")])
    assert translator.usage is not None
    assert translator.usage.estimated
    assert translator.usage.completion_tokens == 6  # ~len("Hello there, ça va ? 👋") / 4, more than message_start's 1
    assert not translator.finished


def test_unreadable_stream_event_raises() -> None:
    translator = PROVIDER.stream_translator(_dep(), CallType.CHAT, {})
    with pytest.raises(UpstreamProtocolError):
        translator.feed(b'event: message_start\ndata: {"type": "message_start"}\n\n')  # no message
    translator = PROVIDER.stream_translator(_dep(), CallType.CHAT, {})
    with pytest.raises(UpstreamProtocolError):
        translator.feed(b"data: <html>\n\n")


def test_completion_call_round_trip() -> None:
    body = {"prompt": "Say hi", "max_tokens": 5}
    request = PROVIDER.build_request(_dep(), CallType.COMPLETION, body, stream=True)
    assert request.json["messages"] == [{"role": "user", "content": [{"type": "text", "text": "Say hi"}]}]
    assert request.json["max_tokens"] == 5
    obj, usage = PROVIDER.parse_response(_dep(), CallType.COMPLETION, body, sample("anthropic_message_text.json"))
    assert obj["object"] == "text_completion"
    assert obj["choices"] == [
        {"text": "Hi! My name is Claude.", "index": 0, "logprobs": None, "finish_reason": "length"}
    ]
    assert usage == Usage(prompt_tokens=10, completion_tokens=25)
    translator = PROVIDER.stream_translator(_dep(), CallType.COMPLETION, body)
    chunks = feed_bytewise(translator, sample("anthropic_stream_text.sse"))
    assert {c["object"] for c in chunks} == {"text_completion"}
    assert [c["choices"][0]["text"] for c in chunks] == ["Hello", " there, ça va ? 👋", ""]
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


def test_probe_uses_auth_headers() -> None:
    probe = PROVIDER.probe_request(_dep(api_key="sk-ant-1"))
    assert (probe.method, probe.url) == ("GET", "https://api.anthropic.com/v1/models")
    assert probe.headers["x-api-key"] == "sk-ant-1"
    assert probe.headers["anthropic-version"] == "2023-06-01"


def test_context_window_error_detection() -> None:
    body = (
        b'{"type":"error","error":{"type":"invalid_request_error",'
        b'"message":"prompt is too long: 208310 tokens > 200000 maximum"}}'
    )
    message = PROVIDER.error_message(400, body)
    assert message.startswith("prompt is too long")
    assert PROVIDER.is_context_window_error(400, message)
