"""GET /metrics: Prometheus text format; open, or behind the master key (`metrics_require_auth`)."""

from __future__ import annotations

import trio
from quart import Blueprint, Response, current_app, request

from edgeproxy.gateway import Gateway
from edgeproxy.metrics import CONTENT_TYPE
from edgeproxy.operations import refresh_metrics

blueprint = Blueprint("metrics", __name__)


@blueprint.get("/metrics")
@blueprint.get("/metrics/")  # LiteLLM's path
async def metrics() -> Response:
    gw: Gateway = current_app.extensions["edgeproxy"]
    if gw.config.general.ops.metrics_require_auth:
        principal = await gw.authenticate(request.headers)
        principal.require_admin()
    refresh_metrics(gw)  # this worker's gauges, current; the others' are at most a couple of seconds old
    # Rendering reads every worker's files in multiprocess mode: off the event loop.
    body = await trio.to_thread.run_sync(gw.ops.metrics.render, limiter=gw.ops.metrics.render_limiter)
    return Response(body, content_type=CONTENT_TYPE)
