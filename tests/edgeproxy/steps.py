"""Counting how often trio's scheduler runs a task: each step past the first is a pass through its run loop."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import trio


class StepCounter(trio.abc.Instrument):
    def __init__(self, task: trio.lowlevel.Task) -> None:
        self.task = task
        self.steps = 0

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        if task is self.task:
            self.steps += 1


@contextmanager
def counting_steps() -> Iterator[StepCounter]:
    """The current task's steps while the block runs (0: it never waited nor yielded)."""
    counter = StepCounter(trio.lowlevel.current_task())
    trio.lowlevel.add_instrument(counter)
    try:
        yield counter
    finally:
        trio.lowlevel.remove_instrument(counter)
