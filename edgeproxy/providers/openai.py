"""OpenAI-compatible upstreams: OpenAI itself, Moonshot, DeepSeek, MLX/vLLM/llama.cpp servers.

The body goes upstream almost as the client sent it; responses pass through. The work is in streams: we always ask
for usage (to bill), and keep the usage chunk out of what the client sees (the API layer re-adds it when asked).
"""

from __future__ import annotations

from typing import Any

from edgeproxy.config import Deployment
from edgeproxy.errors import UpstreamProtocolError
from edgeproxy.providers.base import CallType, Provider, StreamTranslator, UpstreamRequest, Usage, WireChunk
from edgeproxy.providers.wire import (
    SSEDecoder,
    SSEEvent,
    auth_headers,
    parse_json_object,
    raise_stream_error,
    sse_json,
    with_deployment_defaults,
)

_PATHS = {CallType.CHAT: "/chat/completions", CallType.COMPLETION: "/completions", CallType.EMBEDDING: "/embeddings"}


def usage_from_openai(raw: Any) -> Usage | None:
    """Our Usage from an OpenAI `usage` object; None when there is none."""
    if not isinstance(raw, dict):
        return None
    details = raw.get("prompt_tokens_details")
    cached = details.get("cached_tokens") if isinstance(details, dict) else None
    return Usage(
        prompt_tokens=_int(raw.get("prompt_tokens")),
        completion_tokens=_int(raw.get("completion_tokens")),
        cache_read_tokens=_int(cached),
    )


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


class OpenAIProvider(Provider):
    name = "openai"

    def build_request(
        self, deployment: Deployment, call: CallType, body: dict[str, Any], *, stream: bool
    ) -> UpstreamRequest:
        payload = with_deployment_defaults(deployment, body, call)
        payload["model"] = deployment.model
        if stream and call is not CallType.EMBEDDING:
            payload["stream"] = True
            options = payload.get("stream_options")
            # Keep the client's other stream options; usage we need whatever the client asked.
            payload["stream_options"] = {**(options if isinstance(options, dict) else {}), "include_usage": True}
        else:
            # OpenAI rejects stream_options without stream; the caller decides streaming, not the body.
            payload.pop("stream", None)
            payload.pop("stream_options", None)
        return UpstreamRequest("POST", deployment.api_base + _PATHS[call], self._headers(deployment), payload)

    def parse_response(
        self, deployment: Deployment, call: CallType, body: dict[str, Any], raw: bytes
    ) -> tuple[dict[str, Any], Usage | None]:
        obj = parse_json_object(raw)
        field = "data" if call is CallType.EMBEDDING else "choices"
        if not isinstance(obj.get(field), list):
            raise UpstreamProtocolError(f"upstream response has no '{field}' list")
        # Pass through what the upstream said (its model name is the more precise one); fill it when missing.
        obj.setdefault("model", deployment.model)
        return obj, usage_from_openai(obj.get("usage"))

    def stream_translator(self, deployment: Deployment, call: CallType, body: dict[str, Any]) -> StreamTranslator:
        return OpenAIStreamTranslator()

    def probe_request(self, deployment: Deployment) -> UpstreamRequest:
        return UpstreamRequest("GET", deployment.api_base + "/models", self._headers(deployment))

    def _headers(self, deployment: Deployment) -> dict[str, str]:
        headers = auth_headers(deployment)
        organization = deployment.params.get("organization")
        if organization:
            headers.setdefault("OpenAI-Organization", str(organization))
        return headers


class MoonshotProvider(OpenAIProvider):
    name = "moonshot"


class DeepSeekProvider(OpenAIProvider):
    name = "deepseek"


class OpenAIStreamTranslator(StreamTranslator):
    """SSE `data: {chunk}` events → the same chunks, minus usage; `data: [DONE]` ends the stream.

    Each chunk also comes with its JSON as it arrived (`feed_wire`), so the relay can send it on without encoding
    it again: what the chunk says is ours to change only in its `model` (the relay's) and its `usage: null`,
    which is cut out of the bytes here. A chunk whose bytes cannot be trusted to say the same as the parsed
    chunk (usage numbers on a chunk with choices, several JSON documents in one event) comes without them.
    """

    def __init__(self) -> None:
        super().__init__()
        self._sse = SSEDecoder()

    def feed(self, data: bytes) -> list[dict[str, Any]]:
        return [chunk for chunk, _ in self._events(self._sse.feed(data))]

    def close(self) -> list[dict[str, Any]]:
        return [chunk for chunk, _ in self._events(self._sse.close())]

    def feed_wire(self, data: bytes) -> list[WireChunk]:
        return self._events(self._sse.feed(data))

    def close_wire(self) -> list[WireChunk]:
        return self._events(self._sse.close())

    def _events(self, events: list[SSEEvent]) -> list[WireChunk]:
        chunks: list[WireChunk] = []
        for event in events:
            if event.data.strip() == "[DONE]":
                self.finished = True
                continue
            documents = sse_json(event)
            single = len(documents) == 1
            for obj in documents:
                usage = obj.get("usage", _ABSENT) if isinstance(obj, dict) else _ABSENT
                chunk = self._chunk(obj)
                if chunk is not None:
                    chunks.append((chunk, _wire(event.data, usage) if single else None))
        return chunks

    def _chunk(self, obj: Any) -> dict[str, Any] | None:
        if not isinstance(obj, dict):
            raise UpstreamProtocolError("upstream stream event is not a JSON object")
        raise_stream_error(obj)
        choices = obj.get("choices")
        if not isinstance(choices, list):
            raise UpstreamProtocolError("upstream stream chunk has no 'choices' list")
        # OpenAI puts `usage: null` on every chunk once include_usage is set; strip it all, keep the numbers.
        usage = usage_from_openai(obj.pop("usage", None))
        if usage is not None:
            self.usage = usage
        if not choices:
            return None
        for choice in choices:
            self._collect(choice)
        return obj

    def _collect(self, choice: Any) -> None:
        if not isinstance(choice, dict):
            return
        if isinstance(choice.get("text"), str):  # /completions chunks
            self.text_parts.append(choice["text"])
        delta = choice.get("delta")
        if not isinstance(delta, dict):
            return
        if isinstance(delta.get("content"), str):
            self.text_parts.append(delta["content"])
        # Tool-call arguments are generated tokens too: count them for the estimate when no usage arrives.
        for call in delta.get("tool_calls") or []:
            arguments = (call.get("function") or {}).get("arguments") if isinstance(call, dict) else None
            if isinstance(arguments, str):
                self.text_parts.append(arguments)


_ABSENT = object()
# A last `usage: null`, as OpenAI writes it (compact) and as Python's json.dumps does (spaced).
_NULL_USAGE_ENDS = (b',"usage":null}', b', "usage": null}')


def _wire(data: str, usage: Any) -> bytes | None:
    """The chunk's JSON to send on, given the `usage` it arrived with: as it arrived, less a last `usage: null`;
    None when it carried usage numbers (the chunk sent on has none) or the null is elsewhere."""
    wire = data.encode()
    if usage is _ABSENT:
        return wire
    if usage is None:
        for end in _NULL_USAGE_ENDS:
            if wire.endswith(end):
                return wire[: -len(end)] + b"}"
    return None
