"""The router through the real server: dead deployments routed around, fallbacks in order, probes in /health."""

from __future__ import annotations

import tempfile

import httpx
import pytest
import trio
from click.testing import CliRunner

from tests.e2e.conftest import MASTER_KEY, make_config, openai_model, running_proxy
from tests.fakes import FakeUpstream, open_fake_upstream

HELLO = {"messages": [{"role": "user", "content": "hi"}]}


async def test_one_dead_deployment_of_two_is_cooled_down(fake: FakeUpstream) -> None:
    async with open_fake_upstream() as dead:
        dead.fail_always(500)
        config = make_config(
            [openai_model("m", fake), openai_model("m", dead)],
            router_settings={"allowed_fails": 3, "cooldown_time": 60, "num_retries": 2},
        )
        async with running_proxy(config) as proxy, proxy.client() as client:
            statuses = [
                (await client.post("/v1/chat/completions", json={"model": "m", **HELLO})).status_code for _ in range(30)
            ]
            health = (await client.get("/health")).json()
    assert statuses == [200] * 30
    assert len(dead.requests) <= 3 + 1  # allowed_fails + 1 attempts, then the cooldown keeps it out
    assert health["unhealthy_count"] == 1
    assert health["unhealthy_endpoints"][0]["deployment_id"] == "m-1"


async def test_refused_connections_are_retried_elsewhere(fake: FakeUpstream) -> None:
    async with open_fake_upstream() as gone:
        await gone.stop()
        config = make_config([openai_model("m", gone), openai_model("m", fake)])
        async with running_proxy(config) as proxy, proxy.client() as client:
            responses = [await client.post("/v1/chat/completions", json={"model": "m", **HELLO}) for _ in range(10)]
    assert [r.status_code for r in responses] == [200] * 10
    assert {r.headers["x-litellm-model-id"] for r in responses} == {"m-1"}


async def test_fallbacks_in_order_with_headers(fake: FakeUpstream) -> None:
    async with open_fake_upstream() as broken:
        broken.fail_always(503)
        config = make_config(
            [openai_model("local", broken), openai_model("mac", broken), openai_model("cloud", fake)],
            router_settings={"num_retries": 0, "fallbacks": [{"local": ["mac", "cloud"]}]},
        )
        async with running_proxy(config) as proxy, proxy.client() as client:
            response = await client.post("/v1/chat/completions", json={"model": "local", **HELLO})
    assert response.status_code == 200
    assert response.headers["x-litellm-model-group"] == "cloud"
    assert response.headers["x-litellm-attempted-fallbacks"] == "2"
    assert response.json()["model"] == "local"  # the client sees the name it asked for
    assert len(broken.requests) == 2


async def test_probes_mark_a_down_server_unhealthy(fake: FakeUpstream) -> None:
    async with open_fake_upstream() as flaky:
        base = flaky.openai_base.replace("http://", "http://probe:s3cret@")
        config = make_config(
            [openai_model("m", fake), openai_model("m", flaky, api_base=base)],
            general_settings={"background_health_checks": True, "health_check_interval": 0.1},
        )
        async with running_proxy(config) as proxy, proxy.client() as client:
            await flaky.stop()
            with trio.fail_after(5):  # well within two intervals of the stop, give or take scheduling
                while (report := (await client.get("/health")).json())["unhealthy_count"] == 0:
                    await trio.sleep(0.05)
            routed = [
                (await client.post("/v1/chat/completions", json={"model": "m", **HELLO})).headers["x-litellm-model-id"]
                for _ in range(10)
            ]
            cli = await trio.to_thread.run_sync(_health_cli, proxy.url)
    down = report["unhealthy_endpoints"][0]
    assert down["deployment_id"] == "m-1" and down["last_error"]
    assert "s3cret" not in str(report) and "probe:" not in str(report)
    assert set(routed) == {"m-0"}
    assert cli.exit_code == 1 and "DOWN" in cli.output and "m-1" in cli.output


def _health_cli(url: str) -> object:
    import yaml

    from edgeproxy.cli import cli

    with tempfile.TemporaryDirectory() as directory:
        path = f"{directory}/config.yaml"
        with open(path, "w") as file:
            yaml.safe_dump(
                {
                    "model_list": [{"model_name": "x", "litellm_params": {"model": "mock/x"}}],
                    "general_settings": {"master_key": MASTER_KEY},
                },
                file,
            )
        return CliRunner().invoke(cli, ["health", "--config", path, "--url", url])


async def test_health_needs_the_master_key(fake: FakeUpstream) -> None:
    async with running_proxy(make_config([openai_model("m", fake)])) as proxy, httpx.AsyncClient() as client:
        response = await client.get(proxy.url + "/health")
    assert response.status_code == 401


@pytest.mark.parametrize("fault", ["500", "503", "429", "stall", "garbage"])
async def test_every_fault_of_one_deployment_is_invisible_to_clients(fake: FakeUpstream, fault: str) -> None:
    async with open_fake_upstream() as bad:
        if fault == "stall":
            bad.stall_next(100)
        elif fault == "garbage":
            bad.garbage_next(100)
        else:
            bad.retry_after = 1 if fault == "429" else None
            bad.fail_always(int(fault))
        config = make_config(
            [openai_model("m", bad, timeout=0.5), openai_model("m", fake)],
            router_settings={"allowed_fails": 1, "num_retries": 2, "routing_strategy": "simple-shuffle"},
        )
        async with running_proxy(config) as proxy, proxy.client() as client:
            statuses = [
                (await client.post("/v1/chat/completions", json={"model": "m", **HELLO})).status_code for _ in range(12)
            ]
    assert statuses == [200] * 12
    assert len(bad.requests) <= 2  # allowed_fails + 1, then cooled down
