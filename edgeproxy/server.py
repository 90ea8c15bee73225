"""`edgeproxy run`: one trio run whose root nursery owns the HTTP server and every background task.

This, `onewrite` (one write per answer) and `h11heads` (response heads checked once) are the only modules that
import hypercorn. Shutdown on SIGTERM/SIGINT: stop accepting, let in-flight requests finish (bounded by
`shutdown_grace`), cancel background tasks, then leave `open_gateway`, which flushes what must not be lost.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import multiprocessing
import os
import shutil
import signal
import sys
import tempfile
import threading
import warnings
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve as hypercorn_serve

from edgeproxy.app import create_app
from edgeproxy.calllog import setup_logging
from edgeproxy.config import Config
from edgeproxy.gateway import open_gateway, open_storage
from edgeproxy.h11heads import install as check_heads_once
from edgeproxy.mallocarenas import limit_malloc_arenas
from edgeproxy.metrics import MULTIPROC_ENV
from edgeproxy.onewrite import install as send_heads_with_bodies

log = logging.getLogger("edgeproxy.server")
# How long a thread holding the GIL may keep it once another thread wants it (Python's default: 5 ms).
GIL_SWITCH_INTERVAL_S = 0.001
SIBLING_WAIT_S = 15.0  # how long a worker ready to listen waits for the others (one may have failed to start)


def _hypercorn_config(config: Config, host: str, port: int, reuse_port: bool) -> HypercornConfig:
    hc = HypercornConfig()
    hc.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    hc.graceful_timeout = config.general.shutdown_grace_s
    hc.accesslog = None  # we log one line per call ourselves, with what matters (no keys)
    hc.errorlog = logging.getLogger("hypercorn.error")
    hc.keep_alive_timeout = 75  # longer than common client pools keep idle connections
    hc.backlog = 2048
    hc.include_server_header = False
    # hypercorn sets SO_REUSEPORT when it believes it runs several workers; each of ours binds its own socket.
    # Its serve() then warns that `workers` has no effect there, which is the point: not for the log.
    hc.workers = 2 if reuse_port else 1
    warnings.filterwarnings("ignore", "The config `workers` has no affect", Warning, "hypercorn.trio")
    return hc


class _Generation:
    """Requests that started between two config reloads; `idle` is set once a retired one has none left."""

    __slots__ = ("idle", "in_flight", "retired")

    def __init__(self) -> None:
        self.in_flight = 0
        self.retired = False
        self.idle = trio.Event()


class _DrainTracker:
    """ASGI middleware counting in-flight HTTP requests, so shutdown waits for them and nothing else.

    hypercorn 0.18's trio worker keeps idle keep-alive connections open until its graceful timeout, so
    relying on it would make every shutdown with a connected client take the whole grace period.
    It also counts them by generation, so a config reload knows when the upstream clients it replaced are idle.
    """

    def __init__(self, app: Any) -> None:
        self.app = app
        self.in_flight = 0
        self._idle = trio.Event()
        self._idle.set()
        self._generation = _Generation()

    def retire_generation(self) -> trio.Event:
        """Start a new generation; the event is set once every request of the previous one has finished."""
        old, self._generation = self._generation, _Generation()
        old.retired = True
        if old.in_flight == 0:
            old.idle.set()
        return old.idle

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        generation = self._generation
        generation.in_flight += 1
        self.in_flight += 1
        if self._idle.is_set():
            self._idle = trio.Event()
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1
            if self.in_flight == 0:
                self._idle.set()
            generation.in_flight -= 1
            if generation.retired and generation.in_flight == 0:
                generation.idle.set()

    async def wait_idle(self) -> None:
        while self.in_flight:
            await self._idle.wait()


# The same signal often arrives twice: systemd signals every process of the unit, a PyInstaller binary's
# launcher forwards what it receives, a terminal's Ctrl-C reaches every worker and their parent. Only a signal
# sent again after this long means "stop now, do not wait for in-flight requests".
REPEAT_SIGNAL_WINDOW_S = 1.0


# SIGHUP reloads model_list and router_settings (edgeproxy/reload.py); Windows has no SIGHUP.
_SIGHUP: int | None = getattr(signal, "SIGHUP", None)


async def _watch_signals(stop: trio.Event, cancel: trio.CancelScope, reload: Callable[[], None] | None = None) -> None:
    first_at: float | None = None
    watched = [signal.SIGTERM, signal.SIGINT] + ([_SIGHUP] if _SIGHUP is not None and reload is not None else [])
    with trio.open_signal_receiver(*watched) as signals:
        async for signum in signals:
            if signum == _SIGHUP and reload is not None:
                log.info("received SIGHUP: reloading model_list and router_settings")
                reload()
            elif first_at is None:
                first_at = trio.current_time()
                log.info("received %s: draining in-flight requests", signal.Signals(signum).name)
                stop.set()
            elif trio.current_time() - first_at >= REPEAT_SIGNAL_WINDOW_S:
                log.warning("signal received again: stopping now (spend is still flushed)")
                cancel.cancel()


async def _drain_then_close(stop: trio.Event, tracker: _DrainTracker, http: trio.CancelScope, grace_s: float) -> None:
    await stop.wait()
    with trio.move_on_after(grace_s) as waited:
        await tracker.wait_idle()
    if waited.cancelled_caught:
        log.warning("shutdown: %d requests still running after %.0f s; closing them", tracker.in_flight, grace_s)
    http.cancel()


async def serve(
    config: Config,
    host: str = "0.0.0.0",
    port: int = 4000,
    *,
    reuse_port: bool = False,
    stop: trio.Event | None = None,
    state_dir: Path | None = None,
    siblings: Any = None,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until `stop` is set or SIGTERM/SIGINT arrives; reports the bound addresses when listening.

    `state_dir`: a directory shared by the workers of one `--workers N` run (alert de-duplication).
    `siblings`: that run's multiprocessing Barrier, which every worker passes before it listens.
    """
    stop = trio.Event() if stop is None else stop
    # The event loop lets go of the GIL at every socket call; while another thread runs Python (the spend
    # writer's batch, about once a second) it may wait up to the switch interval to get it back. Against
    # Python's 5 ms, 1 ms took the p99 at c=1 from 5.88 to 5.05 ms (8 alternating rounds of 10 s, lower in every
    # one); below 1 ms measured no better (20 us to 1 ms, 6 rounds: the batch's share of the core is the rest,
    # see spend/writer.py). Only threads that compete for the GIL switch more often: the loop alone never waits.
    switch_interval = sys.getswitchinterval()
    sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
    try:
        await _serve(config, host, port, reuse_port, stop, state_dir, siblings, task_status)
    finally:
        sys.setswitchinterval(switch_interval)


async def _serve(
    config: Config,
    host: str,
    port: int,
    reuse_port: bool,
    stop: trio.Event,
    state_dir: Path | None,
    siblings: Any,
    task_status: trio.TaskStatus[list[str]],
) -> None:
    async with open_gateway(config) as gw, trio.open_nursery() as nursery:
        app = create_app(gw)
        tracker = _DrainTracker(app)
        nursery.start_soon(_watch_signals, stop, nursery.cancel_scope, gw.ops.request_reload)
        nursery.start_soon(gw.serve_change_poller)
        # With Redis: other instances' key changes and cooldowns, as they happen (subscribed before we listen).
        await nursery.start(gw.shared.serve)
        nursery.start_soon(gw.serve_budget_resets, config.general.budget_reset_interval_s)
        # Health probes (restarted by SIGHUP reloads), alerts, metrics refresh: edgeproxy/operations.py.
        await nursery.start(partial(gw.ops.serve, gw, retire=tracker.retire_generation, state_dir=state_dir))

        async def serve_http(task_status: trio.TaskStatus[list[str]]) -> None:
            hc = _hypercorn_config(config, host, port, reuse_port)
            send_heads_with_bodies()
            check_heads_once()
            if siblings is not None:
                await _wait_for_siblings(siblings, stop)
            with trio.CancelScope() as http_scope:
                async with trio.open_nursery() as http:
                    binds = await http.start(partial(hypercorn_serve, tracker, hc, shutdown_trigger=stop.wait))
                    # Only once listening: a stop that came while starting (a worker signalled as its sibling
                    # already serves) would otherwise cancel hypercorn before it reports, and the run fails.
                    http.start_soon(_drain_then_close, stop, tracker, http_scope, config.general.shutdown_grace_s)
                    task_status.started(binds)
            # The server has drained: background tasks end with it.
            nursery.cancel_scope.cancel()

        binds = await nursery.start(serve_http)
        # Everything built so far lives as long as the process: move it out of the collector's sight, so full
        # collections walk only per-request garbage, not every imported module's objects (p99 at c=1 measured
        # 12.6/16.0 ms without, 6.7/8.1 ms with, alternating runs).
        gc.collect()
        gc.freeze()
        log.info("edgeproxy listening on %s", ", ".join(binds))
        task_status.started(binds)


async def _wait_for_siblings(barrier: Any, stop: trio.Event) -> None:
    """`--workers N`: listen once every worker is ready to.

    SO_REUSEPORT hands a new connection to one of the sockets listening when it arrives, and a kept-alive
    connection stays where it landed: clients that connected while the second worker was still starting (it
    listened up to ~300 ms after the first, measured) stayed on the first one for as long as they kept their pools
    busy. A worker that never comes (it failed to start) holds the others up for SIBLING_WAIT_S at most; one that
    is stopped meanwhile lets them go.
    """
    async with trio.open_nursery() as nursery:

        async def all_ready() -> None:
            with contextlib.suppress(threading.BrokenBarrierError):
                await trio.to_thread.run_sync(barrier.wait, SIBLING_WAIT_S, abandon_on_cancel=True)
            nursery.cancel_scope.cancel()

        async def stopped() -> None:
            await stop.wait()
            barrier.abort()  # the others stop waiting for a worker that will not serve
            nursery.cancel_scope.cancel()

        nursery.start_soon(all_ready)
        nursery.start_soon(stopped)


def migrate_database(config: Config) -> None:
    """Check the database and bring its schema up to date before serving (StartupError if it cannot be).

    `edgeproxy run` calls this before the event loop and any worker start: the process has no threads yet, so
    the migration, when there is one, runs in a forked child (Storage.migrate(in_child=True)) and Alembic
    (~11 MiB) never loads into the server. The server's own check then finds the schema current.
    """
    open_storage(config, migrate_in_child=True).close()


def run(config: Config, host: str, port: int) -> None:
    limit_malloc_arenas()  # before the first thread (mallocarenas.py)
    trio.run(partial(serve, config, host, port))


def _worker_main(
    config: Config, host: str, port: int, log_level: str, log_format: str, state_dir: Path, siblings: Any
) -> None:
    limit_malloc_arenas()
    setup_logging(log_level, log_format, worker=True)
    trio.run(partial(serve, config, host, port, reuse_port=True, state_dir=state_dir, siblings=siblings))


def run_workers(config: Config, host: str, port: int, workers: int, log_level: str, log_format: str = "text") -> int:
    """N processes on one port (SO_REUSEPORT); each has its own nursery. Shared truth is in the DB/Redis."""
    # A fresh directory per run, removed at the end: prometheus-client's multiprocess mode keeps each worker's
    # metric values in files there (a scrape, answered by any worker, adds them all up), and alerts are
    # de-duplicated between workers through it. Stale files from an earlier run would corrupt the counts.
    state_dir = Path(tempfile.mkdtemp(prefix="edgeproxy-workers-"))
    (state_dir / "metrics").mkdir()
    os.environ[MULTIPROC_ENV] = str(state_dir / "metrics")  # read by prometheus-client as each worker imports it
    try:
        return _run_processes(config, host, port, workers, (log_level, log_format, state_dir))
    finally:
        shutil.rmtree(state_dir, ignore_errors=True)


def _run_processes(config: Config, host: str, port: int, workers: int, extra: tuple[Any, ...]) -> int:
    context = multiprocessing.get_context("spawn")
    siblings = context.Barrier(workers)  # passed by each worker before it listens (_wait_for_siblings)
    processes: list[Any] = []
    for _ in range(workers):
        process = context.Process(target=_worker_main, args=(config, host, port, *extra, siblings), daemon=False)
        process.start()
        processes.append(process)

    forwarded: set[int] = set()

    def forward(signum: int, _frame: object) -> None:
        forwarded.add(signum)
        for process in processes:
            if process.is_alive() and process.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    if _SIGHUP is not None:
        signal.signal(_SIGHUP, forward)  # each worker reloads its own config
    for process in processes:
        process.join()
    return workers_exit_code([process.exitcode or 0 for process in processes], forwarded)


def workers_exit_code(exit_codes: list[int], forwarded: set[int]) -> int:
    """The run's exit code from its workers' (negative: killed by that signal), as a shell would report it.

    A worker still starting when a forwarded stop came dies of the signal itself, having served nothing: that
    is a clean stop. Any other death by signal is 128 + its number.
    """
    codes = [0 if -code in forwarded else 128 - code if code < 0 else code for code in exit_codes]
    return max(codes, default=0)
