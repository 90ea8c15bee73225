"""Request logs: one JSON line per call with its fields and never a key; opt-in prompts in spend logs."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import httpx
import trio

from edgeproxy.auth import hash_key
from tests.e2e.conftest import MASTER_KEY, create_key, make_config, openai_model, running_proxy
from tests.e2e.processes import ServerProcess, server_process
from tests.fakes import FakeUpstream

HELLO = [{"role": "user", "content": "hi"}]
KEY = "sk-logs-virtual-key-0000001"
CALL_FIELDS = {
    "call_id", "call_type", "key_alias", "user", "team", "model_group", "deployment", "status", "latency_ms",
    "ttft_ms", "prompt_tokens", "completion_tokens", "cost", "cache_hit", "error",
}  # fmt: skip


async def _stop(server: ServerProcess) -> None:
    server.send(signal.SIGTERM)
    assert await server.wait(20) == 0


async def test_json_log_lines_have_the_call_fields_and_no_key(fake: FakeUpstream, tmp_path: Path) -> None:
    database = f"sqlite:///{tmp_path}/logs.db"
    create_key(database, KEY, key_alias="laptop", user_id="ann", team_id="family")
    config = {
        "model_list": [openai_model("m", fake), openai_model("down", fake, api_base="http://127.0.0.1:9/v1")],
        "general_settings": {
            "master_key": MASTER_KEY,
            "database_url": database,
            "log_format": "json",
            "log_level": "info",
        },
    }
    async with server_process(tmp_path, config) as server:
        url = server.url
        async with httpx.AsyncClient(base_url=url, headers={"authorization": f"Bearer {KEY}"}) as client:
            assert (
                await client.post("/v1/chat/completions", json={"model": "m", "messages": HELLO})
            ).status_code == 200
            stream = {"model": "m", "messages": HELLO, "stream": True}
            async with client.stream("POST", "/v1/chat/completions", json=stream) as response:
                await response.aread()
            failed = await client.post("/v1/chat/completions", json={"model": "down", "messages": HELLO})
            assert failed.status_code == 502
        await _stop(server)
    text = (tmp_path / "stderr.log").read_text()
    for secret in (KEY, hash_key(KEY), MASTER_KEY):
        assert secret not in text
    entries = [json.loads(line) for line in text.splitlines() if line.strip()]  # every line is JSON
    calls = [e for e in entries if e.get("message") == "call finished"]
    assert len(calls) == 3
    for call in calls:
        assert set(call) >= CALL_FIELDS
        assert (call["key_alias"], call["user"], call["team"]) == ("laptop", "ann", "family")
        assert call["level"] == "info" and call["logger"] == "edgeproxy.calls"
    ok, streamed, down = calls
    assert (ok["status"], ok["model_group"], ok["deployment"], ok["cache_hit"]) == ("success", "m", "m-0", False)
    assert (ok["prompt_tokens"], ok["completion_tokens"]) == (10, 5) and ok["latency_ms"] > 0
    assert streamed["ttft_ms"] is not None and ok["ttft_ms"] is None
    assert down["status"] == "failure" and "could not reach" in down["error"]


async def test_command_line_overrides_the_configured_level_and_format(fake: FakeUpstream, tmp_path: Path) -> None:
    config = {
        "model_list": [openai_model("m", fake)],
        "general_settings": {
            "master_key": MASTER_KEY,
            "database_url": f"sqlite:///{tmp_path}/logs.db",
            "log_format": "json",
            "log_level": "debug",
        },
    }
    async with server_process(tmp_path, config, "--log-level", "warning", "--log-format", "text") as server:
        url = server.url
        async with httpx.AsyncClient(base_url=url, headers={"authorization": f"Bearer {MASTER_KEY}"}) as client:
            assert (
                await client.post("/v1/chat/completions", json={"model": "m", "messages": HELLO})
            ).status_code == 200
        await _stop(server)
    text = (tmp_path / "stderr.log").read_text()
    assert "call " not in text and "listening" not in text  # info lines are below warning
    assert not any(line.startswith("{") for line in text.splitlines())


async def test_prompts_and_responses_stored_in_spend_logs_when_asked(fake: FakeUpstream) -> None:
    fake.reply_text = "An answer that is certainly longer than the cap"
    general = {"store_prompts_in_spend_logs": True, "max_stored_prompt_chars": 20, "proxy_batch_write_at": 0.05}
    config = make_config([openai_model("m", fake)], general_settings=general)
    long_prompt = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "x" * 100}]
    async with running_proxy(config) as proxy, proxy.client() as client:
        first = await client.post("/v1/chat/completions", json={"model": "m", "messages": long_prompt})
        stream = {"model": "m", "messages": HELLO, "stream": True}
        async with client.stream("POST", "/v1/chat/completions", json=stream) as response:
            await response.aread()
        with trio.fail_after(5):
            while True:
                rows = (await client.get("/spend/logs")).json()["logs"]
                if len(rows) == 2:
                    break
                await trio.sleep(0.05)
    by_id = {row["request_id"]: row for row in rows}
    plain = by_id[first.headers["x-litellm-call-id"]]
    assert plain["messages"] == [{"role": "system", "content": "be brief"}, {"role": "user", "content": "x" * 12}]
    assert plain["response"] == fake.reply_text[:20]
    assert plain["metadata"]["truncated_to_chars"] == 20
    streamed = next(row for row in rows if row is not plain)
    assert streamed["messages"] == [{"role": "user", "content": "hi"}]
    assert streamed["response"] == fake.reply_text[:20]


async def test_prompts_are_not_stored_by_default(fake: FakeUpstream) -> None:
    config = make_config([openai_model("m", fake)], general_settings={"proxy_batch_write_at": 0.05})
    async with running_proxy(config) as proxy, proxy.client() as client:
        await client.post("/v1/chat/completions", json={"model": "m", "messages": HELLO})
        with trio.fail_after(5):
            while not (rows := (await client.get("/spend/logs")).json()["logs"]):
                await trio.sleep(0.05)
    assert rows[0]["metadata"] == {} and rows[0]["messages"] is None and rows[0]["response"] is None
