"""Spend is exact per key, user, team and model; budgets hold under parallel load; nothing is lost at SIGTERM."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import trio

from edgeproxy.auth import hash_key
from storage import Storage
from tests.e2e.conftest import MASTER_KEY, create_key, make_config, openai_model, running_proxy
from tests.e2e.processes import server_process
from tests.fakes import FakeUpstream
from tests.storage.pg import temporary_pg_url

IN_PRICE, OUT_PRICE = 0.0005, 0.001  # fake.usage is (10, 5) tokens: each call costs 0.005 + 0.005
CALL_COST = 10 * IN_PRICE + 5 * OUT_PRICE
MESSAGES = [{"role": "user", "content": "Please answer this question in a few words."}]  # ~11 tokens estimated


def priced(fake: FakeUpstream) -> dict[str, object]:
    return openai_model("m", fake, input_cost_per_token=IN_PRICE, output_cost_per_token=OUT_PRICE)


@contextmanager
def database(kind: str, tmp_path: Path) -> Iterator[str]:
    if kind == "sqlite":
        yield f"sqlite:///{tmp_path}/spend.db"
    else:
        with temporary_pg_url() as url:
            yield url


async def wait_for_spend(url: str, token: str, expected: float) -> dict[str, object]:
    """Poll the database (a condition, bounded in time) until the key's spend reaches `expected`."""
    with trio.fail_after(10):
        while True:
            with Storage.open(url) as storage:
                key = storage.keys.get(token)
            assert key is not None
            if key["total_spend"] >= expected - 1e-12:
                return key
            await trio.sleep(0.05)


@pytest.mark.parametrize("kind", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def test_n_calls_cost_exactly_n_prices_everywhere(fake: FakeUpstream, tmp_path: Path, kind: str) -> None:
    with database(kind, tmp_path) as url:
        key = create_key(url, "sk-spend-test-key-0001", user_id="ann", team_id="blue", key_alias="ann-key")
        config = make_config([priced(fake)], general_settings={"database_url": url, "proxy_batch_write_at": 0.05})
        async with running_proxy(config) as proxy:
            client = proxy.openai(key)
            for _ in range(7):
                raw = await client.chat.completions.with_raw_response.create(model="m", messages=MESSAGES)
            assert float(raw.headers["x-litellm-response-cost"]) == pytest.approx(CALL_COST)
            stream = await client.chat.completions.create(model="m", messages=MESSAGES, stream=True)
            async for _ in stream:
                pass
            key_row = await wait_for_spend(url, hash_key(key), 8 * CALL_COST)
        assert key_row["spend"] == pytest.approx(8 * CALL_COST)
        with Storage.open(url) as storage:
            assert storage.users.get("ann")["spend"] == pytest.approx(8 * CALL_COST)  # type: ignore[index]
            assert storage.teams.get("blue")["total_spend"] == pytest.approx(8 * CALL_COST)  # type: ignore[index]
            member = storage.teams.members("blue")[0]
            assert member["spend"] == pytest.approx(8 * CALL_COST)
            logs, total = storage.spend.logs(api_key=hash_key(key))
            assert total == 8
            assert all(row["model_group"] == "m" and row["key_alias"] == "ann-key" for row in logs)
            assert {row["prompt_tokens"] for row in logs} == {10}
            assert key_row["model_spend"] == {"m": pytest.approx(8 * CALL_COST)}


async def test_parallel_requests_never_overspend_a_budget(fake: FakeUpstream, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/budget.db"
    budget = 5 * CALL_COST
    key = create_key(url, "sk-budget-test-key-0002", max_budget=budget)
    fake.chunk_delay_s = 0.02  # streams overlap, so admissions really race
    config = make_config([priced(fake)], general_settings={"database_url": url, "proxy_batch_write_at": 0.05})
    statuses: list[int] = []
    async with running_proxy(config) as proxy, proxy.client(key) as client:

        async def one() -> None:
            body = {"model": "m", "messages": MESSAGES, "max_tokens": 5, "stream": True}
            async with client.stream("POST", "/v1/chat/completions", json=body) as response:
                await response.aread()
                statuses.append(response.status_code)

        async with trio.open_nursery() as nursery:
            for _ in range(50):
                nursery.start_soon(one)
        key_row = await wait_for_spend(url, hash_key(key), statuses.count(200) * CALL_COST)
        after = await client.post("/v1/chat/completions", json={"model": "m", "messages": MESSAGES})
    assert set(statuses) == {200, 422}
    assert 5 <= statuses.count(200) <= 6
    assert key_row["spend"] <= budget + CALL_COST + 1e-12
    assert after.status_code == 422
    assert after.json()["error"]["type"] == "budget_exceeded"


async def test_sigterm_after_a_burst_loses_no_spend(fake: FakeUpstream, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/burst.db"
    key = create_key(url, "sk-burst-test-key-0003")
    config = {
        "model_list": [priced(fake)],
        # A long batch interval: only the shutdown flush can write these records.
        "general_settings": {"master_key": MASTER_KEY, "database_url": url, "proxy_batch_write_at": 60},
    }
    async with server_process(tmp_path, config) as server:
        headers = {"authorization": f"Bearer {key}"}
        async with httpx.AsyncClient(base_url=server.url, headers=headers) as client, trio.open_nursery() as nursery:
            for _ in range(20):
                nursery.start_soon(
                    lambda: client.post("/v1/chat/completions", json={"model": "m", "messages": MESSAGES})
                )
        server.send(signal.SIGTERM)
        assert await server.wait(20) == 0
    with Storage.open(url) as storage:
        _logs, total = storage.spend.logs(api_key=hash_key(key), size=100)
        assert total == 20
        assert storage.keys.get(hash_key(key))["spend"] == pytest.approx(20 * CALL_COST)  # type: ignore[index]


async def test_client_leaving_mid_stream_is_billed_an_estimate(fake: FakeUpstream, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/gone.db"
    key = create_key(url, "sk-leaver-test-key-0004")
    fake.reply_text = " ".join(f"word{i}" for i in range(40))
    fake.chunk_delay_s = 0.05
    config = make_config([priced(fake)], general_settings={"database_url": url, "proxy_batch_write_at": 0.05})
    async with running_proxy(config) as proxy, proxy.client(key) as client:
        body = {"model": "m", "messages": MESSAGES, "stream": True}
        async with client.stream("POST", "/v1/chat/completions", json=body) as response:
            seen = 0
            async for line in response.aiter_lines():
                seen += line.startswith("data: ")
                if seen == 3:
                    break
        with trio.fail_after(10):
            while True:
                with Storage.open(url) as storage:
                    rows, total = storage.spend.logs(api_key=hash_key(key))
                if total:
                    break
                await trio.sleep(0.05)
    row = rows[0]
    assert row["estimated"] is True
    assert row["error"] == "client disconnected"
    assert 0 < row["completion_tokens"] < 40 * 2  # what was generated, not the whole answer
    assert row["cost"] > 0
