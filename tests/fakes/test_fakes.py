"""The fakes speak each wire format and each injected fault does what it says."""

from __future__ import annotations

import base64
import json
import struct
from collections.abc import AsyncIterator
from functools import partial
from typing import Any

import httpx
import pytest
import trio

from tests.fakes import DEFAULT_REPLY, EMBEDDING_DIM, FakeUpstream, embedding, open_fake_upstream

ANTHROPIC_HEADERS = {"x-api-key": "sk-ant-test", "anthropic-version": "2023-06-01"}
CHAT = {"model": "gpt-test", "messages": [{"role": "user", "content": "hi"}]}
TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]


@pytest.fixture
async def fake() -> AsyncIterator[FakeUpstream]:
    async with open_fake_upstream() as upstream:
        yield upstream


@pytest.fixture
async def client(fake: FakeUpstream) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=fake.url, timeout=5) as http:
        yield http


async def sse_data(response: httpx.Response) -> list[str]:
    return [line[len("data: ") :] async for line in response.aiter_lines() if line.startswith("data: ")]


async def stream_sse(client: httpx.AsyncClient, path: str, body: dict[str, Any], **kw: Any) -> list[str]:
    async with client.stream("POST", path, json=body, **kw) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        return await sse_data(response)


# -- OpenAI ------------------------------------------------------------------------------------


async def test_openai_chat_json_and_recorded_request(fake: FakeUpstream, client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/chat/completions", json=CHAT, headers={"Authorization": "Bearer sk-1"})
    body = response.json()
    assert body["object"] == "chat.completion"
    assert body["model"] == "gpt-test"
    assert body["choices"][0]["message"] == {"role": "assistant", "content": DEFAULT_REPLY, "refusal": None}
    assert body["usage"] == {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
    [recorded] = fake.requests
    assert (recorded.method, recorded.path, recorded.json) == ("POST", "/v1/chat/completions", CHAT)
    assert recorded.headers["authorization"] == "Bearer sk-1"


async def test_openai_chat_sse_parses_to_reply_with_usage(fake: FakeUpstream, client: httpx.AsyncClient) -> None:
    fake.reply_text, fake.usage = "one two three", (7, 3)
    body = {**CHAT, "stream": True, "stream_options": {"include_usage": True}}
    data = await stream_sse(client, "/v1/chat/completions", body)
    assert data[-1] == "[DONE]"
    chunks = [json.loads(d) for d in data[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == "one two three"
    assert len(chunks) == 1 + 3 + 1 + 1  # role, three words, finish, usage
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] == 10


async def test_openai_stream_without_include_usage_or_with_omit_usage(
    fake: FakeUpstream, client: httpx.AsyncClient
) -> None:
    plain = await stream_sse(client, "/v1/chat/completions", {**CHAT, "stream": True})
    assert all("usage" not in json.loads(d) for d in plain[:-1])
    fake.omit_usage = True
    body = {**CHAT, "stream": True, "stream_options": {"include_usage": True}}
    omitted = await stream_sse(client, "/v1/chat/completions", body)
    assert all(not json.loads(d).get("usage") for d in omitted[:-1])
    assert "usage" not in (await client.post("/v1/chat/completions", json=CHAT)).json()


async def test_openai_tool_call(fake: FakeUpstream, client: httpx.AsyncClient) -> None:
    fake.tool_call = ("get_weather", {"city": "Paris"})
    choice = (await client.post("/v1/chat/completions", json={**CHAT, "tools": TOOLS})).json()["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    call = choice["message"]["tool_calls"][0]["function"]
    assert call["name"] == "get_weather" and json.loads(call["arguments"]) == {"city": "Paris"}
    data = await stream_sse(client, "/v1/chat/completions", {**CHAT, "tools": TOOLS, "stream": True})
    deltas = [json.loads(d)["choices"][0]["delta"] for d in data[:-1]]
    arguments = "".join(t["function"]["arguments"] for d in deltas for t in d.get("tool_calls", []))
    assert json.loads(arguments) == {"city": "Paris"}
    plain = (await client.post("/v1/chat/completions", json=CHAT)).json()  # no tools offered: text
    assert plain["choices"][0]["message"]["content"] == DEFAULT_REPLY


async def test_openai_completions(client: httpx.AsyncClient) -> None:
    body = (await client.post("/v1/completions", json={"model": "m", "prompt": "hi"})).json()
    assert body["object"] == "text_completion" and body["choices"][0]["text"] == DEFAULT_REPLY
    data = await stream_sse(client, "/v1/completions", {"model": "m", "prompt": "hi", "stream": True})
    assert data[-1] == "[DONE]"
    assert "".join(json.loads(d)["choices"][0]["text"] for d in data[:-1]) == DEFAULT_REPLY


async def test_openai_embeddings_are_deterministic(client: httpx.AsyncClient) -> None:
    body = (await client.post("/v1/embeddings", json={"model": "e", "input": ["a", "b", "a"]})).json()
    vectors = [item["embedding"] for item in body["data"]]
    assert [len(v) for v in vectors] == [EMBEDDING_DIM] * 3
    assert vectors[0] == vectors[2] == embedding("a") and vectors[0] != vectors[1]
    assert body["usage"] == {"prompt_tokens": 10, "total_tokens": 10}
    encoded = (await client.post("/v1/embeddings", json={"input": "a", "encoding_format": "base64"})).json()
    raw = base64.b64decode(encoded["data"][0]["embedding"])
    assert struct.unpack(f"<{EMBEDDING_DIM}f", raw) == pytest.approx(embedding("a"))


async def test_models_listing(client: httpx.AsyncClient) -> None:
    body = (await client.get("/v1/models")).json()
    assert body == {
        "object": "list",
        "data": [{"id": "fake-model", "object": "model", "created": 1_700_000_000, "owned_by": "fake-upstream"}],
    }
    anthropic = (await client.get("/v1/models", headers=ANTHROPIC_HEADERS)).json()
    assert anthropic["data"][0]["type"] == "model" and anthropic["has_more"] is False


async def test_openai_sdk_reads_the_fake(fake: FakeUpstream) -> None:
    openai = pytest.importorskip("openai")
    sdk = openai.AsyncOpenAI(base_url=fake.openai_base, api_key="sk-test", max_retries=0)
    completion = await sdk.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
    assert completion.choices[0].message.content == DEFAULT_REPLY
    stream = await sdk.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "hi"}], stream=True, stream_options={"include_usage": True}
    )
    parts, usage = [], None
    async for chunk in stream:
        parts += [c.delta.content or "" for c in chunk.choices]
        usage = chunk.usage or usage
    assert "".join(parts) == DEFAULT_REPLY and usage is not None and usage.completion_tokens == 5
    vectors = await sdk.embeddings.create(model="e", input=["x"])
    assert vectors.data[0].embedding == pytest.approx(embedding("x"))
    await sdk.close()


# -- Ollama ------------------------------------------------------------------------------------


async def test_ollama_chat_streams_ndjson_by_default(fake: FakeUpstream, client: httpx.AsyncClient) -> None:
    async with client.stream("POST", "/api/chat", json={"model": "llama3", "messages": []}) as response:
        assert response.headers["content-type"] == "application/x-ndjson"
        lines = [json.loads(line) async for line in response.aiter_lines() if line]
    assert all(line["done"] is False for line in lines[:-1])
    assert "".join(line["message"]["content"] for line in lines) == DEFAULT_REPLY
    final = lines[-1]
    assert final["done"] is True and final["done_reason"] == "stop"
    assert (final["prompt_eval_count"], final["eval_count"]) == (10, 5)
    assert final["model"] == "llama3" and final["created_at"].endswith("Z")


async def test_ollama_chat_json_and_tool_call(fake: FakeUpstream, client: httpx.AsyncClient) -> None:
    body = (await client.post("/api/chat", json={"model": "l", "messages": [], "stream": False})).json()
    assert body["message"] == {"role": "assistant", "content": DEFAULT_REPLY} and body["done"] is True
    fake.tool_call = ("get_weather", {"city": "Oslo"})
    request = {"model": "l", "messages": [], "stream": False, "tools": TOOLS}
    message = (await client.post("/api/chat", json=request)).json()["message"]
    assert message["tool_calls"] == [{"function": {"name": "get_weather", "arguments": {"city": "Oslo"}}}]


async def test_ollama_generate_embed_tags(client: httpx.AsyncClient) -> None:
    generated = (await client.post("/api/generate", json={"model": "l", "prompt": "hi", "stream": False})).json()
    assert generated["response"] == DEFAULT_REPLY and generated["eval_count"] == 5
    async with client.stream("POST", "/api/generate", json={"model": "l", "prompt": "hi"}) as response:
        lines = [json.loads(line) async for line in response.aiter_lines() if line]
    assert "".join(line["response"] for line in lines) == DEFAULT_REPLY and lines[-1]["done"] is True
    embedded = (await client.post("/api/embed", json={"model": "e", "input": ["a", "b"]})).json()
    assert embedded["embeddings"] == [embedding("a"), embedding("b")] and embedded["prompt_eval_count"] == 10
    tags = (await client.get("/api/tags")).json()
    assert [m["name"] for m in tags["models"]] == ["fake-model"]


# -- Anthropic ---------------------------------------------------------------------------------


async def test_anthropic_requires_key_and_version(client: httpx.AsyncClient) -> None:
    for headers in ({}, {"x-api-key": "k"}, {"anthropic-version": "2023-06-01"}):
        response = await client.post("/v1/messages", json=CHAT, headers=headers)
        assert response.status_code == 401
        assert response.json()["type"] == "error"
        assert response.json()["error"]["type"] == "authentication_error"


async def test_anthropic_message_json(fake: FakeUpstream, client: httpx.AsyncClient) -> None:
    fake.cache_read_tokens = 4
    body = (await client.post("/v1/messages", json=CHAT, headers=ANTHROPIC_HEADERS)).json()
    assert body["type"] == "message" and body["stop_reason"] == "end_turn"
    assert body["content"] == [{"type": "text", "text": DEFAULT_REPLY}]
    assert body["usage"] == {
        "input_tokens": 10,
        "output_tokens": 5,
        "cache_read_input_tokens": 4,
        "cache_creation_input_tokens": 0,
    }


async def anthropic_events(client: httpx.AsyncClient, body: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    async with client.stream("POST", "/v1/messages", json=body, headers=ANTHROPIC_HEADERS) as response:
        text = (await response.aread()).decode()
    events = []
    for block in text.strip().split("\n\n"):
        name_line, data_line = block.split("\n")
        name, data = name_line.removeprefix("event: "), json.loads(data_line.removeprefix("data: "))
        assert data["type"] == name
        events.append((name, data))
    return events


async def test_anthropic_stream_events_in_order(client: httpx.AsyncClient) -> None:
    events = await anthropic_events(client, {**CHAT, "stream": True})
    names = [name for name, _ in events]
    deltas = [data["delta"]["text"] for name, data in events if name == "content_block_delta"]
    assert names == [
        "message_start",
        "content_block_start",
        "ping",
        *["content_block_delta"] * len(deltas),
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert "".join(deltas) == DEFAULT_REPLY
    assert events[0][1]["message"]["usage"]["input_tokens"] == 10
    assert events[-2][1]["delta"]["stop_reason"] == "end_turn" and events[-2][1]["usage"] == {"output_tokens": 5}


async def test_anthropic_tool_use(fake: FakeUpstream, client: httpx.AsyncClient) -> None:
    fake.tool_call = ("get_weather", {"city": "Rome"})
    tools = [{"name": "get_weather", "input_schema": {"type": "object"}}]
    body = (await client.post("/v1/messages", json={**CHAT, "tools": tools}, headers=ANTHROPIC_HEADERS)).json()
    assert body["stop_reason"] == "tool_use"
    assert body["content"][0]["name"] == "get_weather" and body["content"][0]["input"] == {"city": "Rome"}
    events = await anthropic_events(client, {**CHAT, "tools": tools, "stream": True})
    assert events[1][1]["content_block"]["type"] == "tool_use"
    partial = [d["delta"]["partial_json"] for n, d in events if n == "content_block_delta"]
    assert json.loads("".join(partial)) == {"city": "Rome"}


# -- faults ------------------------------------------------------------------------------------


async def test_fail_next_uses_each_route_error_format(fake: FakeUpstream, client: httpx.AsyncClient) -> None:
    fake.retry_after = 2
    fake.fail_next(3, status=429)
    openai = await client.post("/v1/chat/completions", json=CHAT)
    assert openai.status_code == 429 and openai.headers["retry-after"] == "2"
    assert set(openai.json()["error"]) == {"message", "type", "param", "code"}
    assert (await client.get("/v1/models")).status_code == 200  # listings do not consume faults
    ollama = await client.post("/api/chat", json={"model": "l", "messages": []})
    assert ollama.status_code == 429 and isinstance(ollama.json()["error"], str)
    anthropic = await client.post("/v1/messages", json=CHAT, headers=ANTHROPIC_HEADERS)
    assert anthropic.json()["error"]["type"] == "rate_limit_error"
    assert (await client.post("/v1/chat/completions", json=CHAT)).status_code == 200


async def test_fail_next_custom_body_and_fail_always(fake: FakeUpstream, client: httpx.AsyncClient) -> None:
    fake.fail_next(1, status=400, body={"error": "custom"}, headers={"x-reason": "test"})
    custom = await client.post("/v1/embeddings", json={"input": "a"})
    assert (custom.status_code, custom.json(), custom.headers["x-reason"]) == (400, {"error": "custom"}, "test")
    fake.fail_always(503)
    for _ in range(3):
        assert (await client.post("/v1/chat/completions", json=CHAT)).status_code == 503
    fake.heal()
    assert (await client.post("/v1/chat/completions", json=CHAT)).status_code == 200


async def test_garbage_next(fake: FakeUpstream, client: httpx.AsyncClient) -> None:
    fake.garbage_next(2)
    response = await client.post("/v1/chat/completions", json=CHAT)
    assert response.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        response.json()
    data = await stream_sse(client, "/v1/chat/completions", {**CHAT, "stream": True})
    assert "[DONE]" not in data
    with pytest.raises(json.JSONDecodeError):
        json.loads(data[0])
    assert (await client.post("/v1/chat/completions", json=CHAT)).json()["object"] == "chat.completion"


async def test_stall_until_client_times_out(fake: FakeUpstream, client: httpx.AsyncClient) -> None:
    fake.stall_next(1)
    with pytest.raises(httpx.ReadTimeout):
        await client.post("/v1/chat/completions", json=CHAT, timeout=0.2)
    with trio.fail_after(5):
        await fake.wait_disconnect()  # the fake noticed the client giving up
    assert fake.in_flight == 0
    assert (await client.post("/v1/chat/completions", json=CHAT)).status_code == 200


async def test_stalled_request_does_not_block_shutdown() -> None:
    with trio.fail_after(5):
        async with open_fake_upstream() as fake, httpx.AsyncClient(timeout=None) as http, trio.open_nursery() as n:
            fake.stall_next(1)
            n.start_soon(partial(http.post, fake.url + "/v1/chat/completions", json=CHAT))
            await fake.wait_in_flight(1)
            n.cancel_scope.cancel()


async def test_cut_stream_after(fake: FakeUpstream, client: httpx.AsyncClient) -> None:
    fake.reply_text = "a b c d e"
    fake.cut_stream_after(2)
    seen: list[str] = []
    with pytest.raises(httpx.RemoteProtocolError):
        async with client.stream("POST", "/v1/chat/completions", json={**CHAT, "stream": True}) as response:
            async for line in response.aiter_lines():
                seen += [line] if line.startswith("data: ") else []
    assert "data: [DONE]" not in seen
    contents = [json.loads(line[6:])["choices"][0]["delta"]["content"] for line in seen]
    assert contents == ["", "a", " b"]  # the role chunk, then two content chunks
    with pytest.raises(httpx.RemoteProtocolError):
        async with client.stream("POST", "/api/chat", json={"model": "l", "messages": []}) as response:
            async for _ in response.aiter_lines():
                pass
    fake.cut_stream_after(None)
    data = await stream_sse(client, "/v1/chat/completions", {**CHAT, "stream": True})
    assert data[-1] == "[DONE]"


async def test_stop_refuses_connections_and_start_reuses_the_port(
    fake: FakeUpstream, client: httpx.AsyncClient
) -> None:
    assert (await client.get("/v1/models")).status_code == 200  # leaves a keep-alive connection
    port = fake.port
    await fake.stop()
    with pytest.raises(httpx.ConnectError):
        await client.get("/v1/models")
    await fake.start()
    assert fake.port == port
    assert (await client.get("/v1/models")).status_code == 200
    fake.refuse_connections()
    with pytest.raises(httpx.ConnectError):
        await client.get("/v1/models")
    fake.accept_connections()
    assert (await client.get("/v1/models")).status_code == 200


async def test_disconnect_detected_when_client_leaves_a_slow_stream(
    fake: FakeUpstream, client: httpx.AsyncClient
) -> None:
    fake.chunk_delay_s = 60  # the fake would sit in a sleep: only watching the socket notices
    with trio.fail_after(5):
        async with client.stream("POST", "/v1/chat/completions", json={**CHAT, "stream": True}) as response:
            async for line in response.aiter_lines():
                assert line.startswith("data: ")
                break
        await fake.wait_disconnect()
    assert fake.disconnects == 1 and fake.in_flight == 0


async def test_chunk_delay_paces_the_stream(fake: FakeUpstream, client: httpx.AsyncClient) -> None:
    fake.reply_text, fake.chunk_delay_s = "a b", 0.05
    start = trio.current_time()
    data = await stream_sse(client, "/v1/chat/completions", {**CHAT, "stream": True})
    assert data[-1] == "[DONE]" and trio.current_time() - start >= 0.05 * (len(data) - 1)
    assert fake.disconnects == 0


async def test_in_flight_counts_concurrent_calls(fake: FakeUpstream, client: httpx.AsyncClient) -> None:
    fake.stall_next(3)
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            for _ in range(3):
                nursery.start_soon(partial(client.post, "/v1/chat/completions", json=CHAT))
            await fake.wait_in_flight(3)
            assert fake.max_in_flight == 3
            nursery.cancel_scope.cancel()
        await fake.wait_for(lambda: fake.in_flight == 0)
    assert fake.max_in_flight == 3 and fake.disconnects == 3
