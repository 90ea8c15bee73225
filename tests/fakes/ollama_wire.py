"""The Ollama dialect: /api/chat and /api/generate (NDJSON streams by default), /api/embed, /api/tags.

Shapes follow https://github.com/ollama/ollama/blob/main/docs/api.md: stream lines carry
`"done": false`, the last line `"done": true` with `done_reason` and the token counts.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any

from .wire import (
    TAIL,
    Chunk,
    RecordedRequest,
    Reply,
    Route,
    Script,
    embedding,
    embedding_inputs,
    json_reply,
    model_of,
    ndjson,
    stream_reply,
    wants_tool,
    words,
)

VERSION = "0.6.2"
DETAILS = {
    "parent_model": "",
    "format": "gguf",
    "family": "llama",
    "families": ["llama"],
    "parameter_size": "1.2B",
    "quantization_level": "Q4_K_M",
}


def error(status: int, message: str) -> Reply:
    return json_reply({"error": message}, status)


def _body(request: RecordedRequest) -> dict[str, Any]:
    return request.json if isinstance(request.json, dict) else {}


def _created_at() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def _done(script: Script, reason: str = "stop") -> dict[str, Any]:
    """The fields of the final object: timings in nanoseconds, then the token counts."""
    out: dict[str, Any] = {"done": True, "done_reason": reason, "total_duration": 5_000_000, "load_duration": 1_000_000}
    if not script.omit_usage:
        prompt, completion = script.usage
        out |= {
            "prompt_eval_count": prompt,
            "prompt_eval_duration": 1_000_000,
            "eval_count": completion,
            "eval_duration": 3_000_000,
        }
    return out


def chat(script: Script, request: RecordedRequest) -> Reply:
    model, tool = model_of(request), wants_tool(script, request)
    calls = [{"function": {"name": tool[0], "arguments": tool[1]}}] if tool else None

    def line(content: str, **extra: Any) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": content}
        if "tool_calls" in extra:
            message["tool_calls"] = extra.pop("tool_calls")
        return {"model": model, "created_at": _created_at(), "message": message, **extra}

    if _body(request).get("stream", True) is not True:
        if calls:
            return json_reply(line("", tool_calls=calls, **_done(script)))
        return json_reply(line(script.reply_text, **_done(script)))
    if calls:  # Ollama sends a tool call whole, in one line
        chunks = [Chunk(ndjson(line("", tool_calls=calls, done=False)))]
    else:
        chunks = [Chunk(ndjson(line(word, done=False))) for word in words(script.reply_text)]
    chunks.append(Chunk(ndjson(line("", **_done(script))), TAIL))
    return stream_reply("ndjson", chunks)


def generate(script: Script, request: RecordedRequest) -> Reply:
    model = model_of(request)

    def line(response: str, **extra: Any) -> dict[str, Any]:
        return {"model": model, "created_at": _created_at(), "response": response, **extra}

    final = {**_done(script), "context": [1, 2, 3]}
    if _body(request).get("stream", True) is not True:
        return json_reply(line(script.reply_text, **final))
    chunks = [Chunk(ndjson(line(word, done=False))) for word in words(script.reply_text)]
    chunks.append(Chunk(ndjson(line("", **final)), TAIL))
    return stream_reply("ndjson", chunks)


def embed(script: Script, request: RecordedRequest) -> Reply:
    inputs = embedding_inputs(_body(request).get("input"))
    if not inputs:
        return error(400, "invalid input type")
    payload: dict[str, Any] = {
        "model": model_of(request),
        "embeddings": [embedding(item) for item in inputs],
        "total_duration": 2_000_000,
        "load_duration": 1_000_000,
    }
    if not script.omit_usage:
        payload["prompt_eval_count"] = script.usage[0]
    return json_reply(payload)


def tags(script: Script, request: RecordedRequest) -> Reply:
    models = [
        {
            "name": name,
            "model": name,
            "modified_at": "2024-01-01T00:00:00Z",
            "size": 807_000_000,
            "digest": hashlib.sha256(name.encode()).hexdigest(),
            "details": DETAILS,
        }
        for name in script.models
    ]
    return json_reply({"models": models})


def show(script: Script, request: RecordedRequest) -> Reply:
    return json_reply(
        {
            "modelfile": "",
            "parameters": "",
            "template": "{{ .Prompt }}",
            "details": DETAILS,
            "model_info": {"general.architecture": "llama", "llama.context_length": 8192},
            "capabilities": ["completion", "tools"],
        }
    )


def version(script: Script, request: RecordedRequest) -> Reply:
    return json_reply({"version": VERSION})


ROUTES = {
    ("POST", "/api/chat"): Route(chat, error, stream_kind="ndjson", stream_default=True),
    ("POST", "/api/generate"): Route(generate, error, stream_kind="ndjson", stream_default=True),
    ("POST", "/api/embed"): Route(embed, error),
    ("GET", "/api/tags"): Route(tags, error, llm=False),
    ("POST", "/api/show"): Route(show, error, llm=False),
    ("GET", "/api/version"): Route(version, error, llm=False),
}
