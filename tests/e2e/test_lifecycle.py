"""Client disconnects close the upstream; SIGTERM drains in-flight requests then exits 0."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import trio
import yaml

from tests.e2e.conftest import MASTER_KEY, make_config, openai_model, running_proxy
from tests.fakes import FakeUpstream

HELLO = [{"role": "user", "content": "hi"}]


async def test_client_disconnect_closes_upstream_stream(fake: FakeUpstream) -> None:
    fake.reply_text = " ".join(f"w{i}" for i in range(50))
    fake.chunk_delay_s = 0.2
    async with running_proxy(make_config([openai_model("m", fake)])) as proxy, proxy.client() as client:
        body = {"model": "m", "messages": HELLO, "stream": True}
        async with client.stream("POST", "/v1/chat/completions", json=body) as response:
            async for line in response.aiter_lines():
                if line.startswith("data: "):
                    break  # one chunk is enough: hang up
        with trio.fail_after(5):
            await fake.wait_disconnect()
    assert fake.disconnects == 1


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _wait_until_serving(url: str) -> None:
    async with httpx.AsyncClient() as client:
        with trio.fail_after(20):
            while True:
                try:
                    if (await client.get(url + "/health/liveliness")).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                await trio.sleep(0.05)


@pytest.mark.parametrize("signals", [1, 2], ids=["once", "twice-at-once"])
async def test_sigterm_drains_in_flight_requests(fake: FakeUpstream, tmp_path: Path, signals: int) -> None:
    # Twice at once is what systemd (every process of the unit) or a frozen binary's launcher delivers.
    fake.reply_text = "slow but complete answer here"
    fake.chunk_delay_s = 0.3
    config = {
        "model_list": [openai_model("m", fake)],
        "general_settings": {"master_key": MASTER_KEY, "database_url": f"sqlite:///{tmp_path}/e.db"},
    }
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    port = _free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "edgeproxy",
            "run",
            "--config",
            "config.yaml",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": os.getcwd()},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        await _wait_until_serving(url)
        headers = {"authorization": f"Bearer {MASTER_KEY}"}
        async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30) as client:
            body = {"model": "m", "messages": HELLO, "stream": True}
            async with client.stream("POST", "/v1/chat/completions", json=body) as response:
                lines = response.aiter_lines()
                first = await lines.__anext__()
                assert first.startswith("data: ")
                for _ in range(signals):
                    process.send_signal(signal.SIGTERM)
                rest = [line async for line in lines]
        assert rest[-2:] == ["data: [DONE]", ""] or rest[-1] == "data: [DONE]"
        with trio.fail_after(20):
            code = await trio.to_thread.run_sync(process.wait)
        assert code == 0
        async with httpx.AsyncClient() as client:
            try:
                await client.get(url + "/health/liveliness")
                refused = False
            except httpx.ConnectError:
                refused = True
        assert refused
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


async def test_workers_share_one_port_and_stop_together(tmp_path: Path) -> None:
    config = {
        "model_list": [{"model_name": "demo", "litellm_params": {"model": "mock/demo"}}],
        "general_settings": {"master_key": MASTER_KEY, "database_url": f"sqlite:///{tmp_path}/w.db"},
    }
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    port = _free_port()
    command = [sys.executable, "-m", "edgeproxy", "run", "--config", "config.yaml", "--host", "127.0.0.1"]
    process = subprocess.Popen([*command, "--port", str(port), "--workers", "2"], cwd=tmp_path)
    url = f"http://127.0.0.1:{port}"
    try:
        await _wait_until_serving(url)
        children = Path(f"/proc/{process.pid}/task/{process.pid}/children").read_text().split()
        headers = {"authorization": f"Bearer {MASTER_KEY}"}
        body = {"model": "demo", "messages": HELLO}
        async with httpx.AsyncClient(base_url=url, headers=headers) as client:
            statuses = [(await client.post("/v1/chat/completions", json=body)).status_code for _ in range(10)]
        process.send_signal(signal.SIGTERM)
        with trio.fail_after(30):
            code = await trio.to_thread.run_sync(process.wait)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert len(children) >= 2  # two worker processes (multiprocessing may add a resource tracker)
    assert statuses == [200] * 10
    assert code == 0
