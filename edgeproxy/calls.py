"""One LLM call from admission to billing: route it, run it, stream it, account for it.

The API layer parses and renders; this module is the domain logic between. Everything after the first
byte of a stream is here too, because that is where partial usage must be billed.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass, field
from typing import Any

import trio

from edgeproxy.auth import Principal
from edgeproxy.callids import new_call_id
from edgeproxy.config import Deployment
from edgeproxy.errors import ProxyError, UpstreamError
from edgeproxy.jsonwriter import writer
from edgeproxy.providers.base import CallType, Usage, estimate_tokens
from edgeproxy.router import Routed, Router
from edgeproxy.upstream import Upstreams, UpstreamStream

log = logging.getLogger("edgeproxy.calls")


_compact = writer()


def dumps(obj: Any) -> bytes:
    return _compact(obj).encode("utf-8")


def sse_event(obj: Any) -> bytes:
    return b"data: " + dumps(obj) + b"\n\n"


SSE_DONE = b"data: [DONE]\n\n"


@dataclass(slots=True)
class CallRecord:
    """What happened in one call; handed to accounting when it ends."""

    call_id: str
    call_type: CallType
    principal: Principal
    model_group: str
    requested_model: str
    body: dict[str, Any]
    start_time: float = field(default_factory=time.time)
    start_monotonic: float = field(default_factory=time.monotonic)
    deployment: Deployment | None = None
    usage: Usage | None = None
    ttft_s: float | None = None
    status: str = "success"
    error: str | None = None
    attempted_retries: int = 0
    attempted_fallbacks: int = 0
    cost: float = 0.0
    reservation: Any = None  # the budget reservation held while the call runs
    key_spend: float | None = None
    cache_hit: bool = False  # answered from the response cache (cost 0, no deployment)
    cache_key: str | None = None  # x-litellm-cache-key on a hit
    chunks: list[dict[str, Any]] | None = None  # a stream's chunks, kept when its answer will be cached
    # The answer (response dict, cached chunks or a stream's translator), by reference: read only when prompts
    # and responses are stored in spend logs (edgeproxy/calllog.py).
    output: Any = None

    def headers(self) -> dict[str, str]:
        headers = {
            "x-litellm-call-id": self.call_id,
            "x-litellm-model-group": self.model_group,
            "x-litellm-attempted-retries": str(self.attempted_retries),
            "x-litellm-attempted-fallbacks": str(self.attempted_fallbacks),
        }
        if self.deployment is not None:
            headers["x-litellm-model-id"] = self.deployment.deployment_id
        if self.usage is not None:  # known only once a non-streamed call has ended
            headers["x-litellm-response-cost"] = repr(self.cost)
        if self.key_spend is not None:
            headers["x-litellm-key-spend"] = repr(self.key_spend)
        if self.cache_hit and self.cache_key is not None:
            headers["x-litellm-cache-key"] = self.cache_key
        return headers


def prompt_text(call: CallType, body: dict[str, Any]) -> str:
    """The prompt as plain text, for estimates when the upstream reports no usage."""
    if call is CallType.CHAT:
        parts: list[str] = []
        for message in body.get("messages") or []:
            content = message.get("content")
            if isinstance(content, str):
                parts.append(content)
            elif isinstance(content, list):
                parts += [p.get("text", "") for p in content if isinstance(p, dict)]
        return "\n".join(parts)
    value = body.get("prompt" if call is CallType.COMPLETION else "input")
    return value if isinstance(value, str) else json.dumps(value)


class Calls:
    """Runs LLM calls through the router; `on_finish` receives every record (accounting, logs, metrics)."""

    def __init__(self, router: Router, upstreams: Upstreams, on_finish: Callable[[CallRecord], None]) -> None:
        self._router = router
        self._upstreams = upstreams
        self._on_finish = on_finish

    def new_record(
        self, call: CallType, principal: Principal, group: str, requested: str, body: dict[str, Any]
    ) -> CallRecord:
        return CallRecord(
            call_id=new_call_id(),
            call_type=call,
            principal=principal,
            model_group=group,
            requested_model=requested,
            body=body,
        )

    def _note_route(self, record: CallRecord, routed: Routed[Any]) -> None:
        record.deployment = routed.deployment
        record.model_group = routed.group
        record.attempted_retries = routed.attempted_retries
        record.attempted_fallbacks = routed.attempted_fallbacks

    def _fail(self, record: CallRecord, exc: ProxyError) -> None:
        record.status = "failure"
        record.error = exc.message
        record.attempted_retries = getattr(exc, "attempted_retries", record.attempted_retries)
        record.attempted_fallbacks = getattr(exc, "attempted_fallbacks", record.attempted_fallbacks)
        self._on_finish(record)

    async def complete(self, record: CallRecord) -> dict[str, Any]:
        """A non-streamed call; the response object is ready to render."""
        allow = _allow_group(record.principal)
        try:
            routed = await self._router.route(
                record.model_group,
                lambda d: self._upstreams.call(d, record.call_type, record.body),
                allow_group=allow,
                output_tokens=_output_tokens,
            )
        except ProxyError as exc:
            self._fail(record, exc)
            raise
        self._note_route(record, routed)
        response, usage = routed.value
        if usage is None:
            usage = _estimate(record, _response_text(response))
        record.usage = usage
        response["model"] = record.requested_model
        if record.call_type is not CallType.EMBEDDING:
            self._router.record_tokens(routed.deployment, usage.total_tokens)
        record.output = response
        self._on_finish(record)
        return response

    async def open_stream(self, record: CallRecord) -> UpstreamStream:
        """Open the upstream stream (retries and fallbacks apply until its first chunk)."""
        try:
            routed = await self._router.route(
                record.model_group,
                lambda d: self._upstreams.open_stream(d, record.call_type, record.body),
                allow_group=_allow_group(record.principal),
            )
        except ProxyError as exc:
            self._fail(record, exc)
            raise
        self._note_route(record, routed)
        record.ttft_s = time.monotonic() - record.start_monotonic
        return routed.value

    async def relay(
        self, record: CallRecord, stream: UpstreamStream, include_usage: bool
    ) -> AsyncGenerator[bytes, None]:
        """SSE bytes for the client. Always closes the upstream and accounts, even on disconnect."""
        last: dict[str, Any] | None = None
        renamed = ModelRename(record.requested_model)
        try:
            async for chunk, wire in stream.chunks():
                if wire is not None:
                    wire = renamed(wire, chunk.get("model"))
                chunk["model"] = record.requested_model
                last = chunk
                if record.chunks is not None:
                    record.chunks.append(chunk)
                # Sent on as it came when it can be (an OpenAI-compatible upstream): no second encoding.
                yield b"data: " + wire + b"\n\n" if wire is not None else sse_event(chunk)
            record.usage = stream.usage or _estimate(record, stream.translator.text)
            if include_usage:
                yield sse_event(_usage_chunk(last, record))
            yield SSE_DONE
        except UpstreamError as exc:
            # Bytes already went out: no retry now. End the stream with an error event the client can read.
            record.status = "failure"
            record.error = exc.message
            yield sse_event(exc.body())
        finally:
            with trio.CancelScope(shield=True):
                await stream.aclose()
                if record.usage is None:  # the client went away mid-stream: bill what was generated
                    record.usage = stream.usage or _estimate(record, stream.translator.text)
                    if record.status == "success":
                        record.error = "client disconnected"
                if record.deployment is not None and record.call_type is not CallType.EMBEDDING:
                    self._router.record_tokens(record.deployment, record.usage.total_tokens)
                record.output = stream.translator
                self._on_finish(record)


class ModelRename:
    """Puts the model the client asked for into a chunk's JSON bytes in place of the upstream's."""

    def __init__(self, requested: str) -> None:
        self.requested = requested
        self._upstream: str | None = None
        self._patterns: tuple[tuple[bytes, bytes], ...] = ()

    def __call__(self, wire: bytes, model: Any) -> bytes | None:
        """`wire` with `model` (the chunk's, as parsed) renamed; None when the bytes cannot be found once."""
        if model == self.requested:
            return wire
        if not isinstance(model, str):
            return None  # none to rename: the chunk sent on gains one
        if model != self._upstream:
            self._upstream = model
            old, new = json.dumps(model).encode(), json.dumps(self.requested).encode()
            self._patterns = tuple((b'"model":' + gap + old, b'"model":' + gap + new) for gap in (b"", b" "))
        for old, new in self._patterns:
            # Outside strings (a quote inside one is escaped), so one occurrence is the chunk's own key.
            if wire.count(old) == 1:
                return wire.replace(old, new)
        return None


def _output_tokens(value: tuple[dict[str, Any], Usage | None]) -> int:
    usage = value[1]
    return usage.completion_tokens if usage is not None else 0


def _allow_group(principal: Principal) -> Callable[[str], None]:
    return principal.check_model


def _estimate(record: CallRecord, completion_text: str) -> Usage:
    return Usage(
        prompt_tokens=estimate_tokens(prompt_text(record.call_type, record.body)),
        completion_tokens=estimate_tokens(completion_text),
        estimated=True,
    )


def _response_text(response: dict[str, Any]) -> str:
    texts: list[str] = []
    for choice in response.get("choices") or []:
        message = choice.get("message") or {}
        texts.append(str(message.get("content") or choice.get("text") or ""))
    return "".join(texts)


def _usage_chunk(last: dict[str, Any] | None, record: CallRecord) -> dict[str, Any]:
    assert record.usage is not None
    base = last or {}
    return {
        "id": base.get("id", f"chatcmpl-{record.call_id}"),
        "object": base.get("object", "chat.completion.chunk"),
        "created": base.get("created", int(record.start_time)),
        "model": record.requested_model,
        "choices": [],
        "usage": record.usage.to_openai(),
    }
