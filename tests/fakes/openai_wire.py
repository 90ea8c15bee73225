"""The OpenAI dialect: /v1/chat/completions, /v1/completions, /v1/embeddings, /v1/models."""

from __future__ import annotations

import json
from typing import Any

from .wire import (
    CONTENT,
    CREATED,
    HEAD,
    TAIL,
    Chunk,
    RecordedRequest,
    Reply,
    Route,
    Script,
    embedding,
    embedding_inputs,
    float32_base64,
    json_reply,
    model_of,
    new_id,
    now,
    pieces,
    sse,
    stream_reply,
    wants_tool,
    words,
)

DONE = Chunk(b"data: [DONE]\n\n", TAIL)

# status -> (error.type, error.code), as api.openai.com answers them
_ERROR_KINDS = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("permission_error", None),
    404: ("invalid_request_error", "model_not_found"),
    429: ("rate_limit_error", "rate_limit_exceeded"),
}


def error(status: int, message: str) -> Reply:
    kind, code = _ERROR_KINDS.get(status, ("server_error" if status >= 500 else "invalid_request_error", None))
    return json_reply({"error": {"message": message, "type": kind, "param": None, "code": code}}, status)


def usage(script: Script) -> dict[str, Any]:
    prompt, completion = script.usage
    out: dict[str, Any] = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }
    if script.cache_read_tokens is not None:
        out["prompt_tokens_details"] = {"cached_tokens": script.cache_read_tokens}
    return out


def _body(request: RecordedRequest) -> dict[str, Any]:
    return request.json if isinstance(request.json, dict) else {}


def _include_usage(script: Script, request: RecordedRequest) -> bool:
    options = _body(request).get("stream_options") or {}
    return bool(options.get("include_usage")) and not script.omit_usage


def chat_completions(script: Script, request: RecordedRequest) -> Reply:
    if _body(request).get("stream") is True:
        return _chat_stream(script, request)
    tool = wants_tool(script, request)
    message: dict[str, Any] = {"role": "assistant", "content": script.reply_text, "refusal": None}
    if tool:
        name, args = tool
        call = {"id": new_id("call_"), "type": "function", "function": {"name": name, "arguments": json.dumps(args)}}
        message = {"role": "assistant", "content": None, "refusal": None, "tool_calls": [call]}
    payload: dict[str, Any] = {
        "id": new_id("chatcmpl-"),
        "object": "chat.completion",
        "created": now(),
        "model": model_of(request),
        "system_fingerprint": "fp_fake",
        "choices": [
            {"index": 0, "message": message, "logprobs": None, "finish_reason": "tool_calls" if tool else "stop"}
        ],
    }
    if not script.omit_usage:
        payload["usage"] = usage(script)
    return json_reply(payload)


def _chat_stream(script: Script, request: RecordedRequest) -> Reply:
    include_usage = _include_usage(script, request)
    base = {
        "id": new_id("chatcmpl-"),
        "object": "chat.completion.chunk",
        "created": now(),
        "model": model_of(request),
        "system_fingerprint": "fp_fake",
    }

    def chunk(delta: dict[str, Any], kind: str = CONTENT, finish: str | None = None) -> Chunk:
        obj: dict[str, Any] = {
            **base,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }
        if include_usage:
            obj["usage"] = None  # as OpenAI does: every chunk carries usage, null until the last
        return Chunk(sse(obj), kind)

    chunks = [chunk({"role": "assistant", "content": ""}, HEAD)]
    tool = wants_tool(script, request)
    if tool:
        name, args = tool
        start = {"index": 0, "id": new_id("call_"), "type": "function", "function": {"name": name, "arguments": ""}}
        chunks.append(chunk({"tool_calls": [start]}))
        for part in pieces(json.dumps(args)):
            chunks.append(chunk({"tool_calls": [{"index": 0, "function": {"arguments": part}}]}))
    else:
        chunks += [chunk({"content": word}) for word in words(script.reply_text)]
    chunks.append(chunk({}, TAIL, "tool_calls" if tool else "stop"))
    if include_usage:
        chunks.append(Chunk(sse({**base, "choices": [], "usage": usage(script)}), TAIL))
    chunks.append(DONE)
    return stream_reply("sse", chunks)


def completions(script: Script, request: RecordedRequest) -> Reply:
    base = {"id": new_id("cmpl-"), "object": "text_completion", "created": now(), "model": model_of(request)}

    def choice(text: str, finish: str | None) -> list[dict[str, Any]]:
        return [{"text": text, "index": 0, "logprobs": None, "finish_reason": finish}]

    if _body(request).get("stream") is not True:
        payload: dict[str, Any] = {**base, "choices": choice(script.reply_text, "stop")}
        if not script.omit_usage:
            payload["usage"] = usage(script)
        return json_reply(payload)
    chunks = [Chunk(sse({**base, "choices": choice(word, None)})) for word in words(script.reply_text)]
    chunks.append(Chunk(sse({**base, "choices": choice("", "stop")}), TAIL))
    if _include_usage(script, request):
        chunks.append(Chunk(sse({**base, "choices": [], "usage": usage(script)}), TAIL))
    chunks.append(DONE)
    return stream_reply("sse", chunks)


def embeddings(script: Script, request: RecordedRequest) -> Reply:
    body = _body(request)
    inputs = embedding_inputs(body.get("input"))
    if not inputs:
        return error(400, "'input' must be a non-empty string or array")
    as_base64 = body.get("encoding_format") == "base64"  # the openai SDK asks for base64 by default
    data = [
        {
            "object": "embedding",
            "index": i,
            "embedding": float32_base64(embedding(item)) if as_base64 else embedding(item),
        }
        for i, item in enumerate(inputs)
    ]
    payload: dict[str, Any] = {"object": "list", "data": data, "model": model_of(request)}
    if not script.omit_usage:
        payload["usage"] = {"prompt_tokens": script.usage[0], "total_tokens": script.usage[0]}
    return json_reply(payload)


def models(script: Script, request: RecordedRequest) -> Reply:
    if "anthropic-version" in request.headers:  # Anthropic serves the same path, shaped differently
        data = [
            {"type": "model", "id": m, "display_name": m, "created_at": "2024-01-01T00:00:00Z"} for m in script.models
        ]
        first, last = (script.models[0], script.models[-1]) if script.models else (None, None)
        return json_reply({"data": data, "has_more": False, "first_id": first, "last_id": last})
    listing = [{"id": m, "object": "model", "created": CREATED, "owned_by": "fake-upstream"} for m in script.models]
    return json_reply({"object": "list", "data": listing})


ROUTES = {
    ("POST", "/v1/chat/completions"): Route(chat_completions, error, stream_kind="sse"),
    ("POST", "/v1/completions"): Route(completions, error, stream_kind="sse"),
    ("POST", "/v1/embeddings"): Route(embeddings, error),
    ("GET", "/v1/models"): Route(models, error, llm=False),
}
