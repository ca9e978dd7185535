"""The order and pace in which the hub writes its websockets.

A fan-out queues frames on every subscriber, then each one's socket is written once.
Writing 100 sockets costs ~1 ms of system calls (far more for thousands), and the loop
reads nothing meanwhile. So the writes go in slices of ``SLICE_SECONDS``, and the loop
polls its sockets between slices: a batch that finished committing during the pass is
fanned out at once, and its events ride along in the same ``send`` to every subscriber
not yet written. With one publisher's burst committed as two batches, that took the
p99 publish→deliver latency at 2,000 events/s to 100 subscribers from 5.19 to 4.38 ms
and the hub's CPU from 0.46 to 0.39 cores (bench/run.py's method, docs/architecture.md).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable

SLICE_SECONDS = 0.0001


class WriteQueue:
    """Writers due to run, first come first written, a time slice per loop pass."""

    def __init__(self, slice_seconds: float = SLICE_SECONDS) -> None:
        self.slice_seconds = slice_seconds
        self._due: deque[Callable[[], None]] = deque()
        self._loop: asyncio.AbstractEventLoop | None = None

    def __len__(self) -> int:
        return len(self._due)

    def add(self, write: Callable[[], None]) -> None:
        """Have ``write`` run soon (the caller adds each connection once until it ran)."""
        self._due.append(write)
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
            self._loop.call_soon(self._write_slice)

    def _write_slice(self) -> None:
        due = self._due
        clock = time.perf_counter
        deadline = clock() + self.slice_seconds
        try:
            while due:
                due.popleft()()
                if clock() >= deadline:
                    break
        finally:  # a writer that raised must not strand the others
            if due:
                assert self._loop is not None
                self._loop.call_soon(self._write_slice)
            else:
                self._loop = None
