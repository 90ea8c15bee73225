"""The response cache end to end, on the real Redis (and the local LRU): hits, streams, controls, TTL, sharing."""

from __future__ import annotations

import json
import tempfile
from typing import Any

import httpx
import pytest
import trio

from edgeproxy.config import parse_config
from storage import Storage
from tests.e2e.conftest import MASTER_KEY, create_key, openai_model, running_proxy
from tests.e2e.redis_support import RedisSpace, redis_config, redis_space, requires_redis, stored_entries
from tests.fakes import DEFAULT_REPLY, FakeUpstream

pytestmark = [pytest.mark.redis, requires_redis]
CHAT = {"model": "m", "messages": [{"role": "user", "content": "What is the capital of France?"}]}


@pytest.fixture
def space() -> Any:
    with redis_space() as found:
        yield found


def llm_calls(fake: FakeUpstream) -> int:
    return sum(1 for r in fake.requests if r.path.endswith(("/chat/completions", "/completions", "/embeddings")))


def sse_events(text: str) -> list[Any]:
    events = [line.removeprefix("data: ") for line in text.split("\n\n") if line.startswith("data: ")]
    return [e if e == "[DONE]" else json.loads(e) for e in events]


async def test_repeat_is_answered_from_redis_with_cache_key_and_zero_cost(
    fake: FakeUpstream, space: RedisSpace
) -> None:
    model = openai_model("m", fake, input_cost_per_token=0.001, output_cost_per_token=0.002)
    config = redis_config([model], space, general_settings={"proxy_batch_write_at": 0.05})
    async with running_proxy(config) as proxy, proxy.client() as client:
        first = await client.post("/v1/chat/completions", json=CHAT)
        second = await client.post("/v1/chat/completions", json=CHAT)
        third = await client.post("/v1/chat/completions", json={**CHAT, "temperature": 1.0})
        fourth = await client.post("/v1/chat/completions", json={**CHAT, "temperature": 1})
    assert first.status_code == second.status_code == 200
    assert llm_calls(fake) == 2  # the first, and the first with a temperature
    assert "x-litellm-cache-key" not in first.headers
    key = second.headers["x-litellm-cache-key"]
    assert "x-litellm-cache-key" not in third.headers  # temperature changes the answer: a miss...
    assert len(key) == 64 and fourth.headers["x-litellm-cache-key"] != key  # ...and 1 is the same number as 1.0
    assert second.json()["choices"] == first.json()["choices"]
    assert second.json()["choices"][0]["message"]["content"] == DEFAULT_REPLY
    assert float(second.headers["x-litellm-response-cost"]) == 0.0
    with space.client() as r:
        assert r.exists(f"{space.namespace}:{key}")
    with Storage.open(config.general.database_url) as storage:
        logs, _ = storage.spend.logs(size=10)
    hits = [row for row in logs if row["cache_hit"]]
    assert len(hits) == 2 and all(row["cost"] == 0 for row in hits)
    assert sum(row["cost"] for row in logs) > 0


async def test_streamed_repeat_is_replayed_as_sse(fake: FakeUpstream, space: RedisSpace) -> None:
    config = redis_config([openai_model("m", fake)], space)
    body = {**CHAT, "stream": True}
    async with running_proxy(config) as proxy, proxy.client() as client:
        first = await client.post("/v1/chat/completions", json=body)
        second = await client.post("/v1/chat/completions", json={**body, "stream_options": {"include_usage": True}})
        plain = await client.post("/v1/chat/completions", json=CHAT)  # not a stream: its own entry
    assert llm_calls(fake) == 2
    assert second.headers["content-type"].startswith("text/event-stream")
    assert "x-litellm-cache-key" in second.headers
    original, replayed = sse_events(first.text), sse_events(second.text)
    assert replayed[-1] == "[DONE]" and replayed[-2]["usage"]["completion_tokens"] == 5
    assert replayed[:-2] == original[:-1]  # the same chunks, then the usage chunk asked for, then [DONE]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in replayed[:-2] if c["choices"])
    assert text == DEFAULT_REPLY
    assert "x-litellm-cache-key" not in plain.headers


async def test_openai_client_reads_a_replayed_stream(fake: FakeUpstream, space: RedisSpace) -> None:
    config = redis_config([openai_model("m", fake)], space)
    async with running_proxy(config) as proxy:
        client = proxy.openai()
        texts = []
        for _ in range(2):
            stream = await client.chat.completions.create(model="m", messages=CHAT["messages"], stream=True)
            texts.append("".join([c.choices[0].delta.content or "" async for c in stream if c.choices]))
    assert texts == [DEFAULT_REPLY, DEFAULT_REPLY]
    assert llm_calls(fake) == 1


async def test_cache_controls(fake: FakeUpstream, space: RedisSpace) -> None:
    config = redis_config([openai_model("m", fake)], space)
    async with running_proxy(config) as proxy, proxy.client() as client:

        async def ask(question: str, **cache: Any) -> httpx.Response:
            body = {"model": "m", "messages": [{"role": "user", "content": question}]}
            response = await client.post("/v1/chat/completions", json={**body, "cache": cache} if cache else body)
            assert response.status_code == 200, response.text
            return response

        await ask("no-store")
        assert "x-litellm-cache-key" in (await ask("no-store")).headers
        await ask("never stored", **{"no-store": True})
        assert "x-litellm-cache-key" not in (await ask("never stored")).headers  # that one went upstream
        calls = llm_calls(fake)
        assert "x-litellm-cache-key" not in (await ask("no-store", **{"no-cache": True})).headers
        assert llm_calls(fake) == calls + 1  # no-cache: upstream even though an entry exists
        # The cache controls never reach the upstream.
        assert all("cache" not in (r.json or {}) for r in fake.requests)

        await ask("namespaced", namespace=f"{space.namespace}.other")
        default_ns = await ask("namespaced")  # other namespace: a miss, stored in the default one now
        assert "x-litellm-cache-key" not in default_ns.headers
        other = await ask("namespaced", namespace=f"{space.namespace}.other")
        assert other.headers["x-litellm-cache-key"].startswith(f"{space.namespace}.other:")

        await ask("short ttl", ttl=30)
        entries = await stored_entries(space, 4)  # "no-store", "never stored" (asked again), "namespaced", "short ttl"
        with space.client() as r:
            ttls = {k: r.pttl(k) for k in entries}
        assert any(0 < ttl <= 30_000 for ttl in ttls.values())  # ttl: stored for 30 s...
        assert any(590_000 < ttl <= 600_000 for ttl in ttls.values())  # ...others for the configured 600 s

        await ask("aged")
        assert "x-litellm-cache-key" in (await ask("aged", **{"s-maxage": 60})).headers
        calls = llm_calls(fake)
        assert "x-litellm-cache-key" not in (await ask("aged", **{"s-maxage": 0})).headers  # any age is too old
        assert llm_calls(fake) == calls + 1


async def test_entries_expire_after_their_ttl(fake: FakeUpstream, space: RedisSpace) -> None:
    # Long enough that a loaded machine still reads the entry before it expires, short enough for a test.
    config = redis_config([openai_model("m", fake)], space, cache_params={"ttl": 2})
    async with running_proxy(config) as proxy, proxy.client() as client:
        first = await client.post("/v1/chat/completions", json=CHAT)
        assert first.status_code == 200
        (key,) = await stored_entries(space)
        with space.client() as r:
            assert 0 < r.pttl(key) <= 2000  # Redis itself drops it after the ttl
            hit = await client.post("/v1/chat/completions", json=CHAT)
            assert "x-litellm-cache-key" in hit.headers
            with trio.fail_after(10):  # bounded poll for the expiry Redis computes
                while r.exists(key):
                    await trio.sleep(0.05)
        after = await client.post("/v1/chat/completions", json=CHAT)
    assert "x-litellm-cache-key" not in after.headers
    assert llm_calls(fake) == 2


async def test_allowed_cache_controls_limit_what_a_key_may_ask(fake: FakeUpstream, space: RedisSpace) -> None:
    config = redis_config([openai_model("m", fake)], space)
    url = config.general.database_url
    assert url is not None
    key = create_key(url, "sk-cache-controls-0001", allowed_cache_controls=["no-cache"])
    async with running_proxy(config) as proxy, proxy.client(key) as client:
        allowed = await client.post("/v1/chat/completions", json={**CHAT, "cache": {"no-cache": True}})
        refused = await client.post("/v1/chat/completions", json={**CHAT, "cache": {"ttl": 5}})
        malformed = await client.post("/v1/chat/completions", json={**CHAT, "cache": "no-cache"})
    assert allowed.status_code == 200
    assert refused.status_code == 403 and refused.json()["error"]["type"] == "permission_error"
    assert malformed.status_code == 400 and malformed.json()["error"]["param"] == "cache"


async def test_two_proxies_share_the_cache(fake: FakeUpstream, space: RedisSpace) -> None:
    config = redis_config([openai_model("m", fake)], space)
    async with (
        running_proxy(config) as first,
        running_proxy(config) as second,
        first.client() as a,
        second.client() as b,
    ):
        # A store leaves within a few milliseconds of its answer (RedisBackend.defer): the other instance finds
        # the entry once Redis has it.
        assert (await a.post("/v1/chat/completions", json=CHAT)).status_code == 200
        await stored_entries(space, 1)
        answer = await b.post("/v1/chat/completions", json=CHAT)
        embedded = [await a.post("/v1/embeddings", json={"model": "m", "input": "hi"})]
        await stored_entries(space, 2)
        embedded.append(await b.post("/v1/embeddings", json={"model": "m", "input": "hi"}))
        texts = [await b.post("/v1/completions", json={"model": "m", "prompt": "Say hi"})]
        await stored_entries(space, 3)
        texts.append(await a.post("/v1/completions", json={"model": "m", "prompt": "Say hi"}))
    assert "x-litellm-cache-key" in answer.headers
    assert "x-litellm-cache-key" in embedded[1].headers and embedded[1].json()["data"] == embedded[0].json()["data"]
    assert "x-litellm-cache-key" in texts[1].headers
    assert llm_calls(fake) == 3  # one chat, one embedding, one text completion


async def test_admin_routes_ping_delete_and_flush_only_the_namespace(fake: FakeUpstream, space: RedisSpace) -> None:
    config = redis_config([openai_model("m", fake)], space)
    outsider = f"{space.prefix}:not-cache"
    with space.client() as r:
        r.set(outsider, b"keep me")
    async with running_proxy(config) as proxy, proxy.client() as admin:
        ping = await admin.get("/cache/ping")
        assert ping.status_code == 200
        assert ping.json()["status"] == "healthy" and ping.json()["cache_type"] == "redis"
        assert (await admin.get("/health/readiness")).json()["cache"] == "connected"
        await admin.post("/v1/chat/completions", json=CHAT)
        key = (await admin.post("/v1/chat/completions", json=CHAT)).headers["x-litellm-cache-key"]
        deleted = await admin.post("/cache/delete", json={"keys": [key]})
        assert deleted.json() == {"status": "success", "deleted": 1}
        assert "x-litellm-cache-key" not in (await admin.post("/v1/chat/completions", json=CHAT)).headers
        for question in ("a", "b", "c"):
            await admin.post(
                "/v1/chat/completions", json={"model": "m", "messages": [{"role": "user", "content": question}]}
            )
        flushed = await admin.post("/cache/flushall")
        assert flushed.status_code == 200 and flushed.json()["deleted"] == 4
        bad = await admin.post("/cache/delete", json={"keys": ["not-a-key"]})
        async with proxy.client("sk-not-an-admin") as stranger:
            assert (await stranger.get("/cache/ping")).status_code == 401
    assert bad.status_code == 400
    with space.client() as r:
        assert r.get(outsider) == b"keep me"
        assert not list(r.scan_iter(match=f"{space.namespace}:*", count=10_000))


async def test_local_cache_serves_repeats_without_redis(fake: FakeUpstream) -> None:
    database = f"sqlite:///{tempfile.mkdtemp(prefix='edgeproxy-test-')}/edgeproxy.db"
    raw = {
        "model_list": [openai_model("m", fake)],
        "general_settings": {"master_key": MASTER_KEY, "database_url": database},
        "litellm_settings": {"cache": True, "cache_params": {"type": "local", "ttl": 60}},
    }
    config = parse_config(raw, env={})
    assert config.redis is None
    async with running_proxy(config) as proxy, proxy.client() as client:
        answers = [await client.post("/v1/chat/completions", json=CHAT) for _ in range(3)]
        ping = await client.get("/cache/ping")
        ready = await client.get("/health/readiness")
    assert [("x-litellm-cache-key" in a.headers) for a in answers] == [False, True, True]
    assert llm_calls(fake) == 1
    assert ping.json()["cache_type"] == "local"
    assert ready.json()["cache"] == "local" and "redis" not in ready.json()


async def test_no_cache_configured(fake: FakeUpstream) -> None:
    database = f"sqlite:///{tempfile.mkdtemp(prefix='edgeproxy-test-')}/edgeproxy.db"
    raw = {
        "model_list": [openai_model("m", fake)],
        "general_settings": {"master_key": MASTER_KEY, "database_url": database},
    }
    async with running_proxy(parse_config(raw, env={})) as proxy, proxy.client() as client:
        for _ in range(2):
            assert (await client.post("/v1/chat/completions", json={**CHAT, "cache": {"ttl": 5}})).status_code == 200
        ping = await client.get("/cache/ping")
        ready = await client.get("/health/readiness")
    assert llm_calls(fake) == 2
    assert all("cache" not in (r.json or {}) for r in fake.requests)
    assert ping.status_code == 503
    assert ready.json()["cache"] == "not configured"
