from __future__ import annotations

import base64
import json
import struct

import pytest

from edgeproxy.errors import InvalidRequestError, UpstreamProtocolError
from edgeproxy.providers import PROVIDERS, get_provider
from edgeproxy.providers.anthropic import AnthropicProvider
from edgeproxy.providers.base import CallType
from edgeproxy.providers.mock import MockProvider
from edgeproxy.providers.ollama import OllamaProvider
from edgeproxy.providers.openai import OpenAIProvider
from edgeproxy.providers.wire import (
    ChunkMaker,
    LineSplitter,
    SSEDecoder,
    SSEEvent,
    encode_vector,
    parse_json_object,
    split_data_url,
    sse_json,
    upstream_error_message,
    with_deployment_defaults,
)

from .support import deployment

# --------------------------------------------------------------------------- registry


@pytest.mark.parametrize(
    ("name", "cls"),
    [
        ("openai", OpenAIProvider),
        ("moonshot", OpenAIProvider),
        ("deepseek", OpenAIProvider),
        ("ollama", OllamaProvider),
        ("ollama_chat", OllamaProvider),
        ("anthropic", AnthropicProvider),
        ("mock", MockProvider),
    ],
)
def test_get_provider_returns_named_singletons(name: str, cls: type) -> None:
    provider = get_provider(name)
    assert isinstance(provider, cls)
    assert provider.name == name
    assert get_provider(name) is provider


def test_get_provider_unknown_name_lists_known() -> None:
    with pytest.raises(ValueError, match=r"unknown provider 'bedrock'.*anthropic"):
        get_provider("bedrock")


def test_registry_is_read_only() -> None:
    with pytest.raises(TypeError):
        PROVIDERS["x"] = OpenAIProvider()  # type: ignore[index]


# --------------------------------------------------------------------------- framing


def test_line_splitter_handles_crlf_blank_lines_and_split_utf8() -> None:
    data = '{"a": "é"}\r\n\r\n{"b": 2}\n{"c"'.encode()
    splitter = LineSplitter()
    lines: list[str] = []
    for i in range(len(data)):
        lines += splitter.feed(data[i : i + 1])
    assert lines == ['{"a": "é"}', '{"b": 2}']
    assert splitter.close() == ['{"c"']
    assert splitter.close() == []


def test_sse_decoder_events_comments_multiline_and_crlf() -> None:
    raw = (
        b": keep-alive\r\n"
        b"event: message_start\r\n"
        b'data: {"a":\r\n'
        b"data: 1}\r\n"
        b"id: 7\r\n"
        b"\r\n"
        b"data:no-space\n\n"
        b"\n\n"  # blank lines without data dispatch nothing
        b"event: lonely\n\n"
        b"data: tail"
    )
    decoder = SSEDecoder()
    events = []
    for i in range(len(raw)):
        events += decoder.feed(raw[i : i + 1])
    events += decoder.close()
    assert events == [
        SSEEvent("message_start", '{"a":\n1}'),
        SSEEvent(None, "no-space"),
        SSEEvent(None, "tail"),
    ]
    assert sse_json(events[0]) == [{"a": 1}]


def test_sse_json_reads_data_lines_not_separated_by_blank_lines() -> None:
    # Some servers send `data: {..}\ndata: {..}\n\n`; by the spec that is one event with two lines.
    assert sse_json(SSEEvent(None, '{"n": 1}\n{"n": 2}')) == [{"n": 1}, {"n": 2}]


def test_sse_json_garbage_raises_protocol_error() -> None:
    with pytest.raises(UpstreamProtocolError, match="unreadable stream event"):
        sse_json(SSEEvent(None, "<html>oops</html>"))


# --------------------------------------------------------------------------- bodies and errors


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b'{"error": {"message": "Incorrect API key provided", "type": "invalid_request_error"}}',
         "Incorrect API key provided"),
        (b'{"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}', "Overloaded"),
        (b'{"error": "model \'qwen9\' not found"}', "model 'qwen9' not found"),
        (b'{"object": "error", "message": "maximum context length is 4096 tokens", "code": 400}',
         "maximum context length is 4096 tokens"),
        (b'{"detail": "Not Found"}', "Not Found"),
        (b"Bad Gateway", "Bad Gateway"),
        (b"", None),
        (b"   \n", None),
    ],
)  # fmt: skip
def test_upstream_error_message_shapes(raw: bytes, expected: str | None) -> None:
    assert upstream_error_message(raw) == expected


def test_upstream_error_message_truncates_plain_text() -> None:
    message = upstream_error_message(b"x" * 1000)
    assert message is not None
    assert len(message) == 300
    assert message.endswith("...")


@pytest.mark.parametrize("raw", [b"not json", b"[1, 2]", b"\xff\xfe", b""])
def test_parse_json_object_rejects_non_objects(raw: bytes) -> None:
    with pytest.raises(UpstreamProtocolError):
        parse_json_object(raw)


def test_provider_error_message_falls_back_to_status() -> None:
    provider = get_provider("openai")
    assert provider.error_message(502, b"") == "upstream answered HTTP 502"
    assert provider.error_message(404, b'{"error": "model not found"}') == "model not found"


# --------------------------------------------------------------------------- request helpers


def test_deployment_defaults_fill_only_what_the_client_left_out() -> None:
    dep = deployment("openai", params={"temperature": 0.2, "top_p": 0.9, "keep_alive": "5m"}, max_tokens=256)
    merged = with_deployment_defaults(dep, {"temperature": 1.0, "messages": []}, CallType.CHAT)
    assert merged["temperature"] == 1.0
    assert merged["top_p"] == 0.9
    assert merged["max_tokens"] == 256
    assert "keep_alive" not in merged  # not an OpenAI sampling parameter
    merged = with_deployment_defaults(dep, {"max_completion_tokens": 10}, CallType.CHAT)
    assert "max_tokens" not in merged
    assert with_deployment_defaults(dep, {"input": "x"}, CallType.EMBEDDING) == {"input": "x"}


def test_split_data_url() -> None:
    assert split_data_url("data:image/jpeg;base64,/9j/4AAQ") == ("image/jpeg", "/9j/4AAQ")
    with pytest.raises(InvalidRequestError):
        split_data_url("data:text/plain,hello")


def test_encode_vector_base64_is_little_endian_float32() -> None:
    encoded = encode_vector([0.5, -1.0], "base64")
    assert isinstance(encoded, str)
    assert struct.unpack("<2f", base64.b64decode(encoded)) == (0.5, -1.0)
    assert encode_vector([0.5], None) == [0.5]


def test_chunk_maker_keeps_id_and_created_and_shapes_both_kinds() -> None:
    chat = ChunkMaker("m", CallType.CHAT)
    first, second = chat.chunk({"content": "a"}), chat.chunk({}, "stop")
    assert first is not None and second is not None
    assert first["id"] == second["id"] and first["id"].startswith("chatcmpl-")
    assert first["created"] == second["created"]
    assert second["choices"] == [{"index": 0, "delta": {}, "finish_reason": "stop", "logprobs": None}]
    text = ChunkMaker("m", CallType.COMPLETION)
    assert text.chunk({"role": "assistant", "content": ""}) is None
    chunk = text.chunk({"content": "hi"})
    assert chunk is not None
    assert chunk["object"] == "text_completion" and chunk["id"].startswith("cmpl-")
    assert chunk["choices"] == [{"text": "hi", "index": 0, "logprobs": None, "finish_reason": None}]
    json.dumps(chunk)  # plain JSON types only
