"""GET /metrics: every family moves with traffic, the auth setting holds, and --workers N adds up."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

import httpx
import trio
from prometheus_client.parser import text_string_to_metric_families

from edgeproxy.auth import hash_key
from tests.e2e.conftest import MASTER_KEY, Proxy, create_key, make_config, openai_model, running_proxy
from tests.e2e.processes import server_process
from tests.fakes import FakeUpstream, open_fake_upstream

HELLO = [{"role": "user", "content": "hi"}]
KEY = "sk-metrics-key-000000000001"
LIMITED = "sk-metrics-limited-00000002"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def total(samples: Samples, name: str) -> float:
    return sum(v for (n, _), v in samples.items() if n == name)


async def scrape(proxy: Proxy, key: str | None = None) -> Samples:
    async with proxy.client(key) as client:
        response = await client.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return parse(response.text)


def _config(fake: FakeUpstream, broken: FakeUpstream, **general: Any) -> Any:
    priced = openai_model("m", fake, input_cost_per_token=0.001, output_cost_per_token=0.002)
    pair = [
        {**openai_model("pair", broken, order=1), "model_info": {"id": "pair-broken"}},  # tried first
        {**openai_model("pair", fake, order=2), "model_info": {"id": "pair-good"}},
    ]
    return make_config(
        [{**priced, "model_info": {"id": "m-0"}}, *pair],
        general_settings={"proxy_batch_write_at": 3600, "metrics_per_key": True, **general},
        router_settings={"allowed_fails": 0, "cooldown_time": 600, "num_retries": 2},
        litellm_settings={"cache": True, "cache_params": {"type": "local"}},
    )


async def test_every_family_moves_with_traffic(fake: FakeUpstream) -> None:
    async with open_fake_upstream() as broken:
        broken.fail_always(500)
        config = _config(fake, broken)
        database = config.general.database_url
        create_key(database, KEY, key_alias="laptop", max_budget=1.0, team_id="family")
        create_key(database, LIMITED, key_alias="tight", rpm_limit=1)
        async with running_proxy(config) as proxy:
            before = await scrape(proxy)
            async with proxy.client(KEY) as client:
                for content in ("one", "two", "one"):  # the second "one" is a cache hit
                    body = {"model": "m", "messages": [{"role": "user", "content": content}]}
                    assert (await client.post("/v1/chat/completions", json=body)).status_code == 200
                stream = {"model": "m", "messages": HELLO, "stream": True}
                async with client.stream("POST", "/v1/chat/completions", json=stream) as response:
                    assert [line async for line in response.aiter_lines()][-2:] == ["data: [DONE]", ""]
                for _ in range(4):  # pair-broken fails once and cools down; pair-good answers
                    body = {"model": "pair", "messages": HELLO, "cache": {"no-cache": True}}
                    assert (await client.post("/v1/chat/completions", json=body)).status_code == 200
            async with proxy.client(LIMITED) as client:
                statuses = [(await client.post("/v1/chat/completions", json={"model": "m", "messages": HELLO}))]
                statuses.append(await client.post("/v1/chat/completions", json={"model": "m", "messages": HELLO}))
            assert [r.status_code for r in statuses] == [200, 429]
            after = await scrape(proxy)
            text = (await proxy.client().get("/metrics")).text

    success = {"model_group": "m", "deployment": "m-0", "status": "success"}
    assert (
        value(after, "edgeproxy_requests_total", **success) - value(before, "edgeproxy_requests_total", **success) == 4
    )
    assert value(after, "edgeproxy_requests_total", model_group="m", deployment="cache", status="success") == 1
    assert value(after, "edgeproxy_requests_total", model_group="pair", deployment="pair-good", status="success") == 4
    assert value(after, "edgeproxy_request_duration_seconds_count", model_group="m") == 5
    assert value(after, "edgeproxy_request_duration_seconds_bucket", model_group="m", le="+Inf") == 5
    assert value(after, "edgeproxy_time_to_first_token_seconds_count", model_group="m") == 1
    assert value(after, "edgeproxy_tokens_total", model_group="m", kind="prompt") == 4 * 10 + 10  # + the cache hit
    assert value(after, "edgeproxy_tokens_total", model_group="m", kind="completion") == 5 * 5
    spend = value(after, "edgeproxy_spend_usd_total", model_group="m")
    assert abs(spend - 4 * (10 * 0.001 + 5 * 0.002)) < 1e-9  # the cache hit is free
    assert value(after, "edgeproxy_team_spend_usd_total", team="family") > 0
    assert value(after, "edgeproxy_key_spend_usd_total", key_alias="laptop") > 0
    assert value(after, "edgeproxy_deployment_cooldown", model_group="pair", deployment="pair-broken") == 1
    assert value(after, "edgeproxy_deployment_cooldown", model_group="pair", deployment="pair-good") == 0
    assert value(after, "edgeproxy_deployment_healthy", model_group="m", deployment="m-0") == 1
    assert value(after, "edgeproxy_cache_requests_total", result="hit") == 1
    assert value(after, "edgeproxy_cache_requests_total", result="miss") >= 3
    assert value(after, "edgeproxy_rate_limited_total") - value(before, "edgeproxy_rate_limited_total") == 1
    assert value(after, "edgeproxy_spend_queue_depth") == 9  # every call waits (proxy_batch_write_at: 3600)
    remaining = value(after, "edgeproxy_budget_remaining_usd", key_alias="laptop")
    assert 0.9 < remaining < 1.0
    # No key, no hash of a key, no master key anywhere in the exposition.
    for secret in (KEY, hash_key(KEY), LIMITED, hash_key(LIMITED), MASTER_KEY):
        assert secret not in text


async def test_deployment_healthy_follows_the_probes(fake: FakeUpstream) -> None:
    health = {"background_health_checks": True, "health_check_interval": 0.1, "health_check_timeout": 1}
    config = make_config([{**openai_model("m", fake), "model_info": {"id": "box"}}], general_settings=health)
    async with running_proxy(config) as proxy:
        await trio.sleep(0.3)
        assert value(await scrape(proxy), "edgeproxy_deployment_healthy", model_group="m", deployment="box") == 1
        await fake.stop()
        with trio.fail_after(5):
            while value(await scrape(proxy), "edgeproxy_deployment_healthy", model_group="m", deployment="box"):
                await trio.sleep(0.05)


async def test_metrics_auth_setting(fake: FakeUpstream) -> None:
    open_config = make_config([openai_model("m", fake)])
    async with running_proxy(open_config) as proxy, proxy.client(None) as anonymous:
        assert (await anonymous.get("/metrics")).status_code == 200
        assert "edgeproxy_budget_remaining_usd" not in (await anonymous.get("/metrics")).text  # opt-in
    closed = make_config([openai_model("m", fake)], general_settings={"metrics_require_auth": True})
    create_key(closed.general.database_url, KEY, key_alias="laptop")
    async with running_proxy(closed) as proxy:
        async with proxy.client(None) as anonymous:
            assert (await anonymous.get("/metrics")).status_code == 401
        async with proxy.client(KEY) as user:
            assert (await user.get("/metrics")).status_code == 403
        async with proxy.client() as admin:
            response = await admin.get("/metrics")
            assert response.status_code == 200 and "edgeproxy_requests_total" in response.text


async def test_workers_add_up_in_one_scrape(tmp_path: Path) -> None:
    config = {
        "model_list": [{"model_name": "demo", "litellm_params": {"model": "mock/demo"}}],
        "general_settings": {"master_key": MASTER_KEY, "database_url": f"sqlite:///{tmp_path}/w.db"},
    }
    headers = {"authorization": f"Bearer {MASTER_KEY}"}
    body = {"model": "demo", "messages": HELLO}
    async with server_process(tmp_path, config, "--workers", "2", "--log-format", "json") as server:
        url, process = server.url, server.process
        metrics_dir = _multiproc_dir(process.pid)
        served = 0
        with trio.fail_after(30):
            while len(_call_pids(tmp_path / "stderr.log")) < 2 or served < 20:
                # A new connection each time: SO_REUSEPORT spreads connections, not requests, over workers.
                async with httpx.AsyncClient(base_url=url, headers=headers) as client:
                    assert (await client.post("/v1/chat/completions", json=body)).status_code == 200
                served += 1
                await trio.sleep(0.01)
        await trio.sleep(0.2)  # the last call's log line
        counts = set()
        for _ in range(10):
            async with httpx.AsyncClient(base_url=url) as client:
                samples = parse((await client.get("/metrics")).text)
            counts.add(
                value(samples, "edgeproxy_requests_total", model_group="demo", deployment="demo-0", status="success")
            )
            assert value(samples, "edgeproxy_deployment_healthy", model_group="demo", deployment="demo-0") == 1
        server.send(signal.SIGTERM)
        code = await server.wait()
    assert len(_call_pids(tmp_path / "stderr.log")) == 2  # both workers served calls...
    assert counts == {float(served)}  # ...and every scrape, whichever worker answered it, counted them all
    assert code == 0
    assert not metrics_dir.exists()  # the run's metrics directory is removed at exit


def _multiproc_dir(pid: int) -> Path:
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    for child in children:
        environ = Path(f"/proc/{child}/environ").read_bytes().split(b"\0")
        for entry in environ:
            if entry.startswith(b"PROMETHEUS_MULTIPROC_DIR="):
                return Path(entry.split(b"=", 1)[1].decode())
    raise AssertionError("no worker has PROMETHEUS_MULTIPROC_DIR")


def _call_pids(log: Path) -> set[int]:
    pids = set()
    for line in log.read_text().splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if entry.get("message") == "call finished":
            pids.add(entry["pid"])
    return pids
