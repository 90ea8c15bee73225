"""What the fake upstreams say, independent of which API dialect says it.

The dialect modules (openai, ollama, anthropic) build a `Reply` from the scripted answer;
`upstream.FakeUpstream` decides whether to send it, mangle it, or fail instead.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import struct
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

# Chunk kinds: `cut_stream_after(k)` counts CONTENT chunks; HEAD chunks (message_start, the
# role delta...) always go out, TAIL chunks (finish reason, usage, [DONE]) are what a cut loses.
HEAD, CONTENT, TAIL = "head", "content", "tail"

DEFAULT_MODEL = "fake-model"
CREATED = 1_700_000_000  # a fixed timestamp keeps listings byte-for-byte stable
EMBEDDING_DIM = 8

StreamKind = Literal["sse", "ndjson"]


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]  # names lower-cased
    json: Any | None  # None when there was no body or it was not JSON
    query: str = ""
    body: bytes = b""


class Script(Protocol):
    """The knobs of a FakeUpstream that shape a successful answer."""

    reply_text: str
    usage: tuple[int, int]
    omit_usage: bool
    tool_call: tuple[str, dict[str, Any]] | None
    cache_read_tokens: int | None
    models: list[str]


@dataclass(frozen=True)
class Chunk:
    data: bytes
    kind: str = CONTENT


@dataclass
class Reply:
    status: int = 200
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    chunks: list[Chunk] | None = None  # not None: a streamed response


Builder = Callable[[Script, RecordedRequest], Reply]
ErrorBuilder = Callable[[int, str], Reply]


@dataclass(frozen=True)
class Route:
    build: Builder
    error: ErrorBuilder
    llm: bool = True  # LLM calls are the ones faults, in_flight and max_in_flight apply to
    stream_kind: StreamKind | None = None
    stream_default: bool = False  # Ollama streams unless told `"stream": false`
    precheck: Callable[[RecordedRequest], Reply | None] | None = None

    def streams(self, body: Any) -> bool:
        if self.stream_kind is None or not isinstance(body, dict):
            return False
        return body.get("stream", self.stream_default) is True


def json_reply(obj: Any, status: int = 200) -> Reply:
    return Reply(status, [("content-type", "application/json")], json.dumps(obj).encode())


def stream_reply(kind: StreamKind, chunks: list[Chunk]) -> Reply:
    content_type = "text/event-stream; charset=utf-8" if kind == "sse" else "application/x-ndjson"
    return Reply(200, [("content-type", content_type), ("cache-control", "no-cache")], chunks=chunks)


def sse(obj: Any, event: str | None = None) -> bytes:
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {json.dumps(obj)}\n\n".encode()


def ndjson(obj: Any) -> bytes:
    return json.dumps(obj).encode() + b"\n"


def garbage_reply(kind: StreamKind | None) -> Reply:
    """A 200 whose body no client can parse: broken JSON, or broken JSON inside the stream framing."""
    if kind == "sse":
        return stream_reply("sse", [Chunk(b'data: {"choices": [{"delta": <<<not json>>>\n\n')])
    if kind == "ndjson":
        return stream_reply("ndjson", [Chunk(b'{"message": <<<not json>>>\n')])
    body = b'<html><body>upstream garbage</body></html> {"truncated": '
    return Reply(200, [("content-type", "application/json")], body)


def words(text: str) -> list[str]:
    """Split text into chunks that concatenate back to it, each word with its leading space."""
    return re.findall(r"\s*\S+|\s+$", text)


def pieces(text: str, count: int = 3) -> list[str]:
    """Split text into about `count` consecutive pieces (for streamed tool-call arguments)."""
    size = max(1, -(-len(text) // count))
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


def embedding(item: Any) -> list[float]:
    """A deterministic unit-free vector in [-1, 1]: equal inputs, equal vectors."""
    text = item if isinstance(item, str) else json.dumps(item)
    digest = hashlib.sha256(text.encode()).digest()
    return [round(b / 127.5 - 1.0, 6) for b in digest[:EMBEDDING_DIM]]


def embedding_inputs(value: Any) -> list[Any]:
    """OpenAI and Ollama accept a string, a list of strings, or token lists."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value and all(isinstance(x, int) for x in value):
        return [value]  # one pre-tokenised input
    return list(value) if isinstance(value, list) else []


def float32_base64(vector: list[float]) -> str:
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()


def new_id(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:24]}"


def now() -> int:
    return int(time.time())


def model_of(request: RecordedRequest) -> str:
    body = request.json if isinstance(request.json, dict) else {}
    model = body.get("model")
    return model if isinstance(model, str) and model else DEFAULT_MODEL


def wants_tool(script: Script, request: RecordedRequest) -> tuple[str, dict[str, Any]] | None:
    """The scripted tool call, when one is set and the request offered tools."""
    body = request.json if isinstance(request.json, dict) else {}
    return script.tool_call if body.get("tools") else None
