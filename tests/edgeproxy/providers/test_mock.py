from __future__ import annotations

import base64
import math
import struct
from collections.abc import AsyncIterator
from typing import Any

import httpcore
import httpx
import pytest

from edgeproxy.config import Deployment
from edgeproxy.providers import MockTransport, get_provider
from edgeproxy.providers.base import CallType, Usage, estimate_tokens
from edgeproxy.providers.mock import GREETING, embedding_vector

from .support import deployment

BASE = "http://mock.invalid/v1"


def _dep(**params: Any) -> Deployment:
    return deployment("mock", model="demo", api_base=BASE, model_name="demo", params=params)


class _ViaHttpx(httpx.AsyncBaseTransport):
    """Drives the mock (shaped like an httpcore pool) from an httpx client, for convenient assertions."""

    def __init__(self, dep: Deployment) -> None:
        self._mock = MockTransport(dep)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = httpcore.URL(
            scheme=request.url.raw_scheme, host=request.url.raw_host, port=request.url.port, target=request.url.raw_path
        )
        sent = httpcore.Request(request.method, url, headers=request.headers.raw, content=await request.aread())
        response = await self._mock.handle_async_request(sent)
        return httpx.Response(response.status, headers=response.headers, stream=_Pieces(response))


class _Pieces(httpx.AsyncByteStream):
    def __init__(self, response: httpcore.Response) -> None:
        self._response = response

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for piece in self._response.aiter_stream():
            yield piece


def _client(dep: Deployment) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=_ViaHttpx(dep))


async def _post(dep: Deployment, path: str, body: dict[str, Any]) -> httpx.Response:
    async with _client(dep) as client:
        return await client.post(BASE + path, json=body)


CHAT = {
    "model": "demo",
    "messages": [{"role": "system", "content": "Be nice."}, {"role": "user", "content": "Hi there"}],
}


async def test_chat_echoes_last_user_message_with_usage() -> None:
    response = await _post(_dep(), "/chat/completions", CHAT)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    obj = response.json()
    reply = GREETING + "Hi there"
    assert obj["object"] == "chat.completion" and obj["model"] == "demo"
    assert obj["choices"][0]["message"]["content"] == reply
    assert obj["choices"][0]["finish_reason"] == "stop"
    assert obj["usage"] == {
        "prompt_tokens": estimate_tokens("Be nice.\nHi there"),
        "completion_tokens": estimate_tokens(reply),
        "total_tokens": estimate_tokens("Be nice.\nHi there") + estimate_tokens(reply),
    }


async def test_echo_is_truncated_and_parts_are_read() -> None:
    long = "x" * 500
    body = {"messages": [{"role": "user", "content": [{"type": "text", "text": long}]}]}
    obj = (await _post(_dep(), "/chat/completions", body)).json()
    assert obj["choices"][0]["message"]["content"] == GREETING + "x" * 200


async def test_configured_reply_and_max_tokens_length() -> None:
    dep = _dep(mock_response="The answer is forty-two, obviously.")
    obj = (await _post(dep, "/chat/completions", CHAT)).json()
    assert obj["choices"][0]["message"]["content"] == "The answer is forty-two, obviously."
    obj = (await _post(dep, "/chat/completions", dict(CHAT, max_tokens=2))).json()
    assert obj["choices"][0]["message"]["content"] == "The answ"
    assert obj["choices"][0]["finish_reason"] == "length"


async def test_stream_is_real_sse_and_translates_with_the_openai_provider() -> None:
    dep = _dep(mock_response="one two three")
    provider = get_provider("mock")
    request = provider.build_request(dep, CallType.CHAT, CHAT, stream=True)
    translator = provider.stream_translator(dep, CallType.CHAT, CHAT)
    pieces: list[bytes] = []
    async with (
        _client(dep) as client,
        client.stream(request.method, request.url, headers=request.headers, json=request.json) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/event-stream"
        async for piece in response.aiter_raw():
            pieces.append(piece)
    assert pieces[-1] == b"data: [DONE]\n\n"
    assert b'"choices": [], "usage": {' in pieces[-2]  # the usage chunk include_usage asked for
    chunks = [c for piece in pieces for c in translator.feed(piece)] + translator.close()
    deltas = [c["choices"][0]["delta"] for c in chunks]
    assert deltas == [{"role": "assistant", "content": ""}, {"content": "one "}, {"content": "two "},
                      {"content": "three"}, {}]  # fmt: skip
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert translator.finished
    assert translator.usage == Usage(
        prompt_tokens=estimate_tokens("Be nice.\nHi there"), completion_tokens=estimate_tokens("one two three")
    )


async def test_stream_without_include_usage_has_no_usage_chunk() -> None:
    async with (
        _client(_dep()) as client,
        client.stream("POST", BASE + "/chat/completions", json=dict(CHAT, stream=True)) as response,
    ):
        body = (await response.aread()).decode()
    assert '"usage"' not in body
    assert body.endswith("data: [DONE]\n\n")


async def test_completions_and_streamed_completions() -> None:
    obj = (await _post(_dep(), "/completions", {"prompt": "Once upon"})).json()
    assert obj["object"] == "text_completion"
    assert obj["choices"][0]["text"] == GREETING + "Once upon"
    dep = _dep(mock_response="a b")
    translator = get_provider("mock").stream_translator(dep, CallType.COMPLETION, {})
    async with (
        _client(dep) as client,
        client.stream("POST", BASE + "/completions", json={"prompt": "x", "stream": True}) as response,
    ):
        chunks = [c async for piece in response.aiter_raw() for c in translator.feed(piece)]
    assert {c["object"] for c in chunks} == {"text_completion"}
    assert translator.text == "a b"
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


async def test_embeddings_deterministic_unit_vectors() -> None:
    obj = (await _post(_dep(), "/embeddings", {"input": ["cat", "dog", "cat"]})).json()
    vectors = [d["embedding"] for d in obj["data"]]
    assert [d["index"] for d in obj["data"]] == [0, 1, 2]
    assert all(len(v) == 16 for v in vectors)
    assert all(math.isclose(math.sqrt(sum(x * x for x in v)), 1.0) for v in vectors)
    assert vectors[0] == vectors[2] != vectors[1]
    assert vectors[0] == embedding_vector("cat")
    assert obj["usage"]["prompt_tokens"] == 3


async def test_embeddings_base64_encoding() -> None:
    obj = (await _post(_dep(), "/embeddings", {"input": "cat", "encoding_format": "base64"})).json()
    decoded = struct.unpack("<16f", base64.b64decode(obj["data"][0]["embedding"]))
    assert decoded == pytest.approx(embedding_vector("cat"), abs=1e-6)


async def test_models_listing() -> None:
    async with _client(_dep()) as client:
        response = await client.get(BASE + "/models")
    assert response.json()["data"][0]["id"] == "demo"
    assert response.json()["object"] == "list"


@pytest.mark.parametrize("status", [429, 500, 401])
async def test_configured_errors_use_openai_error_body(status: int) -> None:
    response = await _post(_dep(mock_response=f"error:{status}"), "/chat/completions", CHAT)
    assert response.status_code == status
    error = response.json()["error"]
    assert error["code"] == str(status)
    assert str(status) in error["message"]
    assert get_provider("mock").error_message(status, response.content) == error["message"]


async def test_unknown_route_and_bad_body() -> None:
    async with _client(_dep()) as client:
        assert (await client.post(BASE + "/audio/speech", json={})).status_code == 404
        assert (await client.post(BASE + "/chat/completions", content=b"{nope")).status_code == 400
        assert (await client.delete(BASE + "/chat/completions")).status_code == 405
