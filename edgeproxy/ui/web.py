"""The /ui blueprint's plumbing: who is signed in, CSRF and cross-site checks, rendering, errors, sign-in/out.

Every request re-checks the session's key with the proxy's own rules (`keyauth.principal_for`: unknown, blocked,
expired, blocked user or team), reading the key fresh from the database: a key blocked a second ago, here or on
another instance, has lost its session by the next click. The admin page is not the hot path; one indexed read
per page is cheap, and the key cache's TTL would let a blocked key browse on.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import wraps
from typing import Any

from quart import Blueprint, Response, current_app, g, redirect, render_template, request, url_for
from werkzeug.exceptions import HTTPException

from edgeproxy.auth import MASTER, Principal
from edgeproxy.errors import AuthenticationError, PermissionDeniedError, ProxyError, ServiceUnavailableError
from edgeproxy.gateway import Gateway
from edgeproxy.keyauth import load_bundle, principal_for
from edgeproxy.ui import fmt
from edgeproxy.ui.actions import Abilities
from edgeproxy.ui.session import (
    LOGIN_COOKIE,
    SESSION_COOKIE,
    SESSION_TTL_S,
    Session,
    SessionCodec,
    cross_site_reason,
    same_token,
)

blueprint = Blueprint(
    "ui", __name__, url_prefix="/ui", template_folder="templates", static_folder="static", static_url_path="/static"
)
Handler = Callable[..., Awaitable[Any]]
log = logging.getLogger("edgeproxy.ui")

# No inline script or style anywhere: the page works under a strict policy, so an injected tag cannot run.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",  # pages show spend and, once, a new key: nothing for shared caches
}


class SessionEnded(AuthenticationError):
    """No valid session: send the browser to the sign-in page."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Visitor:
    principal: Principal
    session: Session
    can: Abilities

    @property
    def csrf(self) -> str:
        return self.session.csrf

    @property
    def name(self) -> str:
        p = self.principal
        return "master key" if p.is_master else f"{p.user_id} ({p.user_role})"


def gateway() -> Gateway:
    gw: Gateway = current_app.extensions["edgeproxy"]
    return gw


def codec() -> SessionCodec:
    master = gateway().config.general.master_key
    if master is None:  # `run` refuses to start without one; an embedded app might not
        raise ServiceUnavailableError("the admin page needs general_settings.master_key to sign its sessions")
    return SessionCodec(master)


async def visitor() -> Visitor:
    """The signed-in person for this request, checked against the database; SessionEnded otherwise."""
    found: Visitor | None = g.get("ui_visitor")
    if found is not None:
        return found
    session = codec().load_session(request.cookies.get(SESSION_COOKIE))
    if session is None:
        raise SessionEnded("signin" if SESSION_COOKIE not in request.cookies else "expired")
    principal = MASTER if session.is_master else await _key_principal(session.subject)
    found = Visitor(principal, session, Abilities.of(principal))
    g.ui_visitor = found
    return found


async def _key_principal(token: str) -> Principal:
    gw = gateway()
    bundle = await gw.db.run(load_bundle, gw.storage, token)
    try:
        principal = principal_for(bundle, datetime.now(UTC))
    except AuthenticationError:
        raise SessionEnded("revoked") from None
    if principal.user_id is None:
        raise SessionEnded("revoked")
    return principal


def signed_in(handler: Handler) -> Handler:
    """Route decorator: pass the Visitor; on POST, demand the session's CSRF token first."""

    @wraps(handler)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        found = await visitor()
        if request.method == "POST":
            form = await request.form
            if not same_token(form.get("csrf_token"), found.csrf):
                raise PermissionDeniedError("the form's security token is missing or stale; reload the page")
        return await handler(found, *args, **kwargs)

    return wrapper


@blueprint.before_request
async def refuse_cross_site() -> None:
    """Every POST must come from our own page (CSRF defence in depth: the token is checked too)."""
    if request.method != "POST":
        return
    reason = cross_site_reason(request.headers.get("origin"), request.headers.get("sec-fetch-site"), request.host)
    if reason is not None:
        raise PermissionDeniedError(f"cross-site form posts are refused ({reason})")


@blueprint.after_request
async def security_headers(response: Response) -> Response:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response


async def render(template: str, status: int = 200, **context: Any) -> Response:
    found: Visitor | None = g.get("ui_visitor")
    body = await render_template(f"ui/{template}", v=found, fmt=fmt, **context)
    return Response(body, status=status, content_type="text/html; charset=utf-8")


def see_other(endpoint: str, **values: Any) -> Response:
    """303 after a successful POST, so a reload does not repeat it."""
    response: Response = redirect(url_for(endpoint, **values), 303)  # type: ignore[assignment]
    return response


def _is_https() -> bool:
    return request.scheme == "https" or request.headers.get("x-forwarded-proto", "").lower() == "https"


def set_cookie(response: Response, name: str, value: str, max_age: int) -> None:
    response.set_cookie(name, value, max_age=max_age, path="/ui", httponly=True, samesite="Strict", secure=_is_https())


def start_session(session: Session) -> Response:
    response = see_other("ui.overview")
    set_cookie(response, SESSION_COOKIE, codec().dump_session(session), SESSION_TTL_S)
    response.delete_cookie(LOGIN_COOKIE, path="/ui")
    return response


@blueprint.errorhandler(ProxyError)
async def on_error(exc: ProxyError) -> Response:
    if isinstance(exc, SessionEnded):
        response = see_other("ui.login", reason=exc.reason)
        response.delete_cookie(SESSION_COOKIE, path="/ui")
        return response
    return await render("error.html", status=exc.status, message=exc.message, status_code=exc.status)


@blueprint.errorhandler(HTTPException)
async def on_http_error(exc: HTTPException) -> Response:
    code = exc.code or 400
    return await render("error.html", status=code, message=exc.description or exc.name, status_code=code)


@blueprint.errorhandler(Exception)
async def on_unexpected(exc: Exception) -> Response:
    log.exception("unexpected error on the admin page")
    message = "internal error; the proxy log has the details"
    return await render("error.html", status=500, message=message, status_code=500)
