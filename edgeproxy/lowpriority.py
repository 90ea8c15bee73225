"""A thread of its own, at a lower CPU priority, for background Python work that must not slow requests down.

Why: the event loop needs the GIL after every socket call. A background thread doing bursts of Python work at
the loop's priority (the spend writer preparing a batch of 1,000 rows: ~10 ms every second) shares the core and
the GIL with it, and the requests that ran meanwhile were the proxy's p99. At nice +19 the kernel runs it
when the loop is waiting, and it still makes progress when the loop needs the GIL (the loop then blocks, and
this thread runs until it lets go). Measured with the spend writer preparing its batches here (6 alternating
rounds): added p99 at c=1 4.8 -> 4.2 ms; with its whole write here, 3.4 ms, but see below. The batch's loops
also give way every few records (storage/yielding.py): a thread that has the CPU keeps it for its time slice.

What runs here must not hold locks others wait for (a database transaction): on a busy core, a thread at this
priority can be kept off the CPU for a long while. Linux only (nice is per thread there); elsewhere the thread
keeps the process's priority.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

import outcome
import trio

__all__ = ["LowPriorityThread"]

log = logging.getLogger("edgeproxy.lowpriority")
T = TypeVar("T")
NICE_INCREMENT = 19  # the lowest priority short of SCHED_IDLE (which a loaded core can starve for ever)


def _lower_priority(increment: int) -> None:
    if sys.platform != "linux":
        return
    try:
        current = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), min(19, current + increment))
    except OSError as error:  # a sandbox may refuse it: the work still gets done, at normal priority
        log.debug("could not lower the priority of %s: %s", threading.current_thread().name, error)


class LowPriorityThread:
    """One thread, started on first use; `run` awaits a function run in it. Close it when done."""

    def __init__(self, name: str, increment: int = NICE_INCREMENT) -> None:
        self._executor = ThreadPoolExecutor(
            1, thread_name_prefix=name, initializer=_lower_priority, initargs=(increment,)
        )

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """fn(*args) in the thread. Like trio.to_thread.run_sync, not cancellable once submitted: the work
        finishes and its result is not lost to a cancel."""
        token = trio.lowlevel.current_trio_token()
        task = trio.lowlevel.current_task()

        def deliver(future: Future[T]) -> None:
            token.run_sync_soon(trio.lowlevel.reschedule, task, outcome.capture(future.result))

        self._executor.submit(fn, *args).add_done_callback(deliver)
        result: T = await trio.lowlevel.wait_task_rescheduled(lambda _: trio.lowlevel.Abort.FAILED)
        return result

    def close(self) -> None:
        """Let the thread finish what it has and end (without waiting for it)."""
        self._executor.shutdown(wait=False)
