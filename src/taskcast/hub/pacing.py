"""Replays give way to live delivery.

A replay of a long log is bulk work; a live event is someone waiting. The hub runs both
on one event loop, so ``LoopLag`` samples how late the loop runs a timer (a busy loop
runs it late, and a live event waits as long), and a replay slice waits while the loop
is that late: with nothing live to do the lag stays below the threshold and a replay
runs at full speed; under load, replays get what the live work leaves. It samples only
while replays ask (``give_way``): an idle hub does not wake for it.
"""

from __future__ import annotations

import asyncio
import contextlib

SAMPLE_SECONDS = 0.005
YIELD_LAG_SECONDS = 0.004  # a loop this late makes replays wait
BACKOFF_SECONDS = 0.004
MAX_BACKOFFS = 50  # a replay is slowed, never stopped
IDLE_SECONDS = 0.2  # sampling stops this long after the last give_way


class LoopLag:
    def __init__(self) -> None:
        self.lag = 0.0  # seconds the last timer ran late
        self._asked = 0.0  # loop time of the last give_way
        self._task: asyncio.Task[None] | None = None
        self._stopped = False  # a stopped hub samples no more

    async def stop(self) -> None:
        self._stopped = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _sample(self) -> None:
        loop = asyncio.get_running_loop()
        while loop.time() - self._asked < IDLE_SECONDS:
            due = loop.time() + SAMPLE_SECONDS
            await asyncio.sleep(SAMPLE_SECONDS)
            self.lag = max(0.0, loop.time() - due)
        self.lag = 0.0

    async def give_way(self) -> None:
        """Wait (a little at a time, boundedly) while the loop runs late."""
        loop = asyncio.get_running_loop()
        self._asked = loop.time()
        if not self._stopped and (self._task is None or self._task.done()):
            self._task = loop.create_task(self._sample(), name="loop-lag")
        await asyncio.sleep(0)
        for _ in range(MAX_BACKOFFS):
            if self.lag < YIELD_LAG_SECONDS:
                return
            await asyncio.sleep(BACKOFF_SECONDS)
