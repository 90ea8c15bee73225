"""Config reloads in process: the swap, the refused file, old clients closed only once idle."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

import pytest
import trio
import yaml

from edgeproxy.config import load_config
from edgeproxy.gateway import open_gateway
from edgeproxy.reload import Reloader
from edgeproxy.server import _DrainTracker


def write(path: Path, models: list[dict[str, Any]], **router: Any) -> None:
    database = f"sqlite:///{tempfile.mkdtemp(prefix='edgeproxy-test-')}/r.db"
    config = {"model_list": models, "general_settings": {"master_key": "sk-m", "database_url": database}}
    if router:
        config["router_settings"] = router
    path.write_text(yaml.safe_dump(config))


def mock(name: str) -> dict[str, Any]:
    return {"model_name": name, "litellm_params": {"model": "mock/x"}}


def closed(upstreams: Any) -> bool:
    return bool(upstreams.closed)


async def test_reload_swaps_models_and_closes_old_clients_once_idle(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "config.yaml"
    write(path, [mock("a")])
    async with open_gateway(load_config(path)) as gw, trio.open_nursery() as nursery:
        idle = trio.Event()
        reloader = Reloader(gw, retire=lambda: idle)
        await nursery.start(reloader.serve)
        old_upstreams, old_router = gw.upstreams, gw.router
        write(path, [mock("a"), mock("b")], model_group_alias={"gpt-4o": "b"})
        with caplog.at_level(logging.INFO, logger="edgeproxy.reload"):
            assert await reloader.reload()
        assert gw.router.group_names() == ["a", "b"] and gw.serving.calls is gw.calls
        assert gw.router.state is old_router.state  # health and cooldowns carry over
        assert gw.keys.aliases.resolve("gpt-4o") == "b"
        assert "config reloaded from" in caplog.text and "added b" in caplog.text
        await trio.sleep(0.05)
        assert not closed(old_upstreams)  # a request from before the reload may still use them
        idle.set()
        await trio.sleep(0.05)
        assert closed(old_upstreams) and not closed(gw.upstreams)

        path.write_text("model_list: [{model_name: c, litellm_params: {model: nope/x}}]\n")
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="edgeproxy.reload"):
            assert not await reloader.reload()
        assert gw.router.group_names() == ["a", "b"]
        refused = [r.getMessage() for r in caplog.records]
        assert len(refused) == 1 and "model_list[0].litellm_params.model" in refused[0]
        nursery.cancel_scope.cancel()


async def test_drain_tracker_generations() -> None:
    release = trio.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await release.wait()

    tracker = _DrainTracker(app)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(tracker, {"type": "http"}, None, None)
        await trio.sleep(0.01)
        first = tracker.retire_generation()
        nursery.start_soon(tracker, {"type": "http"}, None, None)  # a request after the reload
        await trio.sleep(0.01)
        assert not first.is_set() and tracker.in_flight == 2
        release.set()
        await trio.sleep(0.01)
        assert first.is_set()
    assert tracker.retire_generation().is_set()  # nothing in flight: idle at once
