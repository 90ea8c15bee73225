"""OpenAI-compatible LLM routes: chat, completions, embeddings. Which path is which call, and parse → answer.

POSTs on these paths are served by the raw ASGI handler in `api/fastpath.py`, in front of Quart (Quart costs
about 200 µs a request). Quart keeps the rules only so that other methods on these paths get its 405.
"""

from __future__ import annotations

from typing import NoReturn

from quart import Blueprint

from edgeproxy.api.requests import check_body, parse_json_object, wants_usage_chunk
from edgeproxy.auth import Principal
from edgeproxy.gateway import Gateway
from edgeproxy.providers.base import CallType
from edgeproxy.serving import Answer

ROUTES: dict[str, CallType] = {
    "/v1/chat/completions": CallType.CHAT,
    "/chat/completions": CallType.CHAT,
    "/v1/completions": CallType.COMPLETION,
    "/completions": CallType.COMPLETION,
    "/v1/embeddings": CallType.EMBEDDING,
    "/embeddings": CallType.EMBEDDING,
}
# Azure-style chat: /openai/deployments/<path:model>/chat/completions (the model in the path is not used).
_DEPLOYMENT_PREFIX, _DEPLOYMENT_SUFFIX = "/openai/deployments/", "/chat/completions"


def call_type(path: str) -> CallType | None:
    """The call a POST to `path` makes, matched as Quart's URL map matches the rules below.

    werkzeug ignores extra leading slashes, and its `path` converter (`[^/].*?`) wants a non-empty model that
    does not start with a slash and has no newline. tests/e2e/test_fastpath.py checks both agree.
    """
    if path.startswith("//"):
        path = "/" + path.lstrip("/")
    call = ROUTES.get(path)
    if call is None and path.startswith(_DEPLOYMENT_PREFIX) and path.endswith(_DEPLOYMENT_SUFFIX):
        model = path[len(_DEPLOYMENT_PREFIX) : -len(_DEPLOYMENT_SUFFIX)]
        if model and model[0] != "/" and "\n" not in model:
            return CallType.CHAT
    return call


async def answer(gw: Gateway, call: CallType, principal: Principal, raw: bytes) -> Answer:
    body = parse_json_object(raw)
    requested = check_body(call, body)
    group = gw.resolve_model(requested, principal)
    record = gw.calls.new_record(call, principal, group, requested, body)
    # Limits, budget, response cache and the call itself (edgeproxy/serving.py).
    return await gw.serving.answer(record, stream=bool(body.get("stream")), include_usage=wants_usage_chunk(body))


blueprint = Blueprint("llm", __name__)


async def _served_by_fast_path(model: str | None = None) -> NoReturn:
    raise RuntimeError("a POST on an LLM route reached Quart; api/fastpath.py should have served it")


for _rule in (*ROUTES, f"{_DEPLOYMENT_PREFIX}<path:model>{_DEPLOYMENT_SUFFIX}"):
    blueprint.add_url_rule(_rule, view_func=_served_by_fast_path, methods=["POST"])
