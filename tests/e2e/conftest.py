"""The real server on a real socket, driven by httpx and the openai client, in front of fake upstreams."""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any

import httpx
import openai
import pytest
import trio

from edgeproxy.config import Config, parse_config
from edgeproxy.server import serve
from tests.fakes import FakeUpstream, open_fake_upstream

MASTER_KEY = "sk-master-test-0123456789"


def make_config(models: list[dict[str, Any]], **sections: dict[str, Any]) -> Config:
    """A config for one test; its SQLite database lives in a fresh temporary directory unless given."""
    database = f"sqlite:///{tempfile.mkdtemp(prefix='edgeproxy-test-')}/edgeproxy.db"
    general = {"master_key": MASTER_KEY, "database_url": database, **sections.pop("general_settings", {})}
    return parse_config({"model_list": models, "general_settings": general, **sections}, env={})


def openai_model(name: str, fake: FakeUpstream, **params: Any) -> dict[str, Any]:
    return {
        "model_name": name,
        "litellm_params": {"model": "openai/fake-model", "api_base": fake.openai_base, **params},
    }


def ollama_model(name: str, fake: FakeUpstream, **params: Any) -> dict[str, Any]:
    return {"model_name": name, "litellm_params": {"model": "ollama/llama3.2:3b", "api_base": fake.url, **params}}


def anthropic_model(name: str, fake: FakeUpstream, **params: Any) -> dict[str, Any]:
    return {
        "model_name": name,
        "litellm_params": {
            "model": "anthropic/claude-sonnet-4-5",
            "api_base": fake.url,
            "api_key": "sk-ant-provider-secret",
            **params,
        },
    }


@dataclass
class Proxy:
    url: str
    stop: trio.Event

    def client(self, key: str | None = MASTER_KEY, headers: dict[str, str] | None = None) -> httpx.AsyncClient:
        auth = {"authorization": f"Bearer {key}"} if key else {}
        return httpx.AsyncClient(base_url=self.url, headers={**auth, **(headers or {})}, timeout=30)

    def openai(self, key: str = MASTER_KEY) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(base_url=self.url + "/v1", api_key=key, max_retries=0, timeout=30)


@asynccontextmanager
async def running_proxy(config: Config) -> AsyncIterator[Proxy]:
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(partial(serve, config, "127.0.0.1", 0, stop=stop))
        try:
            yield Proxy(binds[0], stop)
        finally:
            stop.set()


@pytest.fixture
async def fake() -> AsyncIterator[FakeUpstream]:
    async with open_fake_upstream() as upstream:
        yield upstream


def create_key(database_url: str, key: str, **fields: Any) -> str:
    """Put a virtual key (and its user/team if named) straight into storage, as an admin tool would."""
    from edgeproxy.auth import hash_key
    from storage import Storage

    with Storage.open(database_url) as storage:
        storage.migrate()
        if fields.get("user_id") and storage.users.get(fields["user_id"]) is None:
            storage.users.create({"user_id": fields["user_id"], **fields.pop("user_fields", {})})
        fields.pop("user_fields", None)
        if fields.get("team_id") and storage.teams.get(fields["team_id"]) is None:
            storage.teams.create({"team_id": fields["team_id"], **fields.pop("team_fields", {})})
            if fields.get("user_id"):
                storage.teams.add_member(fields["team_id"], fields["user_id"], "user", None)
        fields.pop("team_fields", None)
        storage.keys.create({"token": hash_key(key), "key_name": f"sk-...{key[-4:]}", **fields})
    return key
