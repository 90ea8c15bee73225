"""The admin page in headless Chromium against the real server: sign in, hand out a key and use it, block it,
watch spend arrive in the chart, and check what a non-admin sees. Screenshots of every page are saved
(EDGEPROXY_UI_SCREENSHOTS=dir keeps them; docs/ui-overview.png is one of them)."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import openai
import pytest
import trio

from edgeproxy.auth import hash_key
from storage import SpendRecord, Storage
from tests.e2e.conftest import MASTER_KEY, make_config, running_proxy
from tests.ui.chrome import open_chrome, require_browser, screenshots_dir
from tests.ui.conftest import DEMO

T = TypeVar("T")
SUMMARIZER = {
    "model_name": "summarizer",
    "litellm_params": {"model": "mock/summarizer", "input_cost_per_token": 3e-4, "output_cost_per_token": 6e-4},
}


async def in_thread(fn: Callable[..., T], *args: Any) -> T:
    """Selenium blocks: drive it from a worker thread while trio keeps serving the page it loads."""
    return await trio.to_thread.run_sync(partial(fn, *args))


class Page:
    """Sync steps on the admin page (each runs in a thread, see `in_thread`)."""

    def __init__(self, driver: Any, base: str, shots: Path) -> None:
        self.driver, self.base, self.shots = driver, base, shots

    def go(self, path: str) -> None:
        self.driver.get(self.base + path)

    def find(self, css: str) -> Any:
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support import expected_conditions as ec
        from selenium.webdriver.support.ui import WebDriverWait

        return WebDriverWait(self.driver, 10).until(ec.presence_of_element_located((By.CSS_SELECTOR, css)))

    def until(self, condition: Callable[[Any], Any]) -> Any:
        from selenium.webdriver.support.ui import WebDriverWait

        return WebDriverWait(self.driver, 10).until(condition)

    def all(self, css: str) -> list[Any]:
        from selenium.webdriver.common.by import By

        found: list[Any] = self.driver.find_elements(By.CSS_SELECTOR, css)
        return found

    def shot(self, name: str) -> None:
        self.driver.save_screenshot(str(self.shots / f"{name}.png"))

    def text(self) -> str:
        return str(self.find("main").text)

    def sign_in(self, key: str) -> None:
        self.go("/ui/")
        assert "/ui/login" in self.driver.current_url  # no session: sent to sign in
        self.find("#key").send_keys(key)
        self.find(".signin button[type=submit]").click()
        self.find(".stats")

    def sign_out(self) -> None:
        self.find(".who button").click()
        self.find("#key")

    def open_form(self, details_id: str) -> None:
        details = self.find(f"#{details_id}")
        if details.get_attribute("open") is None:
            details.find_element("css selector", "summary").click()

    def create_key(self, alias: str, budget: str, models: tuple[str, ...]) -> str:
        self.go("/ui/keys")
        self.open_form("create-key")
        self.find("#key_alias").send_keys(alias)
        self.find("#max_budget").send_keys(budget)
        for model in models:
            self.find(f'#create-key input[name=models][value="{model}"]').click()
        self.find("#create-key-submit").click()
        secret = self.find("#new-key")
        copy = self.find("button[data-copy]")
        assert copy.is_displayed(), "the copy button is shown once the script has run"
        self.shot("04-key-created")
        copy.click()
        self.until(lambda _: copy.text != "Copy")  # "Copied", or the fallback's "Press Ctrl+C"
        return str(secret.get_attribute("value"))

    def create_user(self, user_id: str, role: str) -> str:
        self.go("/ui/users")
        self.open_form("create-user")
        self.find("#new_user_id").send_keys(user_id)
        self.find(f'#user_role option[value="{role}"]').click()
        self.find("#auto_create_key").click()
        self.find("#create-user-submit").click()
        return str(self.find("#new-key").get_attribute("value"))

    def key_action(self, alias: str, label: str) -> None:
        self.go("/ui/keys")
        row = self.find(f'tr[data-alias="{alias}"]')
        row.find_element("xpath", f".//button[normalize-space()='{label}']").click()
        self.find(".notice")

    def chart_total(self, group_by: str) -> float:
        self.go("/ui/spend")
        return float(self.find(f"#chart-{group_by} svg").get_attribute("data-total"))

    def fits_width(self) -> bool:
        """Nothing sticks out sideways (the phone check)."""
        return bool(self.driver.execute_script("return document.documentElement.scrollWidth <= window.innerWidth + 1"))


@asynccontextmanager
async def chrome_page(base: str, shots: Path) -> AsyncIterator[Page]:
    opened = open_chrome()
    driver = await in_thread(opened.__enter__)
    try:
        yield Page(driver, base, shots)
    finally:
        await in_thread(opened.__exit__, None, None, None)


SEED_KEYS = (("ci-runner", "demo", "research"), ("notebook", "summarizer", "support"), ("chatbot", "demo", None))


def seed_history(database_url: str, days: int = 14) -> None:
    """Two weeks of earlier traffic from a few keys and teams, so the charts have history to stack."""
    now = datetime.now(UTC)
    records = []
    for day in range(1, days + 1):
        for i, (_, model, team) in enumerate(SEED_KEYS):
            cost = 0.002 * (1 + math.sin(day + i) ** 2) * (i + 1)
            records.append(
                SpendRecord(
                    request_id=f"seed-{day}-{i}",
                    model_group=model,
                    api_key=hash_key(f"sk-seed-{i}"),
                    team_id=team,
                    cost=cost,
                    prompt_tokens=40 * (i + 1),
                    completion_tokens=90,
                    start_time=now - timedelta(days=day),
                    status="failure" if (day + i) % 9 == 0 else "success",
                )
            )
    with Storage.open(database_url) as storage:
        storage.migrate()
        storage.teams.create({"team_id": "research", "max_budget": 1.0})
        storage.teams.create({"team_id": "support"})
        for i, (alias, _, team) in enumerate(SEED_KEYS):
            key = f"sk-seed-{i}"
            storage.keys.create(
                {
                    "token": hash_key(key),
                    "key_name": f"sk-...{key[-4:]}",
                    "key_alias": alias,
                    "team_id": team,
                    "max_budget": 0.5 if i == 0 else None,
                }
            )
        storage.spend.write_batch(records)


async def chat(key: str, base: str, model: str = "demo") -> str:
    client = openai.AsyncOpenAI(base_url=base + "/v1", api_key=key, max_retries=0, timeout=30)
    async with client:
        reply = await client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hello"}])
    return reply.choices[0].message.content or ""


async def wait_for_more(page: Page, group_by: str, before: float) -> float:
    """Reload the spend page until its chart total grows (spend is written in 50 ms batches): bounded."""
    with trio.fail_after(15):
        while (total := await in_thread(page.chart_total, group_by)) <= before:
            await trio.sleep(0.1)
    return total


async def test_admin_and_user_journeys(tmp_path: Path) -> None:
    require_browser()
    config = make_config([DEMO, SUMMARIZER], general_settings={"proxy_batch_write_at": 0.05})
    assert config.general.database_url is not None
    seed_history(config.general.database_url)
    shots = screenshots_dir(tmp_path)
    async with running_proxy(config) as proxy, chrome_page(proxy.url, shots) as page:
        await in_thread(page.go, "/ui/login")
        await in_thread(page.shot, "01-sign-in")
        await in_thread(page.sign_in, MASTER_KEY)

        # A key made on the page works with the openai client, within its models.
        key = await in_thread(page.create_key, "browser-key", "5", ("demo", "summarizer"))
        assert key.startswith("sk-")
        assert (await chat(key, proxy.url)).startswith("Hello from edgeproxy")

        # Spend from traffic reaches the chart.
        before = await in_thread(page.chart_total, "model")
        for model in ("demo", "summarizer", "summarizer"):
            await chat(key, proxy.url, model)
        await chat(MASTER_KEY, proxy.url)
        after = await wait_for_more(page, "model", before)
        assert after > before
        assert await in_thread(page.chart_total, "api_key") >= after - 1e-9
        await in_thread(page.shot, "05-spend")

        # Blocking on the page refuses the key at once.
        await in_thread(page.key_action, "browser-key", "Block")
        with pytest.raises(openai.AuthenticationError, match="blocked"):
            await chat(key, proxy.url)
        await in_thread(page.shot, "03-keys")

        alice = await in_thread(page.create_user, "alice", "internal_user")
        bob = await in_thread(page.create_user, "bob", "internal_user")
        await in_thread(page.go, "/ui/users")
        await in_thread(page.shot, "06-users")
        await take_team_shots(page)
        await in_thread(page.go, "/ui/deployments")
        assert "demo" in await in_thread(page.text)
        await in_thread(page.shot, "09-deployments")
        await in_thread(page.driver.set_window_size, 1280, 960)  # the whole overview, no more
        await in_thread(page.go, "/ui/")
        await in_thread(page.shot, "02-overview")

        # alice sees her own key only: not the admin's, not bob's.
        await in_thread(page.sign_out)
        await in_thread(page.sign_in, alice)
        await in_thread(page.go, "/ui/keys")
        tokens = {row.get_attribute("data-token") for row in await in_thread(page.all, "tr[data-token]")}
        assert tokens == {hash_key(alice)}
        assert "browser-key" not in await in_thread(page.text)
        assert not await in_thread(page.all, 'a[href="/ui/deployments"]')
        await in_thread(page.shot, "10-keys-internal-user")
        assert hash_key(bob) not in await in_thread(lambda: page.driver.page_source)

        # Readable on a phone: nothing wider than the screen.
        await in_thread(page.driver.set_window_size, 390, 844)
        for path, name in (
            ("/ui/", "11-phone-overview"),
            ("/ui/keys", "12-phone-keys"),
            ("/ui/spend", "13-phone-spend"),
        ):
            await in_thread(page.go, path)
            assert await in_thread(page.fits_width), f"{path} is wider than a phone screen"
            await in_thread(page.shot, name)


async def take_team_shots(page: Page) -> None:
    await in_thread(page.go, "/ui/teams")
    await in_thread(page.open_form, "create-team")
    await in_thread(lambda: page.find("#new_team_id").send_keys("platform"))
    await in_thread(lambda: page.find("#create-team-submit").click())
    await in_thread(lambda: page.find("#member_user_id").send_keys("alice"))
    await in_thread(lambda: page.find("#add-member button").click())
    await in_thread(page.find, 'tr[data-user="alice"]')
    await in_thread(page.shot, "08-team")
    await in_thread(page.go, "/ui/teams")
    await in_thread(page.shot, "07-teams")
