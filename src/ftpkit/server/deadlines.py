"""Many timeouts that are rarely due on one event-loop timer: a passive port that nobody connects to within
``data_accept_timeout`` is closed, a session that sends nothing within its login or idle timeout is ended, and
nearly every one of those is cancelled first (the client connects at once, sends its next command, or quits).

``loop.call_later`` per announced port costs a ``TimerHandle`` (a Python object), comparisons of those objects in
Python as the loop's heap orders them, and a cancelled handle that stays in that heap until it is due, making every
other timer of the server dearer. Here a deadline is a small object in a heap of plain tuples (compared in C), and
one loop timer stands for the earliest; a cancelled deadline only forgets its callback. Callbacks run at their time
or up to :data:`GRANULARITY` later (never earlier), so that a burst of due deadlines costs one wake-up, not one each.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Callable
from typing import Any

GRANULARITY = 0.05
"""Seconds a deadline may fire late: the shortest time between two wake-ups of the shared timer."""


class Deadline:
    """One scheduled callback; :meth:`cancel` forgets it (the heap's entry goes when it comes due)."""

    __slots__ = ("args", "callback", "when")

    def __init__(self, when: float, callback: Callable[..., object], args: tuple[Any, ...]) -> None:
        self.when = when  # event-loop time
        self.callback: Callable[..., object] | None = callback
        self.args = args

    def cancel(self) -> None:
        self.callback = None
        self.args = ()

    @property
    def cancelled(self) -> bool:
        return self.callback is None


class Deadlines:
    """The deadlines of one server, on the running event loop (taken at the first :meth:`call_later`)."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Deadline]] = []
        self._order = itertools.count()  # ties keep their order and never compare two Deadline objects
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None

    def __len__(self) -> int:
        """Entries in the heap, cancelled ones included until they come due."""
        return len(self._heap)

    def call_later(self, delay: float, callback: Callable[..., object], *args: Any) -> Deadline:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        return self.call_at(self._loop.time() + delay, callback, *args)

    def call_at(self, when: float, callback: Callable[..., object], *args: Any) -> Deadline:
        """``callback(*args)`` at ``when`` (event-loop time) or up to :data:`GRANULARITY` later."""
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        deadline = Deadline(when, callback, args)
        heapq.heappush(self._heap, (when, next(self._order), deadline))
        if self._timer is None or when < self._timer.when():
            self._arm(when)
        return deadline

    def _arm(self, when: float) -> None:
        assert self._loop is not None
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._loop.call_at(when, self._fire)

    def _fire(self) -> None:
        assert self._loop is not None
        self._timer = None
        now = self._loop.time()
        heap = self._heap
        while heap and heap[0][0] <= now:  # bounded: each pass takes one entry off the heap
            deadline = heapq.heappop(heap)[2]
            callback, args = deadline.callback, deadline.args
            if callback is not None:
                deadline.cancel()
                try:
                    callback(*args)
                except Exception as exc:  # as the event loop does for a callback: said, and the others still run
                    self._loop.call_exception_handler({"message": "a deadline's callback failed", "exception": exc})
        if heap:
            self._arm(max(heap[0][0], now + GRANULARITY))

    def close(self) -> None:
        """Forget every deadline (the server stops)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for _, _, deadline in self._heap:
            deadline.cancel()
        self._heap.clear()
