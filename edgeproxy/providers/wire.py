"""Wire helpers shared by the provider translators: stream framing, error bodies, ids, OpenAI shapes.

Nothing here does I/O. The splitters take bytes exactly as the network delivers them (any split point, even inside
a UTF-8 sequence) and hand back whole lines or events.
"""

from __future__ import annotations

import base64
import json
import secrets
import struct
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from edgeproxy.config import Deployment
from edgeproxy.errors import InvalidRequestError, UpstreamProtocolError
from edgeproxy.providers.base import CallType, Usage

# Anthropic `stop_reason` → OpenAI `finish_reason` (refusal is Anthropic's content filter).
ANTHROPIC_FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
# Ollama `done_reason` → OpenAI `finish_reason`; "load"/"unload" only appear on empty keep-alive calls.
OLLAMA_FINISH_REASONS = {"stop": "stop", "length": "length"}

# OpenAI sampling parameters a deployment may set in litellm_params as defaults for every call.
DEFAULTABLE_PARAMS = ("temperature", "top_p", "frequency_penalty", "presence_penalty", "seed", "stop")
ERROR_TEXT_LIMIT = 300


# --------------------------------------------------------------------------- ids and clocks


def chat_id() -> str:
    return "chatcmpl-" + secrets.token_hex(14)


def completion_id() -> str:
    return "cmpl-" + secrets.token_hex(14)


def tool_call_id() -> str:
    return "call_" + secrets.token_hex(12)


def created_now() -> int:
    return int(time.time())


# --------------------------------------------------------------------------- framing


class LineSplitter:
    """Splits a byte stream into text lines (NDJSON, SSE). A trailing \\r is stripped (\\r\\n endings).

    Blank lines are dropped unless `keep_blank` (SSE needs them: they end events).
    """

    def __init__(self, *, keep_blank: bool = False) -> None:
        self._buffer = bytearray()
        self._keep_blank = keep_blank

    def feed(self, data: bytes) -> list[str]:
        self._buffer += data
        end = self._buffer.rfind(b"\n")
        if end < 0:
            return []
        # Decode only whole lines, so a multi-byte character split across feeds is never cut in half.
        complete = bytes(self._buffer[: end + 1])
        del self._buffer[: end + 1]
        lines = [raw.rstrip("\r") for raw in _decode(complete).split("\n")[:-1]]
        return lines if self._keep_blank else [line for line in lines if line.strip()]

    def close(self) -> list[str]:
        """The stream ended: a last line without a newline still counts."""
        rest = _decode(bytes(self._buffer)).rstrip("\r")
        self._buffer.clear()
        return [rest] if rest.strip() else []


@dataclass(frozen=True, slots=True)
class SSEEvent:
    event: str | None
    data: str


class SSEDecoder:
    """Server-sent events (https://html.spec.whatwg.org/multipage/server-sent-events.html), as far as LLM APIs use
    them: `event:` and `data:` fields, multi-line data joined with \\n, `:` comments, events ended by a blank line.
    """

    def __init__(self) -> None:
        self._lines = LineSplitter(keep_blank=True)
        self._event: str | None = None
        self._data: list[str] = []

    def feed(self, data: bytes) -> list[SSEEvent]:
        events: list[SSEEvent] = []
        for line in self._lines.feed(data):
            event = self._line(line)
            if event is not None:
                events.append(event)
        return events

    def close(self) -> list[SSEEvent]:
        """Dispatch an event the upstream did not end with a blank line before closing."""
        events = [e for e in (self._line(line) for line in self._lines.close()) if e is not None]
        last = self._line("")
        return [*events, last] if last is not None else events

    def _line(self, line: str) -> SSEEvent | None:
        if line == "":
            return self._dispatch()
        if line.startswith(":"):
            return None  # a comment, often a keep-alive
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        return None  # `id` and `retry` mean nothing for a single HTTP response

    def _dispatch(self) -> SSEEvent | None:
        if not self._data:
            self._event = None
            return None
        event = SSEEvent(self._event, "\n".join(self._data))
        self._event, self._data = None, []
        return event


def sse_json(event: SSEEvent) -> list[Any]:
    """The JSON value(s) of an SSE event.

    Some OpenAI-compatible servers put several `data:` lines in one event without blank lines between them,
    which by the spec joins them into one invalid document: fall back to reading each line on its own.
    """
    try:
        return [json.loads(event.data)]
    except ValueError:
        if "\n" not in event.data:
            raise UpstreamProtocolError(f"upstream sent an unreadable stream event: {_snippet(event.data)}") from None
    return [parse_json_text(line, "stream event") for line in event.data.split("\n") if line.strip()]


def _decode(data: bytes) -> str:
    # Tolerate stray invalid bytes: they can only land inside JSON strings, where a U+FFFD is harmless.
    return data.decode("utf-8", errors="replace")


# --------------------------------------------------------------------------- JSON bodies


def parse_json_text(text: str, what: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        raise UpstreamProtocolError(f"upstream sent an unreadable {what}: {_snippet(text)}") from None


def parse_json_object(raw: bytes, what: str = "response") -> dict[str, Any]:
    """A JSON object from an upstream body, or UpstreamProtocolError naming what was wrong."""
    value = parse_json_text(_decode(raw), what)
    if not isinstance(value, dict):
        raise UpstreamProtocolError(f"upstream sent a {what} that is not a JSON object: {_snippet(_decode(raw))}")
    return value


def require(obj: Mapping[str, Any], key: str, kind: type | tuple[type, ...], what: str) -> Any:
    value = obj.get(key)
    if not isinstance(value, kind):
        raise UpstreamProtocolError(f"upstream {what} has no valid '{key}' field")
    return value


def _snippet(text: str, limit: int = 120) -> str:
    text = text.strip()
    return repr(text[:limit] + ("..." if len(text) > limit else ""))


def upstream_error_message(raw: bytes) -> str | None:
    """The human message of an upstream error body, whatever the provider's shape; None for an empty body.

    OpenAI `{"error": {"message"}}`, Anthropic `{"type": "error", "error": {"message"}}`, Ollama `{"error": "..."}`,
    vLLM `{"message": ...}`, FastAPI `{"detail": ...}`; anything else is returned as text, truncated.
    """
    text = _decode(raw).strip()
    if not text:
        return None
    try:
        body = json.loads(text)
    except ValueError:
        return _truncate(text)
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict):
            message = error.get("message") or error.get("type")
            if isinstance(message, str) and message:
                return _truncate(message)
        if isinstance(error, str) and error:
            return _truncate(error)
        for key in ("message", "detail"):
            if isinstance(body.get(key), str) and body[key]:
                return _truncate(body[key])
    return _truncate(text)


def _truncate(text: str) -> str:
    return text if len(text) <= ERROR_TEXT_LIMIT else text[: ERROR_TEXT_LIMIT - 3] + "..."


def raise_stream_error(obj: Mapping[str, Any]) -> None:
    """Some upstreams report a failure mid-stream as a data line `{"error": ...}`; make it an error of ours."""
    if "error" in obj and not obj.get("choices"):
        message = upstream_error_message(json.dumps(dict(obj)).encode()) or "unknown error"
        raise UpstreamProtocolError(f"upstream failed mid-stream: {message}")


# --------------------------------------------------------------------------- OpenAI request helpers


def with_deployment_defaults(deployment: Deployment, body: Mapping[str, Any], call: CallType) -> dict[str, Any]:
    """The client's body plus the deployment's sampling defaults, for what the client did not set itself."""
    merged = dict(body)
    if call is CallType.EMBEDDING:
        return merged
    for name in DEFAULTABLE_PARAMS:
        if name not in merged and deployment.params.get(name) is not None:
            merged[name] = deployment.params[name]
    has_limit = merged.get("max_tokens") is not None or merged.get("max_completion_tokens") is not None
    if not has_limit and deployment.max_tokens is not None:
        merged["max_tokens"] = deployment.max_tokens
    return merged


def auth_headers(deployment: Deployment, bearer: bool = True) -> dict[str, str]:
    """Authorization (when a key is set) plus the deployment's `extra_headers`, which win."""
    headers: dict[str, str] = {}
    if bearer and deployment.api_key:
        headers["Authorization"] = f"Bearer {deployment.api_key}"
    extra = deployment.params.get("extra_headers")
    if isinstance(extra, Mapping):
        headers.update({str(k): str(v) for k, v in extra.items() if v is not None})
    return headers


def content_text(content: Any) -> str:
    """The text of an OpenAI message `content`: a string, or the text parts of a list."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return ""


def single_prompt(body: Mapping[str, Any], provider: str) -> str:
    """The one prompt of a /completions call, for providers that take exactly one."""
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise InvalidRequestError(f"{provider} completions take one text prompt", param="prompt")
    return prompt


def stop_list(stop: Any) -> list[str] | None:
    if isinstance(stop, str):
        return [stop]
    if isinstance(stop, list) and stop:
        return [str(s) for s in stop]
    return None


def parse_arguments(arguments: Any, param: str = "messages") -> Any:
    """Tool-call arguments arrive as a JSON string in OpenAI format; other providers want the object."""
    if isinstance(arguments, dict):
        return arguments
    if arguments in (None, ""):
        return {}
    try:
        return json.loads(arguments)
    except (TypeError, ValueError):
        raise InvalidRequestError("tool call arguments must be a JSON object string", param=param) from None


def split_data_url(url: str, param: str = "messages") -> tuple[str, str]:
    """`data:image/png;base64,AAAA` → ("image/png", "AAAA")."""
    header, comma, data = url.partition(",")
    if not comma or not header.startswith("data:") or ";base64" not in header:
        raise InvalidRequestError("image data URLs must be base64 encoded (data:<type>;base64,...)", param=param)
    return header[len("data:") :].split(";", 1)[0] or "image/png", data


# --------------------------------------------------------------------------- OpenAI response shapes


def chat_completion(
    model: str, message: dict[str, Any], finish_reason: str | None, usage: Usage, *, id: str | None = None
) -> dict[str, Any]:
    return {
        "id": id or chat_id(),
        "object": "chat.completion",
        "created": created_now(),
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish_reason, "logprobs": None}],
        "usage": usage.to_openai(),
    }


def text_completion(model: str, text: str, finish_reason: str | None, usage: Usage) -> dict[str, Any]:
    return {
        "id": completion_id(),
        "object": "text_completion",
        "created": created_now(),
        "model": model,
        "choices": [{"text": text, "index": 0, "logprobs": None, "finish_reason": finish_reason}],
        "usage": usage.to_openai(),
    }


def embedding_list(model: str, vectors: list[list[float]], usage: Usage, encoding: Any = None) -> dict[str, Any]:
    return {
        "object": "list",
        "data": [
            {"object": "embedding", "index": i, "embedding": encode_vector(v, encoding)} for i, v in enumerate(vectors)
        ],
        "model": model,
        "usage": {"prompt_tokens": usage.prompt_tokens, "total_tokens": usage.total_tokens},
    }


def encode_vector(vector: list[float], encoding: Any) -> list[float] | str:
    """`encoding_format: base64` means little-endian float32s, base64 encoded (what OpenAI sends)."""
    if encoding == "base64":
        return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")
    return vector


class ChunkMaker:
    """Builds the chunks of one stream: the same id and created time on every chunk, as OpenAI does.

    Chat streams get `chat.completion.chunk` dicts; completion streams get `text_completion` chunks carrying only
    the delta's text (tool calls and roles have no place there).
    """

    def __init__(self, model: str, call: CallType) -> None:
        self.model = model
        self.chat = call is not CallType.COMPLETION
        self.id = chat_id() if self.chat else completion_id()
        self.created = created_now()

    def chunk(self, delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any] | None:
        if self.chat:
            choice: dict[str, Any] = {"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}
            obj = "chat.completion.chunk"
        else:
            text = delta.get("content") or ""
            if not text and finish_reason is None:
                return None
            choice = {"text": text, "index": 0, "logprobs": None, "finish_reason": finish_reason}
            obj = "text_completion"
        return {"id": self.id, "object": obj, "created": self.created, "model": self.model, "choices": [choice]}
