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
MIN_CLEANUP = 100
"""Cancelled entries the heap may hold before it is rebuilt without them (when they are also half of it)."""


class Deadline:
    """One scheduled callback; :meth:`cancel` forgets it (the heap's entry goes when it comes due, or when the
    cancelled entries are half the heap)."""

    __slots__ = ("args", "callback", "owner", "when")

    def __init__(self, owner: Deadlines, when: float, callback: Callable[..., object], args: tuple[Any, ...]) -> None:
        self.owner: Deadlines | None = owner
        self.when = when  # event-loop time
        self.callback: Callable[..., object] | None = callback
        self.args = args

    def cancel(self) -> None:
        if self.callback is None:
            return
        self.callback = None
        self.args = ()
        owner, self.owner = self.owner, None
        if owner is not None:
            owner.cancelled_one()

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
        self._cancelled = 0  # cancelled entries still in the heap

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
        deadline = Deadline(self, when, callback, args)
        heapq.heappush(self._heap, (when, next(self._order), deadline))
        if self._timer is None or when < self._timer.when():
            self._arm(when)
        return deadline

    def cancelled_one(self) -> None:
        """A deadline was cancelled: when they are half the heap, the heap keeps only the others (as asyncio does
        with its cancelled timers), so a busy server does not hold a session's worth per idle timeout."""
        self._cancelled += 1
        heap = self._heap
        if self._cancelled > MIN_CLEANUP and self._cancelled * 2 > len(heap):
            self._heap = [entry for entry in heap if entry[2].callback is not None]
            heapq.heapify(self._heap)
            self._cancelled = 0

    def _arm(self, when: float) -> None:
        assert self._loop is not None
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._loop.call_at(when, self._fire)

    def _fire(self) -> None:
        assert self._loop is not None
        self._timer = None
        now = self._loop.time()
        # self._heap each time: a callback's cancel may rebuild it (cancelled_one)
        while self._heap and self._heap[0][0] <= now:  # bounded: each pass takes one entry off the heap
            deadline = heapq.heappop(self._heap)[2]
            callback, args = deadline.callback, deadline.args
            if callback is None:
                self._cancelled -= 1  # a cancelled one leaves the heap
            else:
                deadline.callback, deadline.args, deadline.owner = None, (), None  # done: a cancel does nothing
                try:
                    callback(*args)
                except Exception as exc:  # as the event loop does for a callback: said, and the others still run
                    self._loop.call_exception_handler({"message": "a deadline's callback failed", "exception": exc})
        if self._heap:
            self._arm(max(self._heap[0][0], now + GRANULARITY))

    def close(self) -> None:
        """Forget every deadline (the server stops)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        heap, self._heap = self._heap, []
        for _, _, deadline in heap:
            deadline.owner = None
            deadline.cancel()
        self._cancelled = 0
