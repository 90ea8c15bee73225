"""SIGHUP: serve the config file's new `model_list` and `router_settings` without dropping a request.

The file is re-read and checked in full; a config that does not load is refused with one log line naming the
field, and the running one stays. A good one gets a new Router and new upstream clients, swapped onto the
gateway in one synchronous step (`Gateway.swap_models`), so no request sees half of each. Requests already
running keep what they hold: the old clients are closed only once every request that started before the swap
has finished (the server's drain tracker tells). The router's state (health, cooldowns, usage) is carried over,
keyed by deployment id, so a deployment that stays keeps its history. Health probes restart on the new list.

Only models and routing change: `general_settings` (database, master key, ...) and `litellm_settings` (cache)
need a restart, and a reload that changes them says so.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

import trio

from edgeproxy.config import Config, ConfigError, load_config
from edgeproxy.router import Router
from edgeproxy.upstream import Upstreams

if TYPE_CHECKING:
    from edgeproxy.gateway import Gateway

log = logging.getLogger("edgeproxy.reload")
# Waits until every request that started before it was called has finished (see server._DrainTracker).
Retire = Callable[[], trio.Event]


class Reloader:
    def __init__(self, gw: Gateway, retire: Retire | None = None) -> None:
        self._gw = gw
        self._retire = retire
        # Size 1: signals arriving while a reload is pending fold into it (it reads the newest file anyway).
        self._send, self._receive = trio.open_memory_channel[None](1)
        self._probes: trio.CancelScope | None = None
        self._nursery: trio.Nursery | None = None
        self.reloads = 0

    def request(self) -> None:
        """Ask for a reload (from the signal watcher; never waits)."""
        with contextlib.suppress(trio.WouldBlock):
            self._send.send_nowait(None)

    async def serve(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the health probes (restarted on each reload) and apply reload requests, until cancelled."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            self._start_probes()
            task_status.started()
            async for _ in self._receive:
                await self.reload()

    async def reload(self) -> bool:
        """Re-read the config file; True when its models are now served."""
        gw = self._gw
        path = gw.config.source
        if not path:
            log.error("reload refused: this server's config did not come from a file")
            return False
        try:
            new = await trio.to_thread.run_sync(load_config, path)
            config = dataclasses.replace(gw.config, deployments=new.deployments, router=new.router)
            router = Router(config, state=gw.router.state)
            upstreams = Upstreams(config.deployments)
        except ConfigError as error:
            log.error("reload refused, still serving the previous config: config error: %s", error)
            return False
        except Exception as error:  # anything else that stops building it: the old config is still good
            log.error("reload refused, still serving the previous config: %s: %s", type(error).__name__, error)
            return False
        _warn_unapplied(gw.config, new)
        before = set(gw.router.group_names())
        old = gw.swap_models(config, router, upstreams)
        idle = self._retire() if self._retire is not None else None
        self._start_probes()
        assert self._nursery is not None
        self._nursery.start_soon(_close_when_idle, old, idle)
        self.reloads += 1
        after = set(router.group_names())
        log.info(
            "config reloaded from %s: %d deployments in %d model groups%s%s",
            path,
            len(config.deployments),
            len(after),
            f"; added {', '.join(sorted(after - before))}" if after - before else "",
            f"; removed {', '.join(sorted(before - after))}" if before - after else "",
        )
        return True

    def _start_probes(self) -> None:
        """(Re)start one probe task per deployment of the current router, on its current upstream clients."""
        if self._probes is not None:
            self._probes.cancel()
            self._probes = None
        general = self._gw.config.general
        if not general.background_health_checks or self._nursery is None:
            return
        scope = self._probes = trio.CancelScope()
        router, probe = self._gw.router, self._gw.upstreams.probe

        async def probe_forever() -> None:
            with scope:
                await router.serve_health_probes(
                    probe, interval_s=general.health_check_interval_s, timeout_s=general.health_check_timeout_s
                )

        self._nursery.start_soon(probe_forever)


async def _close_when_idle(upstreams: Upstreams, idle: trio.Event | None) -> None:
    """Close replaced clients once no request can use them (at shutdown at the latest)."""
    try:
        if idle is not None:
            await idle.wait()
    finally:
        await upstreams.aclose()  # shielded inside


def _warn_unapplied(running: Config, new: Config) -> None:
    changed = [
        name
        for name, old, fresh in (
            ("general_settings", running.general, new.general),
            ("litellm_settings", running.litellm, new.litellm),
            ("the Redis settings", running.redis, new.redis),
        )
        if old != fresh
    ]
    if changed:
        log.warning("reload applies model_list and router_settings only; restart to apply %s", ", ".join(changed))
