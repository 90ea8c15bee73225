"""The admin page's tests: the real server on a real port (tests/e2e's `running_proxy`), driven by httpx here
and by headless Chromium in test_browser.py."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import httpx

from edgeproxy.config import Config
from tests.e2e.conftest import MASTER_KEY, Proxy, make_config

# Priced so that traffic shows up as spend (the demo model is free otherwise).
DEMO = {
    "model_name": "demo",
    "litellm_params": {"model": "mock/demo", "input_cost_per_token": 1e-4, "output_cost_per_token": 2e-4},
}
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def ui_config(**general: Any) -> Config:
    """One demo model; spend is written every 50 ms so tests see it quickly."""
    return make_config([DEMO], general_settings={"proxy_batch_write_at": 0.05, **general})


def csrf_of(html: str) -> str:
    found = _CSRF.search(html)
    assert found is not None, "no CSRF token on the page"
    return found.group(1)


@dataclass
class Browser:
    """An httpx client with a signed-in session: its cookie jar holds the session, `csrf` its form token."""

    http: httpx.AsyncClient
    csrf: str

    async def post(self, path: str, data: dict[str, Any], **kwargs: Any) -> httpx.Response:
        return await self.http.post(path, data={"csrf_token": self.csrf, **data}, **kwargs)


def page_client(proxy: Proxy) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=proxy.url, timeout=30, follow_redirects=False)


async def sign_in(http: httpx.AsyncClient, key: str = MASTER_KEY) -> httpx.Response:
    form = await http.get("/ui/login")
    assert form.status_code == 200, form.text
    return await http.post("/ui/login", data={"csrf_token": csrf_of(form.text), "key": key})


async def signed_in(proxy: Proxy, key: str = MASTER_KEY) -> Browser:
    http = page_client(proxy)
    response = await sign_in(http, key)
    assert response.status_code == 303, response.text
    page = await http.get("/ui/keys")
    assert page.status_code == 200, page.text
    return Browser(http, csrf_of(page.text))


async def api_key(admin: httpx.AsyncClient, **fields: Any) -> dict[str, Any]:
    """A key made through the HTTP admin API (the page must see the same keys)."""
    response = await admin.post("/key/generate", json=fields)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def api_user(admin: httpx.AsyncClient, user_id: str, role: str = "internal_user") -> str:
    """A user and a key of theirs, through the admin API; returns the key."""
    response = await admin.post("/user/new", json={"user_id": user_id, "user_role": role, "key_alias": user_id})
    assert response.status_code == 200, response.text
    key: str = response.json()["key"]
    return key
