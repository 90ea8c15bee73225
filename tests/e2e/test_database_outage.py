"""The database dies mid-run: cached keys keep working, spend waits (then spills to the journal), and every
record is written once the database is back."""

from __future__ import annotations

import pytest
import trio

from edgeproxy.auth import hash_key
from storage import Storage
from tests.e2e import private_pg
from tests.e2e.conftest import create_key, make_config, openai_model, running_proxy
from tests.fakes import FakeUpstream

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.skipif(not private_pg.available(), reason="needs PostgreSQL server binaries"),
]
MESSAGES = [{"role": "user", "content": "hello"}]


async def test_requests_flow_and_spend_survives_a_database_outage(fake: FakeUpstream) -> None:
    with private_pg.private_postgres() as pg:
        key = create_key(pg.url, "sk-outage-test-key-0001", user_id="ann")
        model = openai_model("m", fake, input_cost_per_token=0.001, output_cost_per_token=0.002)
        config = make_config(
            [model], general_settings={"database_url": pg.url, "proxy_batch_write_at": 0.05, "key_cache_ttl": 0.2}
        )
        async with running_proxy(config) as proxy, proxy.client(key) as client:
            first = await client.post("/v1/chat/completions", json={"model": "m", "messages": MESSAGES})
            assert first.status_code == 200
            await trio.to_thread.run_sync(pg.stop)
            during = [
                (await client.post("/v1/chat/completions", json={"model": "m", "messages": MESSAGES})).status_code
                for _ in range(10)
            ]
            async with proxy.client() as admin:
                ready = await admin.get("/health/readiness")
                write = await admin.post("/key/generate", json={"key_alias": "during-outage"})
            await trio.to_thread.run_sync(pg.start)
            expected = 11 * (10 * 0.001 + 5 * 0.002)
            with trio.fail_after(20):
                while True:
                    with Storage.open(pg.url) as storage:
                        try:
                            _, total = storage.spend.logs(api_key=hash_key(key))
                        except Exception:
                            total = 0
                    if total == 11:
                        break
                    await trio.sleep(0.1)
        assert during == [200] * 10  # the key was cached: no request failed because of the database
        assert ready.status_code == 503 and ready.json()["db"] == "unreachable"
        assert write.status_code == 503
        assert "database is unavailable" in write.json()["error"]["message"]
        with Storage.open(pg.url) as storage:
            assert storage.keys.get(hash_key(key))["spend"] == pytest.approx(expected)  # type: ignore[index]
            assert storage.users.get("ann")["spend"] == pytest.approx(expected)  # type: ignore[index]
