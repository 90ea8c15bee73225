"""The pages without a browser: everything reads as plain HTML (no script needed), numbers follow the traffic."""

from __future__ import annotations

import csv
import io
import re
from datetime import UTC, datetime

import httpx
import trio

from edgeproxy.auth import hash_key
from edgeproxy.ui.web import SECURITY_HEADERS
from tests.e2e.conftest import MASTER_KEY, running_proxy
from tests.ui.conftest import Browser, api_key, api_user, signed_in, ui_config

PAGES = ("/ui/", "/ui/keys", "/ui/users", "/ui/teams", "/ui/spend", "/ui/deployments")


async def chat(url: str, key: str, times: int = 1) -> None:
    async with httpx.AsyncClient(base_url=url, headers={"authorization": f"Bearer {key}"}, timeout=30) as client:
        for _ in range(times):
            body = {"model": "demo", "messages": [{"role": "user", "content": "hi"}]}
            response = await client.post("/v1/chat/completions", json=body)
            assert response.status_code == 200, response.text


def chart_total(html: str, chart_id: str) -> float:
    found = re.search(rf'id="{chart_id}".*?data-total="([^"]+)"', html, re.S)
    assert found is not None, f"no chart {chart_id}"
    return float(found.group(1))


async def wait_for_spend(page: Browser, at_least: float) -> str:
    """The spend page once its model chart shows `at_least` (spend is written in 50 ms batches)."""
    with trio.fail_after(10):
        while True:
            html = (await page.http.get("/ui/spend")).text
            if chart_total(html, "chart-model") >= at_least:
                return html
            await trio.sleep(0.05)


async def test_every_page_is_plain_html_under_a_strict_policy() -> None:
    async with running_proxy(ui_config()) as proxy:
        page = await signed_in(proxy)
        for path in PAGES:
            response = await page.http.get(path)
            assert response.status_code == 200, path
            assert response.headers["content-type"].startswith("text/html")
            for name, value in SECURITY_HEADERS.items():
                assert response.headers[name] == value, (path, name)
            assert "<script>" not in response.text and " style=" not in response.text  # nothing inline
            assert "http://" not in response.text.replace(proxy.url, "").replace("http://mock.invalid", "")
        for asset in ("ui.css", "ui.js"):
            assert (await page.http.get(f"/ui/static/{asset}")).status_code == 200
        missing = await page.http.get("/ui/teams/no-such-team")
        assert missing.status_code == 404 and "team no-such-team not found" in missing.text
        assert (await page.http.get("/ui")).headers["location"] == "/ui/"
        await page.http.aclose()


async def test_overview_spend_and_csv_follow_the_traffic() -> None:
    async with running_proxy(ui_config()) as proxy, proxy.client() as admin:
        alice = await api_user(admin, "alice")
        ci = await api_key(admin, key_alias="ci", max_budget=10)
        page = await signed_in(proxy)
        assert chart_total((await page.http.get("/ui/spend")).text, "chart-model") == 0
        await chat(proxy.url, ci["key"], times=3)
        await chat(proxy.url, alice)
        await chat(proxy.url, MASTER_KEY)
        with trio.fail_after(10):  # spend is written in batches: wait until the API shows all five calls
            while (logs := (await admin.get("/spend/logs")).json())["total_count"] < 5:
                await trio.sleep(0.05)
        total = sum(row["spend"] for row in logs["logs"])
        html = await wait_for_spend(page, total * (1 - 1e-9))
        assert chart_total(html, "chart-api_key") == chart_total(html, "chart-model")
        assert ">ci <b>" in html and ">master <b>" in html  # keys are named by alias in the legend

        overview = (await page.http.get("/ui/")).text
        assert re.search(r'id="requests-today">5<', overview)
        assert re.search(r'id="cache-rate">0\.0%<', overview)

        today = datetime.now(UTC).date().isoformat()
        response = await page.http.get("/ui/spend.csv", params={"start": today, "end": today, "group_by": "api_key"})
        assert response.headers["content-type"].startswith("text/csv")
        assert "attachment" in response.headers["content-disposition"]
        rows = list(csv.DictReader(io.StringIO(response.text)))
        assert {row["label"] for row in rows} == {"ci", "alice", "master"}
        by_label = {row["label"]: row for row in rows}
        assert by_label["ci"]["requests"] == "3" and by_label["ci"]["group"] == ci["token"]
        assert abs(sum(float(row["spend"]) for row in rows) - total) < 1e-9

        # alice sees her own share only.
        mine = await signed_in(proxy, alice)
        own = (await mine.http.get("/ui/spend.csv", params={"group_by": "api_key"})).text
        assert hash_key(alice) in own and ci["token"] not in own and "master" not in own
        assert re.search(r'id="requests-today">1<', (await mine.http.get("/ui/")).text)
        await page.http.aclose()
        await mine.http.aclose()


async def test_bad_input_is_explained_on_the_page() -> None:
    async with running_proxy(ui_config()) as proxy:
        page = await signed_in(proxy)
        backwards = await page.http.get("/ui/spend", params={"start": "2025-02-01", "end": "2025-01-01"})
        assert backwards.status_code == 400 and "after" in backwards.text
        too_long = await page.http.get("/ui/spend", params={"start": "2020-01-01", "end": "2025-01-01"})
        assert too_long.status_code == 400 and "366 days" in too_long.text
        unknown = await page.post("/ui/keys/create", {"models": "no-such-model"})
        assert unknown.status_code == 400 and "unknown model" in unknown.text
        assert "<h1>That did not work</h1>" in unknown.text
        await page.http.aclose()
