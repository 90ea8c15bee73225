"""The error table of COMPAT.md: every error is an OpenAI-style body with the right status."""

from __future__ import annotations

from typing import Any

import httpx
import openai
import pytest

from tests.e2e.conftest import MASTER_KEY, make_config, openai_model, running_proxy
from tests.fakes import FakeUpstream

HELLO = [{"role": "user", "content": "hi"}]


def assert_error(response: httpx.Response, status: int, error_type: str, param: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == error_type
    assert error["code"] == str(status)
    assert error["param"] == param
    return error


async def test_auth_errors(fake: FakeUpstream) -> None:
    async with running_proxy(make_config([openai_model("m", fake)])) as proxy:
        async with proxy.client(key=None) as anonymous:
            missing = await anonymous.post("/v1/chat/completions", json={"model": "m", "messages": HELLO})
        async with proxy.client(key="sk-wrong") as wrong:
            bad = await wrong.post("/v1/chat/completions", json={"model": "m", "messages": HELLO})
        async with proxy.client(key=None, headers={"x-api-key": MASTER_KEY}) as other_header:
            ok = await other_header.get("/v1/models")
    assert "no API key" in assert_error(missing, 401, "authentication_error")["message"]
    assert_error(bad, 401, "authentication_error")
    assert ok.status_code == 200
    assert fake.requests == []


@pytest.mark.parametrize(
    ("body", "param", "fragment"),
    [
        (b"{not json", None, "not valid JSON"),
        (b"[1, 2]", None, "JSON object"),
        (b'{"messages": [{"role": "user", "content": "x"}]}', "model", "model"),
        (b'{"model": "m"}', "messages", "messages"),
        (b'{"model": "m", "messages": "hi"}', "messages", "non-empty list"),
        (b'{"model": "m", "messages": [{"role": "wizard", "content": "x"}]}', "messages[0].role", "role"),
        (b'{"model": "m", "messages": [{"role": "user", "content": "x"}], "max_tokens": "ten"}', "max_tokens", ""),
        (b'{"model": "m", "messages": [{"role": "user", "content": "x"}], "stream": "yes"}', "stream", ""),
        (b'{"model": "gpt-9", "messages": [{"role": "user", "content": "x"}]}', "model", "available: m"),
    ],
)
async def test_bad_requests_get_400_with_param(
    fake: FakeUpstream, body: bytes, param: str | None, fragment: str
) -> None:
    async with running_proxy(make_config([openai_model("m", fake)])) as proxy, proxy.client() as client:
        response = await client.post("/v1/chat/completions", content=body, headers={"content-type": "application/json"})
    assert fragment in assert_error(response, 400, "invalid_request_error", param)["message"]
    assert fake.requests == []


async def test_body_too_large_is_413(fake: FakeUpstream) -> None:
    config = make_config([openai_model("m", fake)], general_settings={"max_request_size_mb": 0.01})
    big = [{"role": "user", "content": "x" * 20_000}]
    async with running_proxy(config) as proxy, proxy.client() as client:
        response = await client.post("/v1/chat/completions", json={"model": "m", "messages": big})
    assert_error(response, 413, "invalid_request_error")


async def test_unknown_route_is_openai_shaped_404(fake: FakeUpstream) -> None:
    async with running_proxy(make_config([openai_model("m", fake)])) as proxy, proxy.client() as client:
        response = await client.get("/v1/nothing-here")
    assert_error(response, 404, "not_found_error")


async def test_unreachable_upstream_is_502_without_credentials(fake: FakeUpstream) -> None:
    base = fake.openai_base.replace("http://", "http://admin:hunter2@")
    config = make_config(
        [openai_model("m", fake, api_base=base, api_key="sk-provider-secret")],
        router_settings={"num_retries": 0},
    )
    await fake.stop()
    async with running_proxy(config) as proxy, proxy.client() as client:
        response = await client.post("/v1/chat/completions", json={"model": "m", "messages": HELLO})
    error = assert_error(response, 502, "api_error")
    assert "'m'" in error["message"]
    for secret in ("hunter2", "sk-provider-secret", "admin:"):
        assert secret not in response.text


async def test_upstream_error_status_passes_through(fake: FakeUpstream) -> None:
    fake.fail_next(1, status=400, body={"error": {"message": "bad temperature", "type": "invalid_request_error"}})
    async with running_proxy(make_config([openai_model("m", fake)])) as proxy:
        with pytest.raises(openai.BadRequestError) as raised:
            await proxy.openai().chat.completions.create(model="m", messages=HELLO)
    assert "bad temperature" in str(raised.value)


async def test_upstream_5xx_becomes_502_after_retries(fake: FakeUpstream) -> None:
    fake.fail_always(500)
    config = make_config([openai_model("m", fake)], router_settings={"num_retries": 1, "retry_after": 0.01})
    async with running_proxy(config) as proxy, proxy.client() as client:
        response = await client.post("/v1/chat/completions", json={"model": "m", "messages": HELLO})
    assert_error(response, 502, "api_error")
    assert len(fake.requests) == 2  # the first attempt and one retry


async def test_stream_cut_after_first_bytes_ends_with_error_event(fake: FakeUpstream) -> None:
    fake.reply_text = "one two three four five"
    fake.cut_stream_after(2)
    async with running_proxy(make_config([openai_model("m", fake)])) as proxy:
        stream = await proxy.openai().chat.completions.create(model="m", messages=HELLO, stream=True)
        received: list[str] = []
        with pytest.raises(openai.APIError):
            async for chunk in stream:
                received.append(chunk.choices[0].delta.content or "" if chunk.choices else "")
    assert "".join(received).strip() != ""
    assert len([r for r in fake.requests if r.path == "/v1/chat/completions"]) == 1  # no retry after bytes went out
