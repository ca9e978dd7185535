"""kill -9 the hub under load: nothing acknowledged is lost, nothing is stored twice (test 5)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import aiohttp

from tests.helpers import seed

EVENTS_PER_PUBLISHER = 10_000
WINDOW = 500


class ResendingPublisher:
    """A raw publisher with an in-memory outbox: resends every unacknowledged event, in
    order, after each reconnect (the behaviour the client SDK must also have)."""

    def __init__(self, url: str, name: str) -> None:
        self.url = url
        self.name = name
        self.ids = [f"{name}-{i:05d}" for i in range(EVENTS_PER_PUBLISHER)]
        self.unacked: dict[str, dict[str, Any]] = {}
        self.acked: set[str] = set()
        self.acked_before_crash: set[str] | None = None
        self.next_index = 0
        self.reconnects = 0

    async def run(self, session: aiohttp.ClientSession) -> None:
        while len(self.acked) < len(self.ids):
            try:
                ws = await session.ws_connect(self.url)
            except aiohttp.ClientError:
                await asyncio.sleep(0.05)
                continue
            with contextlib.suppress(aiohttp.ClientError, ConnectionError):
                await self._session(ws)
            self.reconnects += 1

    async def _session(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        for frame in list(self.unacked.values()):  # resend, in order
            await ws.send_str(json.dumps(frame))
        while len(self.acked) < len(self.ids):
            while self.next_index < len(self.ids) and len(self.unacked) < WINDOW:
                event_id = self.ids[self.next_index]
                frame = seed(self.name, event_id, id=event_id, source=self.name)
                self.unacked[event_id] = frame
                self.next_index += 1
                await ws.send_str(json.dumps(frame))
            message = await ws.receive(timeout=10)
            if message.type != aiohttp.WSMsgType.TEXT:
                return
            reply = json.loads(message.data)
            assert reply["type"] == "ack", reply
            self.unacked.pop(reply["id"], None)
            self.acked.add(reply["id"])
        await ws.close()


async def read_whole_log(http: str) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    since = 0
    async with aiohttp.ClientSession() as session:
        while True:
            params = {"since": since, "limit": 10_000}
            async with session.get(f"{http}/api/events", params=params) as response:
                page = await response.json()
            if not page:
                return events
            events.extend(page)
            since = page[-1]["seq"]


async def test_kill_9_under_load_loses_nothing_and_stores_nothing_twice(start_hub: Any) -> None:
    hub = start_hub()
    publishers = [ResendingPublisher(hub.url, f"p{n}") for n in range(3)]
    async with aiohttp.ClientSession() as session:
        runs = asyncio.gather(*(p.run(session) for p in publishers))
        while sum(len(p.acked) for p in publishers) < 6000:
            await asyncio.sleep(0.01)
        hub.kill9()
        for publisher in publishers:
            publisher.acked_before_crash = set(publisher.acked)
        assert all(len(p.acked_before_crash or ()) < EVENTS_PER_PUBLISHER for p in publishers)
        await asyncio.sleep(0.3)
        hub.restart()
        await asyncio.wait_for(runs, 120)

    log = await read_whole_log(hub.http)
    ids = [event["id"] for event in log]
    assert len(ids) == len(set(ids)) == 3 * EVENTS_PER_PUBLISHER
    assert [event["seq"] for event in log] == sorted(event["seq"] for event in log)
    for publisher in publishers:
        mine = [event["id"] for event in log if event.get("source") == publisher.name]
        assert mine == publisher.ids  # every event once, in the publisher's order
        assert publisher.acked_before_crash is not None
        assert publisher.acked_before_crash <= set(mine)
        assert publisher.reconnects >= 1
