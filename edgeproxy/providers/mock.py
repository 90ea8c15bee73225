"""The built-in `mock/` provider: an OpenAI-compatible upstream that lives in-process.

It lets people try edgeproxy (the `demo` model) and lets tests smoke-test the whole path without an LLM. The
provider is plain OpenAI translation; `MockTransport` stands in for an httpcore connection pool (the interface the
upstream client sends through) and answers in real OpenAI wire format, deterministically, without sleeping.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import AsyncIterable, AsyncIterator
from typing import Any

import httpcore

from edgeproxy.config import Deployment
from edgeproxy.providers.base import CallType, Usage, estimate_tokens
from edgeproxy.providers.openai import OpenAIProvider
from edgeproxy.providers.wire import (
    ChunkMaker,
    chat_completion,
    content_text,
    embedding_list,
    text_completion,
)

GREETING = "Hello from edgeproxy's demo model. You said: "
ECHO_LIMIT = 200
EMBEDDING_DIMENSIONS = 16
_MODEL_CREATED = 1_700_000_000  # fixed, so /models answers are stable
_ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                404: "not_found_error", 429: "rate_limit_error"}  # fmt: skip


class MockProvider(OpenAIProvider):
    name = "mock"


class MockTransport:
    """Answers OpenAI API calls for one mock deployment: chat, completions, embeddings, models."""

    def __init__(self, deployment: Deployment) -> None:
        self.deployment = deployment

    async def aclose(self) -> None:
        pass

    async def handle_async_request(self, request: httpcore.Request) -> httpcore.Response:
        assert isinstance(request.stream, AsyncIterable)
        body = b"".join([piece async for piece in request.stream])
        path = request.url.target.decode("ascii").partition("?")[0].rstrip("/")
        method = request.method.decode("ascii")
        error = self._configured_error()
        if error is not None:
            return error
        if method == "GET" and path.endswith("/models"):
            return _json(200, self._models())
        if method != "POST":
            return _error(405, f"{method} {path} is not supported by the mock upstream")
        try:
            payload = json.loads(body or b"{}")
        except ValueError:
            return _error(400, "the request body is not valid JSON")
        if not isinstance(payload, dict):
            return _error(400, "the request body must be a JSON object")
        if path.endswith("/chat/completions"):
            return self._generate(CallType.CHAT, payload)
        if path.endswith("/completions"):
            return self._generate(CallType.COMPLETION, payload)
        if path.endswith("/embeddings"):
            return self._embeddings(payload)
        return _error(404, f"no route {path} on the mock upstream")

    def _configured_error(self) -> httpcore.Response | None:
        # `mock_response: "error:429"` makes every call fail that way, so tests can exercise retries and cooldowns.
        reply = self.deployment.params.get("mock_response")
        if isinstance(reply, str) and reply.startswith("error:"):
            code = reply.removeprefix("error:").strip()
            status = int(code) if code.isdigit() and 400 <= int(code) <= 599 else 500
            return _error(status, f"mock upstream configured to fail with HTTP {status}")
        return None

    def _models(self) -> dict[str, Any]:
        model = {"id": self.deployment.model, "object": "model", "created": _MODEL_CREATED, "owned_by": "edgeproxy"}
        return {"object": "list", "data": [model]}

    def _generate(self, call: CallType, payload: dict[str, Any]) -> httpcore.Response:
        prompt_text = _prompt_text(call, payload)
        reply, finish = self._reply(call, payload)
        usage = Usage(prompt_tokens=max(1, estimate_tokens(prompt_text)), completion_tokens=estimate_tokens(reply))
        model = self.deployment.model
        if not payload.get("stream"):
            if call is CallType.CHAT:
                message = {"role": "assistant", "content": reply, "refusal": None}
                return _json(200, chat_completion(model, message, finish, usage))
            return _json(200, text_completion(model, reply, finish, usage))
        options = payload.get("stream_options")
        include_usage = isinstance(options, dict) and bool(options.get("include_usage"))
        return httpcore.Response(
            200,
            headers=[(b"content-type", b"text/event-stream")],
            content=_Events(_stream_events(ChunkMaker(model, call), reply, finish, usage, include_usage)),
        )

    def _reply(self, call: CallType, payload: dict[str, Any]) -> tuple[str, str]:
        configured = self.deployment.params.get("mock_response")
        echo = GREETING + _last_user_text(call, payload)[:ECHO_LIMIT]
        reply = echo if configured is None else str(configured)
        # Honour max_tokens like a real model would, so clients can see finish_reason "length".
        limit = payload.get("max_completion_tokens") or payload.get("max_tokens")
        if isinstance(limit, int) and limit > 0 and estimate_tokens(reply) > limit:
            return reply[: limit * 4], "length"
        return reply, "stop"

    def _embeddings(self, payload: dict[str, Any]) -> httpcore.Response:
        given = payload.get("input")
        inputs = [given] if isinstance(given, str) else given
        if not isinstance(inputs, list) or not inputs:
            return _error(400, "input must be a string or a non-empty list", param="input")
        texts = [item if isinstance(item, str) else json.dumps(item) for item in inputs]
        usage = Usage(prompt_tokens=max(1, sum(estimate_tokens(t) for t in texts)))
        vectors = [embedding_vector(t) for t in texts]
        return _json(200, embedding_list(self.deployment.model, vectors, usage, payload.get("encoding_format")))


def embedding_vector(text: str) -> list[float]:
    """A deterministic unit vector from the text's sha256: equal texts embed equally, others differ."""
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    raw = [int.from_bytes(digest[i : i + 2], "big") / 65535 * 2 - 1 for i in range(0, 2 * EMBEDDING_DIMENSIONS, 2)]
    norm = math.sqrt(sum(x * x for x in raw)) or 1.0
    return [x / norm for x in raw]


def _last_user_text(call: CallType, payload: dict[str, Any]) -> str:
    if call is CallType.COMPLETION:
        prompt = payload.get("prompt")
        return prompt if isinstance(prompt, str) else " ".join(p for p in prompt or [] if isinstance(p, str))
    for message in reversed(payload.get("messages") or []):
        if isinstance(message, dict) and message.get("role") == "user":
            return content_text(message.get("content"))
    return ""


def _prompt_text(call: CallType, payload: dict[str, Any]) -> str:
    if call is CallType.COMPLETION:
        return _last_user_text(call, payload)
    messages = payload.get("messages") or []
    return "\n".join(content_text(m.get("content")) for m in messages if isinstance(m, dict))


def _stream_events(maker: ChunkMaker, reply: str, finish: str, usage: Usage, include_usage: bool) -> list[bytes]:
    # OpenAI's shape: a role chunk, content chunks, a finish chunk, then (when asked) a usage chunk with no choices;
    # with include_usage every other chunk carries `usage: null`.
    deltas: list[tuple[dict[str, Any], str | None]] = [({"role": "assistant", "content": ""}, None)]
    deltas += [({"content": word}, None) for word in re.findall(r"\s*\S+\s*", reply) or [reply]]
    deltas.append(({}, finish))
    chunks = [c for c in (maker.chunk(delta, reason) for delta, reason in deltas) if c is not None]
    if include_usage:
        for chunk in chunks:
            chunk["usage"] = None
        chunks.append({**chunks[-1], "choices": [], "usage": usage.to_openai()})
    return [b"data: " + json.dumps(c).encode() + b"\n\n" for c in chunks] + [b"data: [DONE]\n\n"]


class _Events:
    """Yields each SSE event as its own piece, like a network would, without an async generator to finalize."""

    def __init__(self, pieces: list[bytes]) -> None:
        self._pieces = pieces

    def __aiter__(self) -> AsyncIterator[bytes]:
        return _PieceIterator(self._pieces)


class _PieceIterator:
    def __init__(self, pieces: list[bytes]) -> None:
        self._pieces = iter(pieces)

    def __aiter__(self) -> _PieceIterator:
        return self

    async def __anext__(self) -> bytes:
        try:
            return next(self._pieces)
        except StopIteration:
            raise StopAsyncIteration from None


def _json(status: int, obj: Any) -> httpcore.Response:
    return httpcore.Response(status, headers=[(b"content-type", b"application/json")], content=json.dumps(obj).encode())


def _error(status: int, message: str, param: str | None = None) -> httpcore.Response:
    error = {"message": message, "type": _ERROR_TYPES.get(status, "api_error"), "param": param, "code": str(status)}
    return _json(status, {"error": error})
