"""The Quart-Trio application: blueprints, limits and one error renderer for everything."""

from __future__ import annotations

import logging
from typing import Any

from quart import Response, current_app
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from edgeproxy import ui
from edgeproxy.api import cache, health, keys, llm, metrics, models, spend, teams, users
from edgeproxy.errors import InvalidRequestError, NotFoundError, ProxyError, RequestTooLargeError
from edgeproxy.gateway import Gateway

log = logging.getLogger("edgeproxy.app")


def gateway() -> Gateway:
    gw: Gateway = current_app.extensions["edgeproxy"]
    return gw


def error_response(exc: ProxyError) -> Response:
    response = current_app.response_class(llm.dumps(exc.body()), status=exc.status, content_type="application/json")
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
        BODY_TIMEOUT=600,
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
            limit = gw.config.general.max_request_size_mb
            return error_response(RequestTooLargeError(f"the request body is larger than {limit:g} MB"))
        if exc.code == 404:
            return error_response(NotFoundError("no such route; see /v1/models, /v1/chat/completions"))
        error = InvalidRequestError(exc.description or exc.name, status=exc.code or 400)
        error.type = "invalid_request_error"
        return error_response(error)

    @app.errorhandler(Exception)
    async def on_unexpected(exc: Exception) -> Response:
        log.exception("unexpected error while handling a request")
        return error_response(ProxyError("internal error; the proxy log has the details"))

    return app


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    response = current_app.response_class(llm.dumps(body), status=status, content_type="application/json")
    if headers:
        response.headers.update(headers)
    return response
