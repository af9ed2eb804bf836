"""The shared deadlines of passive ports (``server/deadlines.py``) on a real event loop."""

from __future__ import annotations

import asyncio
from typing import Any

from ftpkit.server.deadlines import MIN_CLEANUP, Deadlines


def test_deadlines_fire_in_order_with_their_arguments_and_never_early() -> None:
    async def main() -> list[tuple[str, float, float]]:
        loop = asyncio.get_running_loop()
        deadlines = Deadlines()
        fired: list[tuple[str, float, float]] = []
        done = asyncio.Event()

        def note(name: str, when: float) -> None:
            fired.append((name, when, loop.time()))
            if len(fired) == 4:
                done.set()

        start = loop.time()
        for name, delay in (("c", 0.15), ("a", 0.05), ("d", 0.2), ("b", 0.1)):
            deadlines.call_later(delay, note, name, start + delay)
        await asyncio.wait_for(done.wait(), 10)
        assert len(deadlines) == 0
        return fired

    fired = asyncio.run(main())
    assert [name for name, _, _ in fired] == ["a", "b", "c", "d"]
    assert all(at >= when for _, when, at in fired)


def test_a_cancelled_deadline_never_runs_and_leaves_the_heap_when_due() -> None:
    async def main() -> tuple[list[str], int, int]:
        deadlines = Deadlines()
        fired: list[str] = []
        done = asyncio.Event()
        cancelled = [deadlines.call_later(0.002 * i, fired.append, f"no{i}") for i in range(100)]
        deadlines.call_later(0.3, lambda: (fired.append("yes"), done.set()))
        for deadline in cancelled:
            deadline.cancel()
        assert all(d.cancelled for d in cancelled)
        before = len(deadlines)
        await asyncio.wait_for(done.wait(), 10)
        return fired, before, len(deadlines)

    fired, before, after = asyncio.run(main())
    assert fired == ["yes"]
    assert (before, after) == (101, 0)


def test_an_earlier_deadline_rearms_the_timer_and_a_failing_callback_stops_no_other() -> None:
    async def main() -> tuple[list[str], list[dict[str, Any]]]:
        loop = asyncio.get_running_loop()
        errors: list[dict[str, Any]] = []
        loop.set_exception_handler(lambda _loop, context: errors.append(context))
        deadlines = Deadlines()
        fired: list[str] = []
        done = asyncio.Event()

        def fail() -> None:
            raise RuntimeError("boom")

        deadlines.call_later(5.0, fired.append, "late")  # armed first, for later
        deadlines.call_later(0.05, fail)
        deadlines.call_later(0.05, fired.append, "after the failure")
        deadlines.call_later(0.1, done.set)
        await asyncio.wait_for(done.wait(), 3)  # would time out if the timer still waited for the 5 s one
        deadlines.close()
        return fired, errors

    fired, errors = asyncio.run(main())
    assert fired == ["after the failure"]
    assert len(errors) == 1 and isinstance(errors[0]["exception"], RuntimeError)


def test_close_forgets_every_deadline() -> None:
    async def main() -> list[str]:
        deadlines = Deadlines()
        fired: list[str] = []
        deadlines.call_later(0.05, fired.append, "x")
        deadlines.close()
        assert len(deadlines) == 0
        later = asyncio.Event()
        asyncio.get_running_loop().call_later(0.1, later.set)  # the loop runs timers in order: after the 0.05
        await asyncio.wait_for(later.wait(), 10)
        return fired

    assert asyncio.run(main()) == []


def test_cancelled_deadlines_leave_the_heap_once_they_are_half_of_it() -> None:
    async def main() -> tuple[int, int, list[int]]:
        deadlines = Deadlines()
        fired: list[int] = []
        done = asyncio.Event()
        keep = [deadlines.call_later(0.1 + i / 1000, fired.append, i) for i in range(10)]
        for _ in range(50):  # a busy server: sessions come and go long before their idle timeout
            for deadline in [deadlines.call_later(300.0, fired.append, -1) for _ in range(100)]:
                deadline.cancel()
        most = len(deadlines)
        deadlines.call_later(0.2, done.set)
        await asyncio.wait_for(done.wait(), 10)
        assert all(d.cancelled for d in keep)  # fired ones are done: a cancel would do nothing
        return most, len(deadlines), fired

    most, left, fired = asyncio.run(main())
    assert most <= 10 + 2 * 101  # 5,000 cancelled, never more than about as many as live ones plus the minimum
    assert left <= MIN_CLEANUP  # only cancelled ones, fewer than a rebuild waits for
    assert fired == list(range(10))
