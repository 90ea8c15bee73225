"""OpenAI-compatible LLM routes: chat, completions, embeddings. Thin: parse, call, render."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing

from quart import Blueprint, Response, current_app, request

from edgeproxy.api.requests import check_body, parse_json_object, wants_usage_chunk
from edgeproxy.calls import dumps
from edgeproxy.gateway import Gateway
from edgeproxy.providers.base import CallType

blueprint = Blueprint("llm", __name__)
__all__ = ["blueprint", "dumps"]


def _gateway() -> Gateway:
    gw: Gateway = current_app.extensions["edgeproxy"]
    return gw


async def _handle(call: CallType) -> Response:
    gw = _gateway()
    principal = await gw.authenticate(request.headers)
    body = parse_json_object(await request.get_data(as_text=False, parse_form_data=False))
    requested = check_body(call, body)
    group = gw.resolve_model(requested, principal)
    record = gw.calls.new_record(call, principal, group, requested, body)
    # Limits, budget, response cache and the call itself (edgeproxy/serving.py).
    answer = await gw.serving.answer(record, stream=bool(body.get("stream")), include_usage=wants_usage_chunk(body))
    if answer.chunks is None:
        return Response(answer.body or b"", status=200, content_type="application/json", headers=answer.headers)
    response = Response(
        await _started(answer.chunks),
        status=200,
        content_type="text/event-stream",
        headers={**answer.headers, "cache-control": "no-cache", "x-accel-buffering": "no"},
    )
    response.timeout = None  # our deadlines apply; Quart's would cut long streams
    return response


async def _started(chunks: AsyncGenerator[bytes, None]) -> AsyncIterator[bytes]:
    """The stream with its first chunk already taken.

    A client that leaves before Quart starts the body would otherwise leave the generator unstarted, and an
    unstarted generator never runs its `finally` (closing the upstream, settling the budget reservation and the
    rate-limit slot). A started one is closed by trio's async-generator finalizer even if nobody iterates it.
    """
    try:
        first = await chunks.__anext__()
    except StopAsyncIteration:
        first = b""

    async def body() -> AsyncIterator[bytes]:
        async with aclosing(chunks):  # a client leaving mid-stream closes the upstream at once, not at GC
            if first:
                yield first
            async for data in chunks:
                yield data

    return body()


@blueprint.post("/v1/chat/completions")
@blueprint.post("/chat/completions")
@blueprint.post("/openai/deployments/<path:model>/chat/completions")
async def chat_completions(model: str | None = None) -> Response:
    return await _handle(CallType.CHAT)


@blueprint.post("/v1/completions")
@blueprint.post("/completions")
async def completions() -> Response:
    return await _handle(CallType.COMPLETION)


@blueprint.post("/v1/embeddings")
@blueprint.post("/embeddings")
async def embeddings() -> Response:
    return await _handle(CallType.EMBEDDING)
