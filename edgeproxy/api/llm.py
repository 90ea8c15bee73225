"""OpenAI-compatible LLM routes: chat, completions, embeddings. Thin: parse, call, render."""

from __future__ import annotations

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
    gw.accounting.admit(record)
    if not body.get("stream"):
        result = await gw.calls.complete(record)
        return Response(dumps(result), status=200, content_type="application/json", headers=record.headers())
    stream = await gw.calls.open_stream(record)
    response = Response(
        gw.calls.relay(record, stream, wants_usage_chunk(body)),
        status=200,
        content_type="text/event-stream",
        headers={**record.headers(), "cache-control": "no-cache", "x-accel-buffering": "no"},
    )
    response.timeout = None  # our deadlines apply; Quart's would cut long streams
    return response


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
