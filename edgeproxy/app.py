"""The Quart-Trio application: blueprints, limits, error handlers, and the LLM fast path in front of it all."""

from __future__ import annotations

import logging
from typing import Any

from quart import Response, current_app
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from edgeproxy import ui
from edgeproxy.api import cache, health, keys, llm, metrics, models, spend, teams, users
from edgeproxy.api.fastpath import BODY_TIMEOUT_S, FastPath, error_body, internal_error, too_large_error
from edgeproxy.calls import dumps
from edgeproxy.errors import InvalidRequestError, NotFoundError, ProxyError
from edgeproxy.gateway import Gateway

log = logging.getLogger("edgeproxy.app")


def gateway() -> Gateway:
    gw: Gateway = current_app.extensions["edgeproxy"]
    return gw


def error_response(exc: ProxyError) -> Response:
    response = current_app.response_class(error_body(exc), status=exc.status, content_type="application/json")
    response.headers.update(exc.headers)
    return response


def create_app(gw: Gateway) -> QuartTrio:
    app = QuartTrio("edgeproxy")
    app.extensions["edgeproxy"] = gw
    max_bytes = int(gw.config.general.max_request_size_mb * 1024 * 1024)
    app.config.update(
        MAX_CONTENT_LENGTH=max_bytes,
        # Quart's 60 s RESPONSE_TIMEOUT silently truncates long streams; deadlines are ours (per deployment).
        RESPONSE_TIMEOUT=None,
        BODY_TIMEOUT=BODY_TIMEOUT_S,
        PROVIDE_AUTOMATIC_OPTIONS=False,
    )
    app.json.sort_keys = False  # type: ignore[attr-defined]
    admin = (keys.blueprint, users.blueprint, teams.blueprint, cache.blueprint)
    for blueprint in (llm.blueprint, models.blueprint, health.blueprint, spend.blueprint, metrics.blueprint, *admin):
        app.register_blueprint(blueprint)
    app.register_blueprint(ui.blueprint)  # the admin web page at /ui

    @app.errorhandler(ProxyError)
    async def on_proxy_error(exc: ProxyError) -> Response:
        return error_response(exc)

    @app.errorhandler(HTTPException)
    async def on_http_error(exc: HTTPException) -> Response:
        if isinstance(exc, RequestEntityTooLarge):
            return error_response(too_large_error(gw.config.general.max_request_size_mb))
        if exc.code == 404:
            return error_response(NotFoundError("no such route; see /v1/models, /v1/chat/completions"))
        error = InvalidRequestError(exc.description or exc.name, status=exc.code or 400)
        error.type = "invalid_request_error"
        return error_response(error)

    @app.errorhandler(Exception)
    async def on_unexpected(exc: Exception) -> Response:
        log.exception("unexpected error while handling a request")
        return error_response(internal_error())

    # POSTs on the LLM routes are served before Quart sees them (api/fastpath.py). Wrapping `asgi_app`, as
    # Quart documents for middleware, keeps the app a Quart app: hypercorn and `app.test_client()` both go
    # through the fast path, and it stays inside server.py's drain tracker.
    app.asgi_app = FastPath(gw, app.asgi_app)  # type: ignore[method-assign]
    return app


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    response = current_app.response_class(dumps(body), status=status, content_type="application/json")
    if headers:
        response.headers.update(headers)
    return response
