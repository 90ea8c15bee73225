"""Two server processes' worth of state on one PostgreSQL: each sees the other's keys and changes."""

from __future__ import annotations

import pytest
import trio

from tests.e2e.conftest import make_config, running_proxy
from tests.storage.pg import temporary_pg_url

pytestmark = pytest.mark.postgres
DEMO = {"model_name": "demo", "litellm_params": {"model": "mock/demo"}}
HELLO = {"model": "demo", "messages": [{"role": "user", "content": "hi"}]}


async def test_instances_share_keys_and_blocks() -> None:
    with temporary_pg_url() as url:
        config = make_config([DEMO], general_settings={"database_url": url})
        async with running_proxy(config) as first, running_proxy(config) as second:
            async with first.client() as admin:
                created = (await admin.post("/key/generate", json={"key_alias": "shared"})).json()
            key = created["key"]
            async with first.client(key) as on_first, second.client(key) as on_second:
                assert (await on_second.post("/v1/chat/completions", json=HELLO)).status_code == 200
                assert (await on_first.post("/v1/chat/completions", json=HELLO)).status_code == 200
                async with first.client() as admin:
                    assert (await admin.post("/key/block", json={"key": key})).status_code == 200
                # This instance applies its own change at once...
                assert (await on_first.post("/v1/chat/completions", json=HELLO)).status_code == 401
                # ...and the other notices it through the change poller, within about a second.
                with trio.fail_after(5):
                    while (await on_second.post("/v1/chat/completions", json=HELLO)).status_code == 200:
                        await trio.sleep(0.1)
                refused = await on_second.post("/v1/chat/completions", json=HELLO)
        assert refused.status_code == 401
        assert "blocked" in refused.json()["error"]["message"]
