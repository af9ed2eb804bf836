"""Worker threads for blocking file-system calls, so the event loop never waits on a disk.

:meth:`IOThreads.run` is what ``loop.run_in_executor`` does for a coroutine, with less per call: the
job goes into a queue with the event loop's own future, and the worker settles that future through
``call_soon_threadsafe`` (no ``concurrent.futures.Future`` with its lock and condition, no chaining of two
futures). A download's open is one such call per session, and a session is only a dozen commands. The pool is a
:class:`concurrent.futures.Executor` as well, on the same threads, for code that wants one (``run_in_executor``).
Threads start on demand up to ``max_workers`` and stay (an idle thread costs its stack only): a job finds an idle
thread reserved for it or starts a new one, so below ``max_workers`` it never waits behind a busy job (one slow
disk call stalls only its own session), as with ``ThreadPoolExecutor``.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import Any, TypeVar

T = TypeVar("T")

_Job = tuple[asyncio.AbstractEventLoop | None, "asyncio.Future[Any] | Future[Any]", Callable[..., Any], tuple[Any, ...]]


def _settle(fut: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if fut.done():
        return  # the waiting task was cancelled: nobody wants the result
    if error is not None:
        fut.set_exception(error)
    else:
        fut.set_result(result)


class IOThreads(Executor):
    def __init__(self, max_workers: int, name: str = "ftpkit-io") -> None:
        if max_workers < 1:
            raise ValueError("max_workers must be at least 1")
        self.max_workers = max_workers
        self.name = name
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._idle = 0  # threads waiting for a job that no queued job has reserved yet (under _lock)
        self._lock = threading.Lock()
        self._shutdown = False

    async def run(self, func: Callable[..., T], *args: Any) -> T:
        """``func(*args)`` in a worker thread; its result or its exception."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[T] = loop.create_future()
        self._put((loop, fut, func, args))
        return await fut

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        fut: Future[T] = Future()
        call = (lambda: fn(*args, **kwargs)) if kwargs else fn
        self._put((None, fut, call, () if kwargs else args))
        return fut

    def _put(self, job: _Job) -> None:
        if self._shutdown:
            raise RuntimeError("cannot run new jobs after shutdown")
        with self._lock:
            if self._idle:
                self._idle -= 1  # that thread's next job is this one (or one queued before it)
            elif len(self._threads) < self.max_workers and not self._shutdown:
                thread = threading.Thread(target=self._work, name=f"{self.name}_{len(self._threads)}", daemon=True)
                self._threads.append(thread)
                thread.start()
            # else every thread is busy and there are max_workers of them: the job waits its turn
        self._jobs.put(job)

    def _work(self) -> None:
        first = True  # a new thread was started for a job: it is not idle before taking it
        while True:
            if not first:
                with self._lock:
                    self._idle += 1
            first = False
            job = self._jobs.get()
            if job is None:
                return
            loop, fut, func, args = job
            if loop is None:
                assert isinstance(fut, Future)
                if not fut.set_running_or_notify_cancel():
                    continue
                try:
                    fut.set_result(func(*args))
                except BaseException as exc:
                    fut.set_exception(exc)
                continue
            assert isinstance(fut, asyncio.Future)
            try:
                result, error = func(*args), None
            except BaseException as exc:
                result, error = None, exc
            try:  # noqa: SIM105 - once per job: a plain try costs less than contextlib.suppress
                loop.call_soon_threadsafe(_settle, fut, result, error)
            except RuntimeError:
                pass  # the event loop is closed: nobody waits any more

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._lock:
            self._shutdown = True
            threads = list(self._threads)
        if cancel_futures:
            while True:  # bounded: no job is added after _shutdown
                try:
                    job = self._jobs.get_nowait()
                except queue.Empty:
                    break
                if job is not None:
                    loop, fut, _, _ = job
                    if loop is None:
                        fut.cancel()
                    else:
                        with contextlib.suppress(RuntimeError):
                            loop.call_soon_threadsafe(fut.cancel)
        for _ in threads:
            self._jobs.put(None)
        if wait:
            for thread in threads:
                thread.join()
