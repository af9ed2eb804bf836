"""IOThreads: the server's worker pool for blocking file-system calls (server/workers.py)."""

from __future__ import annotations

import asyncio
import threading

import pytest

from ftpkit.server.workers import IOThreads


def test_run_returns_the_result_from_a_worker_thread() -> None:
    pool = IOThreads(2)

    async def main() -> tuple[int, str]:
        return await pool.run(lambda a, b: a + b, 2, 3), await pool.run(lambda: threading.current_thread().name)

    try:
        total, name = asyncio.run(main())
    finally:
        pool.shutdown()
    assert total == 5
    assert name.startswith("ftpkit-io_") and name != threading.current_thread().name


def test_run_raises_the_workers_exception_in_the_waiting_task() -> None:
    pool = IOThreads(1)

    def fail() -> None:
        raise FileNotFoundError(2, "No such file", "/missing")

    async def main() -> None:
        await pool.run(fail)

    try:
        with pytest.raises(FileNotFoundError, match="No such file"):
            asyncio.run(main())
    finally:
        pool.shutdown()


def test_a_cancelled_waiter_leaves_the_loop_and_the_pool_working() -> None:
    pool = IOThreads(1)
    release = threading.Event()

    async def main() -> int:
        task = asyncio.ensure_future(pool.run(release.wait, 10))
        await asyncio.sleep(0)  # the job is queued
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        release.set()  # the worker finishes the job; its result goes nowhere
        return await pool.run(lambda: 7)

    try:
        assert asyncio.run(main()) == 7
    finally:
        pool.shutdown()


def test_a_blocked_job_never_holds_up_the_next_below_max_workers() -> None:
    # a thread that has gone idle is reserved by the job that takes it: the next job starts a thread of its own
    pool = IOThreads(2)
    release = threading.Event()

    async def main() -> None:
        await pool.run(int, "1")  # one thread, idle now
        blocked = asyncio.ensure_future(pool.run(release.wait, 30))
        assert await asyncio.wait_for(pool.run(int, "2"), 10) == 2  # not behind the blocked job
        release.set()
        assert await blocked is True

    try:
        for _ in range(20):  # the old race needed the idle thread not to have taken its job yet: try often
            release.clear()
            asyncio.run(main())
    finally:
        release.set()
        pool.shutdown()


def test_never_more_threads_than_max_workers() -> None:
    pool = IOThreads(3)
    seen: set[str] = set()
    lock = threading.Lock()

    def note() -> None:
        with lock:
            seen.add(threading.current_thread().name)

    async def main() -> None:
        await asyncio.gather(*(pool.run(note) for _ in range(200)))

    try:
        asyncio.run(main())
    finally:
        pool.shutdown()
    assert 1 <= len(seen) <= 3


def test_it_is_an_executor_for_run_in_executor_too() -> None:
    pool = IOThreads(2)

    async def main() -> int:
        return await asyncio.get_running_loop().run_in_executor(pool, pow, 2, 10)

    try:
        assert asyncio.run(main()) == 1024
        assert pool.submit(pow, 3, 3).result(timeout=10) == 27
    finally:
        pool.shutdown()


def test_shutdown_stops_the_threads_and_refuses_new_jobs() -> None:
    pool = IOThreads(2)
    worker = pool.submit(threading.current_thread).result(timeout=10)
    assert worker.is_alive()
    pool.shutdown(wait=True)
    assert not worker.is_alive()
    with pytest.raises(RuntimeError, match="after shutdown"):
        pool.submit(int, "5")


def test_shutdown_with_cancel_futures_cancels_queued_jobs() -> None:
    pool = IOThreads(1)
    started, release = threading.Event(), threading.Event()

    def hold() -> bool:
        started.set()
        return release.wait(10)

    busy = pool.submit(hold)
    assert started.wait(10)
    queued = pool.submit(int, "1")
    pool.shutdown(wait=False, cancel_futures=True)
    release.set()
    assert busy.result(timeout=10) is True
    assert queued.cancelled()


def test_max_workers_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        IOThreads(0)
