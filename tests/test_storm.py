"""A small reconnect storm (issue 15): 2,000 subscribers each resume with their own
``since`` after the hub restarts while a publisher keeps going — every subscriber gets
every event exactly once, in order. A correctness test, not a timing."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp

from taskcast.client import CommunicationService, subscribe
from tests.helpers import seed, wait_until

SUBSCRIBERS = 2000
EVENTS = 60


async def test_reconnect_storm_every_subscriber_gets_every_event_once_in_order(
    start_hub: Any,
) -> None:
    hub = start_hub("--max-connections-per-ip", "0")
    received: list[list[int]] = [[] for _ in range(SUBSCRIBERS)]
    connector = aiohttp.TCPConnector(limit=0)
    session = aiohttp.ClientSession(connector=connector)

    async def subscriber(index: int) -> None:
        stream = subscribe(hub.url, "tasks.>", since=0, session=session)
        async for frame in stream:
            received[index].append(frame["seq"])
            if len(received[index]) >= EVENTS:
                await stream.aclose()
                return

    tasks = [asyncio.create_task(subscriber(i)) for i in range(SUBSCRIBERS)]
    service = CommunicationService(hub.url)
    try:
        for n in range(EVENTS // 2):
            service.send_message(seed(f"storm{n % 7}", str(n)))
        # Everyone has seen part of the log (each its own resume point) ...
        await wait_until(lambda: min(len(r) for r in received) >= 5, timeout=120)
        hub.terminate()  # SIGTERM: a graceful stop; every subscriber is disconnected
        for n in range(EVENTS // 2, EVENTS):  # the publisher keeps going (its outbox)
            service.send_message(seed(f"storm{n % 7}", str(n)))
        hub.restart()
        assert await service.aflush(60)
        await asyncio.wait_for(asyncio.gather(*tasks), 180)
    finally:
        for task in tasks:
            task.cancel()
        await service.aclose()
        await session.close()
    expected = list(range(1, EVENTS + 1))
    wrong = [i for i, seqs in enumerate(received) if seqs != expected]
    assert not wrong, f"{len(wrong)} subscribers, e.g. {received[wrong[0]][:20]}"
