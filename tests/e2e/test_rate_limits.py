"""Rate limits end to end: exact across two instances on PostgreSQL + Redis, per process without Redis."""

from __future__ import annotations

import tempfile
from typing import Any

import httpx
import pytest
import trio

from edgeproxy.auth import hash_key
from tests.e2e.conftest import create_key, make_config, openai_model, running_proxy
from tests.e2e.redis_support import RedisSpace, redis_config, redis_space, requires_redis
from tests.fakes import FakeUpstream
from tests.storage.pg import temporary_pg_url

CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


def sqlite_url() -> str:
    return f"sqlite:///{tempfile.mkdtemp(prefix='edgeproxy-test-')}/edgeproxy.db"


def assert_refused(response: httpx.Response) -> None:
    assert response.status_code == 429, response.text
    assert response.json()["error"]["type"] == "rate_limit_error"
    assert int(response.headers["retry-after"]) >= 1


@pytest.mark.postgres
@pytest.mark.redis
@requires_redis
async def test_rpm_limit_is_exact_across_two_instances(fake: FakeUpstream) -> None:
    with temporary_pg_url() as url, redis_space() as space:
        key = create_key(url, "sk-rpm-six-000000000001", key_alias="six", rpm_limit=6)
        config = redis_config([openai_model("m", fake)], space, cache=False, database_url=url)
        async with (
            running_proxy(config) as first,
            running_proxy(config) as second,
            first.client(key) as a,
            second.client(key) as b,
        ):
            responses: list[httpx.Response] = []

            async def ask(client: httpx.AsyncClient) -> None:
                responses.append(await client.post("/v1/chat/completions", json=CHAT))

            async with trio.open_nursery() as nursery:  # all at once, alternating instances
                for i in range(12):
                    nursery.start_soon(ask, (a, b)[i % 2])
            later = await b.post("/v1/chat/completions", json=CHAT)
    ok = [r for r in responses if r.status_code == 200]
    refused = [r for r in responses if r.status_code != 200]
    assert len(ok) == 6 and len(refused) == 6
    for response in refused:
        assert_refused(response)
        assert "six" in response.json()["error"]["message"]
        assert response.headers["x-ratelimit-remaining-requests"] == "0"
    assert sorted(int(r.headers["x-ratelimit-remaining-requests"]) for r in ok) == [0, 1, 2, 3, 4, 5]
    assert all(r.headers["x-ratelimit-limit-requests"] == "6" for r in ok)
    assert all(r.headers["x-ratelimit-reset-requests"].endswith("s") for r in ok)
    assert_refused(later)
    assert len(fake.requests) == 6


@pytest.mark.postgres
@pytest.mark.redis
@requires_redis
async def test_a_block_on_one_instance_is_refused_by_the_other_at_once() -> None:
    demo = {"model_name": "demo", "litellm_params": {"model": "mock/demo"}}
    hello = {"model": "demo", "messages": [{"role": "user", "content": "hi"}]}
    with temporary_pg_url() as url, redis_space() as space:
        config = redis_config([demo], space, cache=False, database_url=url)
        async with running_proxy(config) as first, running_proxy(config) as second, first.client() as admin:
            key = (await admin.post("/key/generate", json={"key_alias": "shared"})).json()["key"]
            async with second.client(key) as on_second:
                assert (await on_second.post("/v1/chat/completions", json=hello)).status_code == 200
                assert (await admin.post("/key/block", json={"key": key})).status_code == 200
                # Pub/sub delivers the change to both instances at once; the other one applies it within
                # milliseconds (the change poller alone needs about a second): allow 0.5 s on a loaded machine.
                refused = await refused_within(on_second, hello, 0.5)
                assert (await admin.post("/key/unblock", json={"key": key})).status_code == 200
                allowed = await accepted_within(on_second, hello, 0.5)
    assert refused.status_code == 401 and "blocked" in refused.json()["error"]["message"]
    assert allowed.status_code == 200


@pytest.mark.redis
@requires_redis
async def test_parallel_slots_are_shared_and_freed_when_a_client_leaves(fake: FakeUpstream) -> None:
    with redis_space() as space:
        config = redis_config([openai_model("m", fake)], space, cache=False)
        url = config.general.database_url
        assert url is not None
        key = create_key(url, "sk-parallel-one-0000001", max_parallel_requests=1)
        slots = f"{space.prefix}:{{limits}}:key:{hash_key(key)}:parallel"
        fake.chunk_delay_s = 0.2  # a stream that holds its slot for a while
        async with (
            running_proxy(config) as first,
            running_proxy(config) as second,
            first.client(key) as a,
            second.client(key) as b,
        ):
            body = {**CHAT, "stream": True}
            async with a.stream("POST", "/v1/chat/completions", json=body) as streaming:
                assert streaming.status_code == 200
                received = streaming.aiter_bytes()  # held: dropping it would close the stream early
                await received.__anext__()  # the stream is running: its slot is taken
                refused = await b.post("/v1/chat/completions", json=CHAT)
                await received.aclose()
            # We left mid-stream: the proxy frees the slot in its finally (a condition to wait for).
            with space.client() as r, trio.fail_after(5):
                while r.zcard(slots):
                    await trio.sleep(0.02)
            fake.chunk_delay_s = 0.0
            allowed = await b.post("/v1/chat/completions", json=CHAT)
    assert_refused(refused)
    assert "max_parallel_requests" in refused.json()["error"]["message"]
    assert allowed.status_code == 200


@pytest.mark.redis
@requires_redis
async def test_a_slot_freed_after_the_answer_is_free_for_the_next_request(fake: FakeUpstream) -> None:
    """Settlements leave after the answer (RedisBackend.defer), but ahead of the instance's next admission."""
    with redis_space() as space:
        config = redis_config([openai_model("m", fake)], space, cache=False)
        url = config.general.database_url
        assert url is not None
        key = create_key(url, "sk-parallel-seq-0000001", max_parallel_requests=1, tpm_limit=1_000_000)
        slots = f"{space.prefix}:{{limits}}:key:{hash_key(key)}:parallel"
        async with running_proxy(config) as proxy, proxy.client(key) as client:
            answers = [await client.post("/v1/chat/completions", json=CHAT) for _ in range(20)]
        with space.client() as r:  # the proxy has stopped: what was still deferred went out before it did
            held = r.zcard(slots)
    assert [a.status_code for a in answers] == [200] * 20
    assert held == 0


@pytest.mark.redis
@requires_redis
async def test_tpm_counts_tokens_after_each_call(fake: FakeUpstream) -> None:
    with redis_space() as space:
        config = redis_config([openai_model("m", fake)], space, cache=False)
        url = config.general.database_url
        assert url is not None
        key = create_key(url, "sk-tpm-twenty-000000001", tpm_limit=20)  # each call uses 10 + 5 tokens
        async with running_proxy(config) as proxy, proxy.client(key) as client:
            answers = [await client.post("/v1/chat/completions", json=CHAT) for _ in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 429]
    assert [a.headers["x-ratelimit-remaining-tokens"] for a in answers] == ["20", "5", "0"]
    assert answers[0].headers["x-ratelimit-limit-tokens"] == "20"
    assert "tpm_limit" in answers[2].json()["error"]["message"]


async def test_limits_without_redis_are_per_process_for_keys_users_and_teams(fake: FakeUpstream) -> None:
    url = sqlite_url()
    config = make_config([openai_model("m", fake)], general_settings={"database_url": url})
    assert config.redis is None
    two = create_key(url, "sk-local-rpm-two-000001", rpm_limit=2)
    user_fields: dict[str, Any] = {"rpm_limit": 1}
    first_of_user = create_key(url, "sk-local-user-0000001", user_id="u1", user_fields=user_fields)
    second_of_user = create_key(url, "sk-local-user-0000002", user_id="u1")
    async with running_proxy(config) as proxy:
        async with proxy.client(two) as client:
            codes = [(await client.post("/v1/chat/completions", json=CHAT)).status_code for _ in range(3)]
        async with proxy.client(first_of_user) as one, proxy.client(second_of_user) as other:
            assert (await one.post("/v1/chat/completions", json=CHAT)).status_code == 200
            by_user = await other.post("/v1/chat/completions", json=CHAT)
        async with proxy.client() as master:  # the master key has no limits
            unlimited = [(await master.post("/v1/chat/completions", json=CHAT)) for _ in range(3)]
    assert codes == [200, 200, 429]
    assert_refused(by_user)
    assert "user u1" in by_user.json()["error"]["message"]
    assert all(r.status_code == 200 and "x-ratelimit-limit-requests" not in r.headers for r in unlimited)


@pytest.mark.redis
@requires_redis
async def test_errors_of_a_limited_key_carry_the_limit_headers(fake: FakeUpstream) -> None:
    space: RedisSpace
    with redis_space() as space:
        config = redis_config([openai_model("m", fake)], space, cache=False, router_settings={"num_retries": 0})
        url = config.general.database_url
        assert url is not None
        key = create_key(url, "sk-limited-errors-00001", rpm_limit=10)
        fake.fail_next(1, status=500)
        async with running_proxy(config) as proxy, proxy.client(key) as client:
            failed = await client.post("/v1/chat/completions", json=CHAT)
    assert failed.status_code >= 500
    assert failed.headers["x-ratelimit-remaining-requests"] == "9"


async def accepted_within(client: httpx.AsyncClient, body: dict[str, object], seconds: float) -> httpx.Response:
    """The first 200 answer within `seconds` (or the last refusal): the unblock travels like the block."""
    with trio.move_on_after(seconds):
        while (response := await client.post("/v1/chat/completions", json=body)).status_code != 200:
            await trio.sleep(0.01)
    return response


async def refused_within(client: httpx.AsyncClient, body: dict[str, object], seconds: float) -> httpx.Response:
    """The first non-200 answer within `seconds` (or the last 200): a bounded poll, not a sleep."""
    with trio.move_on_after(seconds):
        while (response := await client.post("/v1/chat/completions", json=body)).status_code == 200:
            await trio.sleep(0.01)
    return response
