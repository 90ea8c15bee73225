"""Reading and checking OpenAI-shaped request bodies: 400 with `param` for anything wrong."""

from __future__ import annotations

import json
import math
from typing import Any

from edgeproxy.errors import InvalidRequestError
from edgeproxy.providers.base import CallType


def parse_json_object(raw: bytes | str) -> dict[str, Any]:
    if not raw.strip():
        raise InvalidRequestError("the request body is empty; send a JSON object")
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        detail = f" at line {exc.lineno}, column {exc.colno}" if isinstance(exc, json.JSONDecodeError) else ""
        raise InvalidRequestError(f"the request body is not valid JSON{detail}") from None
    if not isinstance(body, dict):
        raise InvalidRequestError("the request body must be a JSON object")
    return body


def _require_str(body: dict[str, Any], name: str) -> str:
    value = body.get(name)
    if value is None:
        raise InvalidRequestError(f"missing required field {name!r}", param=name)
    if not isinstance(value, str) or not value:
        raise InvalidRequestError(f"{name!r} must be a non-empty string", param=name)
    return value


def _check_optional(body: dict[str, Any], name: str, kind: type | tuple[type, ...], what: str) -> None:
    value = body.get(name)
    if value is None:
        return
    if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
        raise InvalidRequestError(f"{name!r} must be {what}", param=name)
    if not isinstance(value, kind) or (isinstance(value, float) and not math.isfinite(value)):
        raise InvalidRequestError(f"{name!r} must be {what}", param=name)


def _check_messages(body: dict[str, Any]) -> None:
    messages = body.get("messages")
    if messages is None:
        raise InvalidRequestError("missing required field 'messages'", param="messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequestError("'messages' must be a non-empty list", param="messages")
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise InvalidRequestError(f"messages[{i}] must be an object", param=f"messages[{i}]")
        role = message.get("role")
        if role not in ("system", "developer", "user", "assistant", "tool", "function"):
            raise InvalidRequestError(
                f"messages[{i}].role must be one of system, user, assistant, tool", param=f"messages[{i}].role"
            )
        content = message.get("content")
        if content is not None and not isinstance(content, str | list):
            raise InvalidRequestError(
                f"messages[{i}].content must be a string or a list of parts", param=f"messages[{i}].content"
            )


def _check_input(body: dict[str, Any], name: str) -> None:
    value = body.get(name)
    if value is None:
        raise InvalidRequestError(f"missing required field {name!r}", param=name)
    if isinstance(value, str):
        return
    if not isinstance(value, list) or not value:
        raise InvalidRequestError(f"{name!r} must be a string or a non-empty list", param=name)


def check_body(call: CallType, body: dict[str, Any]) -> str:
    """Check the fields we rely on; return the requested model name."""
    model = _require_str(body, "model")
    if call is CallType.CHAT:
        _check_messages(body)
    elif call is CallType.COMPLETION:
        _check_input(body, "prompt")
    else:
        _check_input(body, "input")
    _check_optional(body, "stream", bool, "true or false")
    _check_optional(body, "max_tokens", int, "a positive integer")
    _check_optional(body, "max_completion_tokens", int, "a positive integer")
    for name in ("max_tokens", "max_completion_tokens"):
        if isinstance(body.get(name), int) and body[name] < 1:
            raise InvalidRequestError(f"{name!r} must be a positive integer", param=name)
    for name in ("temperature", "top_p", "presence_penalty", "frequency_penalty"):
        _check_optional(body, name, (int, float), "a number")
    _check_optional(body, "stream_options", dict, "an object")
    _check_optional(body, "tools", list, "a list")
    _check_optional(body, "stop", (str, list), "a string or a list of strings")
    if call is CallType.EMBEDDING and body.get("stream"):
        raise InvalidRequestError("embeddings cannot be streamed", param="stream")
    return model


def wants_usage_chunk(body: dict[str, Any]) -> bool:
    options = body.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True
