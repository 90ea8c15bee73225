"""SIGHUP reloads model_list and router_settings: a new model serves while a stream in flight completes; a
broken file is refused with one line naming the field, and the running config stays."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import httpx
import trio
import yaml

from tests.e2e.conftest import MASTER_KEY, openai_model
from tests.e2e.processes import server_process
from tests.fakes import FakeUpstream, open_fake_upstream

HELLO = [{"role": "user", "content": "hi"}]


def _write(tmp_path: Path, models: list[dict[str, Any]]) -> None:
    config = {
        "model_list": models,
        "general_settings": {"master_key": MASTER_KEY, "database_url": f"sqlite:///{tmp_path}/r.db"},
    }
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))


async def _models(client: httpx.AsyncClient) -> list[str]:
    return [m["id"] for m in (await client.get("/v1/models")).json()["data"]]


async def _wait_for_log(log: Path, text: str) -> str:
    with trio.fail_after(10):
        while True:
            for line in log.read_text().splitlines():
                if text in line:
                    return line
            await trio.sleep(0.05)


async def test_sighup_applies_a_new_model_and_refuses_a_broken_file(fake: FakeUpstream, tmp_path: Path) -> None:
    fake.reply_text = " ".join(f"w{i}" for i in range(12))
    fake.chunk_delay_s = 0.15  # about 2 s of stream: the reload happens in the middle of it
    _write(tmp_path, [openai_model("m", fake)])
    headers = {"authorization": f"Bearer {MASTER_KEY}"}
    async with server_process(tmp_path, None) as server:
        url, log, process = server.url, server.log, server.process
        async with (
            open_fake_upstream(reply_text="from the new model") as other,
            httpx.AsyncClient(base_url=url, headers=headers, timeout=30) as client,
        ):
            assert await _models(client) == ["m"]
            stream = {"model": "m", "messages": HELLO, "stream": True}
            async with client.stream("POST", "/v1/chat/completions", json=stream) as response:
                lines = response.aiter_lines()
                assert (await lines.__anext__()).startswith("data: ")
                # Mid-stream: a new model on another upstream, and SIGHUP.
                _write(tmp_path, [openai_model("m", fake), openai_model("new-model", other)])
                process.send_signal(signal.SIGHUP)
                async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30) as second:
                    with trio.fail_after(10):
                        while "new-model" not in await _models(second):
                            await trio.sleep(0.05)
                    body = {"model": "new-model", "messages": HELLO}
                    answer = await second.post("/v1/chat/completions", json=body)
                    assert answer.status_code == 200
                    assert answer.json()["choices"][0]["message"]["content"] == "from the new model"
                rest = [line async for line in lines]
            assert "data: [DONE]" in rest  # the stream that started before the reload completed
            text = "".join(rest)
            assert "w11" in text and '"error"' not in text
            reloaded = await _wait_for_log(log, "config reloaded")
            assert "added new-model" in reloaded

            # A broken file: refused with one line naming the field; both models keep working.
            broken = [openai_model("m", fake), openai_model("new-model", other, api_base="dell:11434")]
            _write(tmp_path, broken)
            process.send_signal(signal.SIGHUP)
            refused = await _wait_for_log(log, "reload refused")
            assert "model_list[1].litellm_params.api_base" in refused
            assert "still serving the previous config" in refused
            assert await _models(client) == ["m", "new-model"]
            for model in ("m", "new-model"):
                response = await client.post("/v1/chat/completions", json={"model": model, "messages": HELLO})
                assert response.status_code == 200
        server.send(signal.SIGTERM)
        code = await server.wait(20)
    assert code == 0
