"""Barge-in has one owner: the turn counter ("epoch"), the running tasks, the queues.

Every piece of work is stamped with the turn it belongs to. Interrupting bumps the
counter, cancels the tasks registered for the turn, empties the registered queues and
runs the stop hooks (e.g. the speaker's ``stop_now``). Work in threads cannot be
cancelled, so it checks :meth:`stopper` between chunks.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Callable

_LOGGER = logging.getLogger(__name__)


class InterruptionScope:
    def __init__(self) -> None:
        self._turn = 0
        self._tasks: set[asyncio.Task[object]] = set()
        self._queues: list[asyncio.Queue[object]] = []
        self._hooks: list[Callable[[], None]] = []

    @property
    def turn(self) -> int:
        return self._turn

    def begin_turn(self) -> int:
        """Start a new turn (cancelling whatever the previous one still had running)."""
        self._cancel_work()
        self._turn += 1
        return self._turn

    def is_current(self, turn: int) -> bool:
        return turn == self._turn

    def stopper(self, turn: int) -> Callable[[], bool]:
        """A cheap check for worker threads: true once ``turn`` is no longer current."""
        return lambda: self._turn != turn

    def track(self, task: "asyncio.Task[object]") -> "asyncio.Task[object]":
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def add_queue(self, queue: "asyncio.Queue[object]") -> None:
        self._queues.append(queue)

    def add_hook(self, hook: Callable[[], None]) -> None:
        self._hooks.append(hook)

    def interrupt(self) -> int:
        """Cancel the current turn everywhere; returns the new (empty) turn number."""
        self._turn += 1
        self._cancel_work()
        for hook in self._hooks:
            try:
                hook()
            except Exception:  # a broken hook must not stop the others
                _LOGGER.exception("interrupt hook failed")
        return self._turn

    def _cancel_work(self) -> None:
        current = asyncio.current_task() if _loop_running() else None
        for task in list(self._tasks):
            if task is not current and not task.done():
                task.cancel()
        for queue in self._queues:
            while not queue.empty():
                queue.get_nowait()
        self._queues.clear()


def _loop_running() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True
