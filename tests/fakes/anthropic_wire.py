"""The Anthropic dialect: POST /v1/messages, JSON or the SSE event sequence.

Stream order, per https://docs.anthropic.com/en/api/messages-streaming: message_start,
then per block content_block_start / content_block_delta... / content_block_stop (a ping
after the first start), then message_delta (stop_reason, output_tokens) and message_stop.
"""

from __future__ import annotations

import json
from typing import Any

from .wire import (
    CONTENT,
    HEAD,
    TAIL,
    Chunk,
    RecordedRequest,
    Reply,
    Route,
    Script,
    json_reply,
    model_of,
    new_id,
    pieces,
    sse,
    stream_reply,
    wants_tool,
    words,
)

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    529: "overloaded_error",
}


def error(status: int, message: str) -> Reply:
    kind = _ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
    return json_reply({"type": "error", "error": {"type": kind, "message": message}}, status)


def require_headers(request: RecordedRequest) -> Reply | None:
    for header in ("x-api-key", "anthropic-version"):
        if not request.headers.get(header):
            return error(401, f"{header}: header is required")
    return None


def usage(script: Script, output_tokens: int | None = None) -> dict[str, Any]:
    prompt, completion = script.usage
    out: dict[str, Any] = {
        "input_tokens": prompt,
        "output_tokens": completion if output_tokens is None else output_tokens,
    }
    if script.cache_read_tokens is not None:
        out |= {"cache_read_input_tokens": script.cache_read_tokens, "cache_creation_input_tokens": 0}
    return out


def messages(script: Script, request: RecordedRequest) -> Reply:
    body = request.json if isinstance(request.json, dict) else {}
    tool = wants_tool(script, request)
    if body.get("stream") is True:
        return _stream(script, request, tool)
    if tool:
        content = [{"type": "tool_use", "id": new_id("toolu_"), "name": tool[0], "input": tool[1]}]
    else:
        content = [{"type": "text", "text": script.reply_text}]
    payload: dict[str, Any] = {
        "id": new_id("msg_"),
        "type": "message",
        "role": "assistant",
        "model": model_of(request),
        "content": content,
        "stop_reason": "tool_use" if tool else "end_turn",
        "stop_sequence": None,
    }
    if not script.omit_usage:
        payload["usage"] = usage(script)
    return json_reply(payload)


def _stream(script: Script, request: RecordedRequest, tool: tuple[str, dict[str, Any]] | None) -> Reply:
    def event(name: str, kind: str, **data: Any) -> Chunk:
        return Chunk(sse({"type": name, **data}, event=name), kind)

    message: dict[str, Any] = {
        "id": new_id("msg_"),
        "type": "message",
        "role": "assistant",
        "model": model_of(request),
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
    }
    if not script.omit_usage:
        message["usage"] = usage(script, output_tokens=1)
    if tool:
        block = {"type": "tool_use", "id": new_id("toolu_"), "name": tool[0], "input": {}}
        deltas = [{"type": "input_json_delta", "partial_json": part} for part in pieces(json.dumps(tool[1]))]
    else:
        block = {"type": "text", "text": ""}
        deltas = [{"type": "text_delta", "text": word} for word in words(script.reply_text)]
    chunks = [
        event("message_start", HEAD, message=message),
        event("content_block_start", HEAD, index=0, content_block=block),
        event("ping", HEAD),
        *(event("content_block_delta", CONTENT, index=0, delta=delta) for delta in deltas),
        event("content_block_stop", TAIL, index=0),
    ]
    final: dict[str, Any] = {"delta": {"stop_reason": "tool_use" if tool else "end_turn", "stop_sequence": None}}
    if not script.omit_usage:
        final["usage"] = {"output_tokens": script.usage[1]}
    chunks += [event("message_delta", TAIL, **final), event("message_stop", TAIL)]
    return stream_reply("sse", chunks)


ROUTES = {
    ("POST", "/v1/messages"): Route(messages, error, stream_kind="sse", precheck=require_headers),
}
