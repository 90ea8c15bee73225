"""Sessions and CSRF on the admin page, with httpx against the real server (no browser needed).

A session cookie must be signed by this proxy's master key, unexpired, and name a key that still works; every
form post must carry the session's CSRF token and must not come from another site.
"""

from __future__ import annotations

import base64
import json
import time
import zlib

import httpx

from edgeproxy.auth import hash_key
from edgeproxy.ui.session import SESSION_COOKIE, SESSION_TTL_S, Session, SessionCodec
from tests.e2e.conftest import MASTER_KEY, Proxy, running_proxy
from tests.ui.conftest import api_user, csrf_of, page_client, sign_in, signed_in, ui_config


def payload(cookie: str) -> dict[str, str]:
    """What the signed cookie says (signed, not encrypted: anyone holding it can read it, nobody can change it)."""
    # itsdangerous zlib-compresses a payload when that is shorter and marks it with a leading ".".
    compressed = cookie.startswith(".")
    data = cookie.lstrip(".").split(".")[0]
    raw = base64.urlsafe_b64decode(data + "=" * (-len(data) % 4))
    decoded: dict[str, str] = json.loads(zlib.decompress(raw) if compressed else raw)
    return decoded


async def page_with(proxy: Proxy, cookie: str, path: str = "/ui/keys") -> httpx.Response:
    async with page_client(proxy) as http:
        return await http.get(path, headers={"cookie": f"{SESSION_COOKIE}={cookie}"})


def refused(response: httpx.Response, reason: str = "expired") -> bool:
    """Sent back to sign in, with none of the page shown."""
    return (
        response.status_code == 303
        and response.headers["location"] == f"/ui/login?reason={reason}"
        and "<table" not in response.text
    )


async def test_signing_in_trades_the_key_for_a_strict_httponly_cookie() -> None:
    async with running_proxy(ui_config()) as proxy, proxy.client() as admin, page_client(proxy) as http:
        first = await http.get("/ui/keys")
        assert first.status_code == 303 and first.headers["location"].startswith("/ui/login")
        alice = await api_user(admin, "alice")

        response = await sign_in(http, alice)
        assert response.status_code == 303 and response.headers["location"] == "/ui/"
        header = next(h for h in response.headers.get_list("set-cookie") if h.startswith(SESSION_COOKIE))
        attributes = {part.strip().split("=")[0].lower() for part in header.split(";")}
        assert {"httponly", "samesite", "max-age", "path"} <= attributes
        assert "SameSite=Strict" in header and "Path=/ui" in header and f"Max-Age={SESSION_TTL_S}" in header
        cookie = http.cookies[SESSION_COOKIE]
        assert alice not in cookie and alice not in response.text
        assert payload(cookie)["sub"] == hash_key(alice)  # the token, never the key
        page = await http.get("/ui/keys")
        assert page.status_code == 200 and hash_key(alice) in page.text

        signed_out = await http.post("/ui/logout", data={"csrf_token": csrf_of(page.text)})
        assert signed_out.status_code == 303
        assert refused(await http.get("/ui/keys"), "signin")


async def test_tampered_forged_and_unsigned_cookies_are_refused() -> None:
    async with running_proxy(ui_config()) as proxy, proxy.client() as admin:
        alice = await api_user(admin, "alice")
        browser = await signed_in(proxy, alice)
        genuine = browser.http.cookies[SESSION_COOKIE]
        assert (await page_with(proxy, genuine)).status_code == 200

        # alice rewrites her cookie to say "master": the signature no longer matches.
        rest = genuine.split(".", 1)[1]
        claims = {**payload(genuine), "sub": "master"}
        promoted = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")
        assert refused(await page_with(proxy, f"{promoted}.{rest}"))
        flipped = genuine[:-3] + ("A" if genuine[-3] != "A" else "B") + genuine[-2:]
        assert refused(await page_with(proxy, flipped))
        # Signed with another master key (another proxy), or not signed at all.
        foreign = SessionCodec("sk-some-other-master-key").dump_session(Session("master", "token"))
        assert refused(await page_with(proxy, foreign))
        assert refused(await page_with(proxy, promoted))
        assert refused(await page_with(proxy, "master"))
        await browser.http.aclose()


async def test_an_expired_session_is_refused() -> None:
    async with running_proxy(ui_config()) as proxy:
        now = time.time()
        expired = SessionCodec(MASTER_KEY, clock=lambda: now - SESSION_TTL_S - 60).dump_session(Session("master", "t"))
        assert refused(await page_with(proxy, expired))
        nearly = SessionCodec(MASTER_KEY, clock=lambda: now - SESSION_TTL_S + 60).dump_session(Session("master", "t"))
        assert (await page_with(proxy, nearly)).status_code == 200  # only the age made the difference


async def test_a_blocked_key_loses_its_session_at_once() -> None:
    async with running_proxy(ui_config()) as proxy, proxy.client() as admin:
        alice = await api_user(admin, "alice")
        browser = await signed_in(proxy, alice)
        blocked = await admin.post("/key/block", json={"key": alice})
        assert blocked.status_code == 200, blocked.text
        assert refused(await browser.http.get("/ui/keys"), "revoked")
        again = await sign_in(page_client(proxy), alice)
        assert again.status_code == 401 and "blocked" in again.text
        await browser.http.aclose()


async def test_form_posts_need_the_sessions_csrf_token() -> None:
    async with running_proxy(ui_config()) as proxy, proxy.client() as admin:
        browser = await signed_in(proxy)
        other = await signed_in(proxy)  # another session of the same key: its token is not this one's
        assert other.csrf != browser.csrf
        form = {"key_alias": "csrf-test"}
        missing = await browser.http.post("/ui/keys/create", data=form)
        assert missing.status_code == 403 and "security token" in missing.text
        wrong = await browser.http.post("/ui/keys/create", data={**form, "csrf_token": "x" * 43})
        assert wrong.status_code == 403
        borrowed = await browser.http.post("/ui/keys/create", data={**form, "csrf_token": other.csrf})
        assert borrowed.status_code == 403
        listed = await admin.get("/key/list")
        assert listed.json()["total_count"] == 0  # none of them did anything
        created = await browser.post("/ui/keys/create", form)
        assert created.status_code == 200 and 'id="new-key"' in created.text
        await browser.http.aclose()
        await other.http.aclose()


async def test_cross_site_posts_are_refused_even_with_a_token() -> None:
    async with running_proxy(ui_config()) as proxy, proxy.client() as admin:
        browser = await signed_in(proxy)
        host = httpx.URL(proxy.url).netloc.decode()
        for headers in (
            {"origin": "http://evil.example"},
            {"origin": f"http://{host}.evil.example"},
            {"origin": "null"},
            {"sec-fetch-site": "cross-site"},
            {"sec-fetch-site": "same-site"},  # a sibling subdomain is another site to us
            {"origin": proxy.url, "sec-fetch-site": "cross-site"},
        ):
            response = await browser.post("/ui/keys/create", {"key_alias": "evil"}, headers=headers)
            assert response.status_code == 403, headers
            assert "cross-site" in response.text
        assert (await admin.get("/key/list")).json()["total_count"] == 0
        own = {"origin": proxy.url, "sec-fetch-site": "same-origin"}
        assert (await browser.post("/ui/keys/create", {"key_alias": "ours"}, headers=own)).status_code == 200
        # Sign-in too: another site cannot sign a browser in to an account of its choosing.
        async with page_client(proxy) as http:
            form = await http.get("/ui/login")
            data = {"csrf_token": csrf_of(form.text), "key": MASTER_KEY}
            evil = await http.post("/ui/login", data=data, headers={"origin": "http://evil.example"})
            assert evil.status_code == 403 and SESSION_COOKIE not in evil.headers.get("set-cookie", "")
        await browser.http.aclose()


async def test_the_sign_in_form_needs_its_nonce_and_a_usable_key() -> None:
    async with running_proxy(ui_config()) as proxy, proxy.client() as admin, page_client(proxy) as http:
        no_nonce = await http.post("/ui/login", data={"key": MASTER_KEY})
        assert no_nonce.status_code == 403 and SESSION_COOKIE not in http.cookies
        wrong = await sign_in(http, "sk-not-a-key-at-all")
        assert wrong.status_code == 401 and SESSION_COOKIE not in http.cookies
        lone = (await admin.post("/key/generate", json={"key_alias": "script"})).json()["key"]
        no_user = await sign_in(http, lone)
        assert no_user.status_code == 403 and "belongs to no user" in no_user.text
        assert SESSION_COOKIE not in http.cookies
