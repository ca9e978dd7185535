"""Many small publishers (issue 30): 500 agents, each its own websocket, publishing at
an agent's pace; the hub is killed with -9 in the middle and restarted on the same
SQLite file; each agent reconnects and resends what was not acknowledged, as
``CommunicationService`` does. Every event is then in the log exactly once, every
event acked before the kill among them, in each publisher's order. A correctness
test, not a timing."""

from __future__ import annotations

import asyncio
import json
import random
from typing import Any

import aiohttp

from tests.helpers import seed, wait_until

PUBLISHERS = 500
EVENTS_EACH = 30


async def test_500_publishers_through_a_kill_9_lose_and_repeat_nothing(start_hub: Any) -> None:
    hub = start_hub("--max-connections-per-ip", "0")
    ids = [[f"p{i}-{n}" for n in range(EVENTS_EACH)] for i in range(PUBLISHERS)]
    acked: list[set[str]] = [set() for _ in range(PUBLISHERS)]
    acked_before_kill: list[set[str]] = []
    killed, restarted = asyncio.Event(), asyncio.Event()
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))

    async def connect_and_read(index: int) -> tuple[aiohttp.ClientWebSocketResponse, Any]:
        ws = await session.ws_connect(hub.url)

        async def read() -> None:
            async for message in ws:
                if message.type == aiohttp.WSMsgType.TEXT:
                    frame = json.loads(message.data)
                    if frame.get("type") == "ack":
                        acked[index].add(frame["id"])

        return ws, asyncio.create_task(read())

    async def publisher(index: int) -> None:
        task = f"pub{index}"
        ws, reader = await connect_and_read(index)
        await asyncio.sleep(random.random() * 0.1)  # a random phase
        with_errors = (ConnectionError, aiohttp.ClientError, RuntimeError)
        try:
            for n in range(EVENTS_EACH):
                if killed.is_set():
                    break
                await ws.send_str(json.dumps(seed(task, str(n), id=ids[index][n])))
                await asyncio.sleep(0.1)  # ~10 events/s per agent
        except with_errors:
            pass  # the hub died under it
        await restarted.wait()
        reader.cancel()
        ws, reader = await connect_and_read(index)
        for n, event_id in enumerate(ids[index]):  # from the first unacked one, in order
            if event_id not in acked[index]:
                await ws.send_str(json.dumps(seed(task, str(n), id=event_id)))
        await wait_until(lambda: len(acked[index]) == EVENTS_EACH, 120, f"{task}'s acks")
        await ws.close()
        reader.cancel()

    publishers = [asyncio.create_task(publisher(i)) for i in range(PUBLISHERS)]
    try:
        total = PUBLISHERS * EVENTS_EACH
        await wait_until(lambda: sum(map(len, acked)) > total // 3, 120, "a third acked")
        hub.kill9()
        killed.set()
        acked_before_kill = [set(a) for a in acked]
        hub.restart()
        restarted.set()
        await asyncio.wait_for(asyncio.gather(*publishers), 240)

        stored: list[dict[str, Any]] = []
        async with aiohttp.ClientSession() as reader_session:
            since = 0
            while True:
                url = f"{hub.http}/api/events"
                async with reader_session.get(url, params={"since": since, "limit": 1000}) as r:
                    page = await r.json()
                if not page:
                    break
                stored += page
                since = page[-1]["seq"]
    finally:
        for task in publishers:
            task.cancel()
        await session.close()
    assert len(stored) == total, f"{len(stored)} events stored of {total}"
    by_publisher: dict[str, list[str]] = {}
    for event in stored:
        by_publisher.setdefault(event["payload"]["taskId"], []).append(event["id"])
    for index in range(PUBLISHERS):
        assert by_publisher[f"pub{index}"] == ids[index], f"pub{index}: lost, doubled or reordered"
    assert sum(map(len, acked_before_kill)) > total // 3
