"""One thread that runs blocking calls one after another, for the SQLite writer.

Why not ``loop.run_in_executor`` on a one-thread pool: per call it makes a
``concurrent.futures.Future`` (a Condition and its lock), chains it to an asyncio future
through two callbacks and copies the outcome across — at 1,000 agents publishing, about
a thousand commits a second, that handoff was ~12% of the hub's event-loop thread
(py-spy, bench/publishers.py; docs/scale.md). Here a call is one queue put, and its
outcome one ``call_soon_threadsafe`` that settles the caller's future.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Callable
from typing import Any

_Call = tuple[asyncio.AbstractEventLoop, "asyncio.Future[Any]", Callable[..., Any], tuple[Any, ...]]


class SerialThread:
    """Calls run in the order they were made, each to its end before the next starts.
    A call whose caller was cancelled before it started is not run (as a pool's queued
    job is not); one already running finishes, its outcome dropped."""

    def __init__(self, name: str) -> None:
        self._calls: queue.SimpleQueue[_Call | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._closed = False

    def call(self, fn: Callable[..., Any], *args: Any) -> asyncio.Future[Any]:
        """A future of ``fn(*args)``'s outcome, run on the thread."""
        if self._closed:
            raise RuntimeError("the thread was shut down")
        loop = asyncio.get_running_loop()
        if self._thread.ident is None:  # started with the first call, as a pool's are
            self._thread.start()  # before queuing: a call refused must never run later
        future: asyncio.Future[Any] = loop.create_future()
        self._calls.put((loop, future, fn, args))
        return future

    async def shutdown(self) -> None:
        """Run what was queued, then stop the thread (joined off the event loop)."""
        if self._thread.ident is None:
            self._closed = True
            return
        if not self._closed:
            self._closed = True
            self._calls.put(None)
        # Every caller waits for the queue to drain, a second one too (as a pool's do).
        await asyncio.get_running_loop().run_in_executor(None, self._thread.join)

    def _run(self) -> None:
        while (item := self._calls.get()) is not None:
            loop, future, fn, args = item
            if future.cancelled():  # a bool read; the loop thread alone changes it
                continue
            try:
                outcome: tuple[bool, Any] = (True, fn(*args))
            except StopIteration as exc:  # an asyncio future refuses it: it would hang
                name = getattr(fn, "__qualname__", "a call")
                error = RuntimeError(f"{name} raised StopIteration")
                error.__cause__ = exc
                outcome = (False, error)
            except BaseException as exc:  # handed to the caller, as a pool would
                outcome = (False, exc)
            with contextlib.suppress(RuntimeError):  # a closed loop: no one waits any more
                loop.call_soon_threadsafe(_settle, future, outcome)


def _settle(future: asyncio.Future[Any], outcome: tuple[bool, Any]) -> None:
    if future.cancelled():
        return
    ok, value = outcome
    if ok:
        future.set_result(value)
    else:
        future.set_exception(value)
