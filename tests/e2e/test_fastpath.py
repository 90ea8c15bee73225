"""The LLM routes' raw ASGI path (edgeproxy/api/fastpath.py): same routing, limits and errors as Quart gave."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException
from werkzeug.routing import RequestRedirect

from edgeproxy.api import llm
from tests.e2e.conftest import create_key, make_config, openai_model, running_proxy
from tests.e2e.test_errors import assert_error
from tests.fakes import FakeUpstream

HELLO = [{"role": "user", "content": "hi"}]
CHAT = {"model": "m", "messages": HELLO}

PATHS = [
    *llm.ROUTES,
    "//v1/chat/completions",
    "///v1/embeddings",
    "/v1/chat/completions/",
    "/v1//chat/completions",
    "/V1/chat/completions",
    "/v1/chat/completion",
    "/v1/models",
    "/openai/deployments/gpt-4o/chat/completions",
    "/openai/deployments/a/b/chat/completions",
    "/openai/deployments/a//b/chat/completions",
    "/openai/deployments/a//chat/completions",
    "/openai/deployments/ /chat/completions",
    "/openai/deployments/x/chat/completions/chat/completions",
    "/openai/deployments//chat/completions",
    "/openai/deployments///chat/completions",
    "/openai/deployments/chat/completions",
    "/openai/deployments/a\nb/chat/completions",
    "/openai/deployments/a/chat/completions/",
    "/openai/deployments/a/completions",
]


@pytest.mark.parametrize("path", PATHS)
def test_fast_path_takes_exactly_the_posts_quart_would_route_to_it(path: str) -> None:
    app = QuartTrio("routes")
    app.register_blueprint(llm.blueprint)
    try:
        app.url_map.bind("localhost").match(path, method="POST")
        quart_routes = True
    except (HTTPException, RequestRedirect):
        quart_routes = False
    assert (llm.call_type(path) is not None) == quart_routes


async def test_other_methods_get_quarts_405(fake: FakeUpstream) -> None:
    async with running_proxy(make_config([openai_model("m", fake)])) as proxy, proxy.client() as client:
        chat = await client.get("/v1/chat/completions")
        azure = await client.put("/openai/deployments/m/chat/completions", json=CHAT)
        embeddings = await client.delete("/embeddings")
    for response in (chat, azure, embeddings):
        assert_error(response, 405, "invalid_request_error")
    assert fake.requests == []


async def test_oversized_body_without_content_length_is_413(fake: FakeUpstream) -> None:
    config = make_config([openai_model("m", fake)], general_settings={"max_request_size_mb": 0.01})

    async def chunked(parts: int) -> AsyncIterator[bytes]:  # no content-length: the limit applies as it arrives
        yield b'{"model": "m", "messages": [{"role": "user", "content": "'
        for _ in range(parts):
            yield b"x" * 1000
        yield b'"}]}'

    async with running_proxy(config) as proxy, proxy.client() as client:
        big = await client.post("/v1/chat/completions", content=chunked(20))
        small = await client.post("/v1/chat/completions", content=chunked(5))  # several parts, under the limit
    assert "larger than 0.01 MB" in assert_error(big, 413, "invalid_request_error")["message"]
    assert small.status_code == 200, small.text
    assert len(fake.requests) == 1


async def test_unexpected_exception_is_logged_and_a_json_500(
    fake: FakeUpstream, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def broken(*args: Any) -> None:
        raise KeyError("a bug")

    monkeypatch.setattr(llm, "answer", broken)
    async with running_proxy(make_config([openai_model("m", fake)])) as proxy, proxy.client() as client:
        with caplog.at_level(logging.ERROR, logger="edgeproxy.api.fastpath"):
            response = await client.post("/v1/chat/completions", json=CHAT)
            models = await client.get("/v1/models")  # the connection and the server carry on
    error = assert_error(response, 500, "internal_server_error")
    assert error["message"] == "internal error; the proxy log has the details"
    assert any(r.exc_info and isinstance(r.exc_info[1], KeyError) for r in caplog.records)
    assert models.status_code == 200


async def test_stream_failing_before_its_first_chunk_is_a_json_error(fake: FakeUpstream) -> None:
    fake.fail_next(1, status=500)
    config = make_config([openai_model("m", fake)], router_settings={"num_retries": 0})
    async with running_proxy(config) as proxy, proxy.client() as client:
        response = await client.post("/v1/chat/completions", json={**CHAT, "stream": True})
    assert response.headers["content-type"] == "application/json"
    assert_error(response, 502, "api_error")


async def test_client_leaving_a_stream_frees_its_parallel_slot(fake: FakeUpstream) -> None:
    config = make_config([openai_model("m", fake)])
    assert config.general.database_url is not None
    key = create_key(config.general.database_url, "sk-fastpath-parallel-01", max_parallel_requests=1)
    fake.reply_text = " ".join(f"w{i}" for i in range(50))
    fake.chunk_delay_s = 0.2
    async with running_proxy(config) as proxy, proxy.client(key) as client:
        async with client.stream("POST", "/v1/chat/completions", json={**CHAT, "stream": True}) as response:
            assert response.headers["content-type"] == "text/event-stream"
            await response.aiter_bytes().__anext__()
            refused = await client.post("/v1/chat/completions", json=CHAT)
        with trio.fail_after(5):
            await fake.wait_disconnect()  # the upstream stream was closed when we hung up
        fake.chunk_delay_s = 0.0
        with trio.fail_after(5):
            while (allowed := await client.post("/v1/chat/completions", json=CHAT)).status_code == 429:
                await trio.sleep(0.02)
    assert refused.status_code == 429
    assert allowed.status_code == 200, allowed.text


async def test_client_leaving_during_a_plain_call_cancels_it(fake: FakeUpstream) -> None:
    fake.stall_next()
    async with running_proxy(make_config([openai_model("m", fake)])) as proxy, proxy.client() as client:
        with trio.move_on_after(0.5) as gave_up:
            await client.post("/v1/chat/completions", json=CHAT)
        with trio.fail_after(5):
            await fake.wait_disconnect()  # the proxy gave up the upstream call once we left
    assert gave_up.cancelled_caught
