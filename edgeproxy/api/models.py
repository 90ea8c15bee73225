"""GET /v1/models: the model groups (and visible aliases) this key may use."""

from __future__ import annotations

from quart import Blueprint, Response, current_app, request

from edgeproxy.calls import dumps
from edgeproxy.gateway import Gateway

blueprint = Blueprint("models", __name__)


@blueprint.get("/v1/models")
@blueprint.get("/models")
async def list_models() -> Response:
    gw: Gateway = current_app.extensions["edgeproxy"]
    principal = await gw.authenticate(request.headers)
    created = 1677610602  # OpenAI's clients need a number here; there is no meaningful date for a group
    data = [
        {"id": name, "object": "model", "created": created, "owned_by": "edgeproxy"}
        for name in gw.visible_models(principal)
    ]
    return Response(dumps({"object": "list", "data": data}), content_type="application/json")
