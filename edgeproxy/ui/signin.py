"""Sign-in and sign-out: a key is exchanged for a session cookie and never kept anywhere after that.

The sign-in form has its own CSRF nonce (a signed cookie plus a hidden field), so another site cannot sign a
browser in to an account of its choosing. The key is checked exactly as an API call checks it
(`Gateway.authenticate`); keys that belong to no user are refused: the page is for people, and such a key may
only read itself on the API.
"""

from __future__ import annotations

from quart import Response, request

from edgeproxy.errors import AuthenticationError
from edgeproxy.ui.session import (
    LOGIN_COOKIE,
    LOGIN_TTL_S,
    MASTER_SUBJECT,
    SESSION_COOKIE,
    Session,
    new_token,
    same_token,
)
from edgeproxy.ui.web import Visitor, blueprint, codec, gateway, render, see_other, set_cookie, signed_in, start_session

# Why the sign-in page is shown: fixed texts chosen by code, so a link cannot put words on our page.
REASONS = {
    "expired": "Your session has ended. Sign in again.",
    "revoked": "That key can no longer be used (blocked, expired or deleted). Sign in with another.",
    "signedout": "You have signed out.",
}


async def login_form(error: str | None = None, status: int = 200) -> Response:
    nonce = new_token()
    reason = REASONS.get(request.args.get("reason", ""))
    response = await render("login.html", status=status, nonce=nonce, error=error, reason=reason)
    set_cookie(response, LOGIN_COOKIE, codec().dump_login(nonce), LOGIN_TTL_S)
    return response


@blueprint.get("/login")
async def login() -> Response:
    return await login_form()


@blueprint.post("/login")
async def login_submit() -> Response:
    form = await request.form
    nonce = codec().load_login(request.cookies.get(LOGIN_COOKIE))
    if not same_token(form.get("csrf_token"), nonce):
        return await login_form("The sign-in form expired; please try again.", status=403)
    key = (form.get("key") or "").strip()
    if not key:
        return await login_form("Enter the master key or your API key.", status=400)
    try:
        principal = await gateway().authenticate({"authorization": f"Bearer {key}"})
    except AuthenticationError as error:
        return await login_form(f"Sign-in refused: {error.message}.", status=401)
    if not principal.is_master and principal.user_id is None:
        message = "This key belongs to no user. Sign in with the master key or a key of a user."
        return await login_form(message, status=403)
    subject = MASTER_SUBJECT if principal.is_master else principal.token
    assert subject is not None  # a virtual key always has its token
    return start_session(Session(subject, new_token()))


@blueprint.post("/logout")
@signed_in
async def logout(v: Visitor) -> Response:
    response = see_other("ui.login", reason="signedout")
    response.delete_cookie(SESSION_COOKIE, path="/ui")
    return response
