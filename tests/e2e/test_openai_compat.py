"""Chat, streams, completions, embeddings and models through the real server for each wire format."""

from __future__ import annotations

import json

from tests.e2e.conftest import (
    MASTER_KEY,
    anthropic_model,
    make_config,
    ollama_model,
    openai_model,
    running_proxy,
)
from tests.fakes import FakeUpstream

HELLO = [{"role": "user", "content": "Say hello"}]


async def test_chat_through_openai_compatible_upstream(fake: FakeUpstream) -> None:
    fake.reply_text = "Hi from the fake"
    async with running_proxy(make_config([openai_model("mlx", fake)])) as proxy:
        raw = await proxy.openai().chat.completions.with_raw_response.create(model="mlx", messages=HELLO)
    reply = raw.parse()
    assert reply.choices[0].message.content == "Hi from the fake"
    assert reply.model == "mlx"
    assert reply.usage is not None and reply.usage.total_tokens == sum(fake.usage)
    assert raw.headers["x-litellm-model-group"] == "mlx"
    assert raw.headers["x-litellm-model-id"] == "mlx-0"
    sent = fake.requests[-1]
    assert sent.path == "/v1/chat/completions"
    assert sent.json["model"] == "fake-model"  # the provider prefix is stripped


async def test_stream_without_usage_request_hides_usage_chunk(fake: FakeUpstream) -> None:
    fake.reply_text = "one two three four"
    async with running_proxy(make_config([openai_model("mlx", fake)])) as proxy:
        stream = await proxy.openai().chat.completions.create(model="mlx", messages=HELLO, stream=True)
        chunks = [chunk async for chunk in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "one two three four"
    assert all(c.usage is None for c in chunks)
    assert all(c.model == "mlx" for c in chunks)
    # We always ask the upstream for usage, to bill the call.
    assert fake.requests[-1].json["stream_options"]["include_usage"] is True


async def test_stream_with_include_usage_ends_with_usage_chunk(fake: FakeUpstream) -> None:
    async with running_proxy(make_config([openai_model("mlx", fake)])) as proxy:
        stream = await proxy.openai().chat.completions.create(
            model="mlx", messages=HELLO, stream=True, stream_options={"include_usage": True}
        )
        chunks = [chunk async for chunk in stream]
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == fake.usage


async def test_sse_framing_is_exact(fake: FakeUpstream) -> None:
    fake.reply_text = "a b"
    async with running_proxy(make_config([openai_model("mlx", fake)])) as proxy, proxy.client() as client:
        response = await client.post("/v1/chat/completions", json={"model": "mlx", "messages": HELLO, "stream": True})
    assert response.headers["content-type"].startswith("text/event-stream")
    events = response.text.split("\n\n")
    assert events[-1] == "" and events[-2] == "data: [DONE]"
    for event in events[:-2]:
        assert event.startswith("data: ")
        assert json.loads(event[len("data: ") :])["object"] == "chat.completion.chunk"


async def test_ollama_chat_stream_and_embeddings(fake: FakeUpstream) -> None:
    fake.reply_text = "llama says hi"
    fake.usage = (7, 3)
    config = make_config([ollama_model("qwen-dell", fake)])
    async with running_proxy(config) as proxy:
        client = proxy.openai()
        reply = await client.chat.completions.create(model="qwen-dell", messages=HELLO, max_tokens=50, temperature=0.2)
        stream = await client.chat.completions.create(
            model="qwen-dell", messages=HELLO, stream=True, stream_options={"include_usage": True}
        )
        chunks = [chunk async for chunk in stream]
        embedded = await client.embeddings.create(model="qwen-dell", input=["a", "b"])
    assert reply.choices[0].message.content == "llama says hi"
    assert reply.usage is not None and (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (7, 3)
    chat_request = next(r for r in fake.requests if r.path == "/api/chat")
    assert chat_request.json["options"]["num_predict"] == 50
    assert chat_request.json["options"]["temperature"] == 0.2
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "llama says hi"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 3
    assert len(embedded.data) == 2 and len(embedded.data[0].embedding) > 0
    assert any(r.path == "/api/embed" for r in fake.requests)


async def test_anthropic_chat_and_stream(fake: FakeUpstream) -> None:
    fake.reply_text = "Claude here"
    config = make_config([anthropic_model("claude", fake)])
    messages = [{"role": "system", "content": "Be brief."}, *HELLO]
    async with running_proxy(config) as proxy:
        client = proxy.openai()
        raw = await client.chat.completions.with_raw_response.create(model="claude", messages=messages)
        stream = await client.chat.completions.create(model="claude", messages=messages, stream=True)
        chunks = [chunk async for chunk in stream]
    reply = raw.parse()
    assert reply.choices[0].message.content == "Claude here"
    assert reply.choices[0].finish_reason == "stop"
    sent = fake.requests[0]
    assert sent.path == "/v1/messages"
    assert sent.json["system"] == "Be brief."
    assert all(m["role"] != "system" for m in sent.json["messages"])
    assert sent.json["max_tokens"] > 0
    assert sent.headers["x-api-key"] == "sk-ant-provider-secret"
    assert "sk-ant-provider-secret" not in str(raw.headers)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Claude here"


async def test_completions_and_openai_embeddings(fake: FakeUpstream) -> None:
    fake.reply_text = "completed text"
    async with running_proxy(make_config([openai_model("mlx", fake)])) as proxy:
        client = proxy.openai()
        completion = await client.completions.create(model="mlx", prompt="Once upon")
        embedded = await client.embeddings.create(model="mlx", input="hello")
    assert completion.choices[0].text == "completed text"
    assert len(embedded.data) == 1 and embedded.data[0].embedding
    assert {r.path for r in fake.requests} >= {"/v1/completions", "/v1/embeddings"}


async def test_models_lists_groups(fake: FakeUpstream) -> None:
    config = make_config([openai_model("mlx", fake), openai_model("mlx", fake), ollama_model("qwen-dell", fake)])
    async with running_proxy(config) as proxy:
        models = await proxy.openai().models.list()
    assert sorted(m.id for m in models.data) == ["mlx", "qwen-dell"]


async def test_demo_model_needs_no_llm() -> None:
    config = make_config([{"model_name": "demo", "litellm_params": {"model": "mock/demo"}}])
    async with running_proxy(config) as proxy:
        client = proxy.openai(MASTER_KEY)
        reply = await client.chat.completions.create(model="demo", messages=HELLO)
        stream = await client.chat.completions.create(model="demo", messages=HELLO, stream=True)
        streamed = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    content = reply.choices[0].message.content
    assert content is not None and "Say hello" in content
    assert streamed == content
    assert reply.usage is not None and reply.usage.completion_tokens > 0


async def test_openai_stream_chunks_go_on_as_the_upstream_wrote_them(fake: FakeUpstream) -> None:
    """Sent on, not encoded again: the fake writes JSON with spaces (json.dumps' default), which a second
    encoding (compact) would lose; only the model and the trailing `usage: null` change."""
    fake.reply_text = "one two"
    async with running_proxy(make_config([openai_model("mlx", fake)])) as proxy, proxy.client() as client:
        response = await client.post("/v1/chat/completions", json={"model": "mlx", "messages": HELLO, "stream": True})
    payloads = [event.removeprefix("data: ") for event in response.text.split("\n\n")[:-2]]
    assert len(payloads) == 4  # role, two words, finish
    for payload in payloads:
        chunk = json.loads(payload)
        assert payload == json.dumps(chunk)  # the fake's own formatting, key order included
        assert chunk["model"] == "mlx" and "usage" not in chunk
    assert fake.requests[-1].json["model"] == "fake-model"  # what the upstream's chunks said
