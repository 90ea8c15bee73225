"""Health routes: liveliness (process up), readiness (dependencies up), /health (deployments, admin)."""

from __future__ import annotations

from quart import Blueprint, Response, current_app, request

from edgeproxy import __version__
from edgeproxy.calls import dumps
from edgeproxy.gateway import Gateway

blueprint = Blueprint("health", __name__)


def _gateway() -> Gateway:
    gw: Gateway = current_app.extensions["edgeproxy"]
    return gw


def _json(body: object, status: int = 200) -> Response:
    return Response(dumps(body), status=status, content_type="application/json")


@blueprint.get("/health/liveliness")
@blueprint.get("/health/liveness")
async def liveliness() -> Response:
    return _json({"status": "healthy"})


@blueprint.get("/health/readiness")
async def readiness() -> Response:
    gw = _gateway()
    report = await gw.readiness()
    return _json(report, status=200 if report["status"] == "healthy" else 503)


@blueprint.get("/health")
async def health() -> Response:
    gw = _gateway()
    principal = await gw.authenticate(request.headers)
    principal.require_admin()
    return _json({**gw.router.health_report(), "version": __version__})
