"""The front door: websockets served by wsproto on the bare transport, everything else
handed to aiohttp. Frame-level cases use a wsproto client on a raw socket, so the test
controls fragmentation, pings, masking and what arrives in one packet."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import aiohttp
from hypothesis import given
from hypothesis import strategies as st
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Event,
    Ping,
    Pong,
    Request,
    TextMessage,
)
from wsproto.frame_protocol import FrameProtocol

from taskcast.hub.websocket_door import Overdue, Phase, Route, Timeouts, overdue, route_of
from tests.helpers import seed

PREFIXES = (b"GET /ws ", b"GET /ws?")


@given(st.binary(max_size=20), st.binary(max_size=20))
def test_route_is_decided_by_the_request_line_and_never_changes(head: bytes, more: bytes) -> None:
    route = route_of(head)
    if head.startswith(PREFIXES):
        assert route is Route.WEBSOCKET
    elif any(p.startswith(head) and p != head for p in PREFIXES):
        assert route is Route.UNDECIDED
    else:
        assert route is Route.HTTP
    if route is not Route.UNDECIDED:
        assert route_of(head + more) is route


def test_route_examples() -> None:
    assert route_of(b"GET /ws HTTP/1.1\r\n") is Route.WEBSOCKET
    assert route_of(b"GET /ws?token=x HTTP/1.1") is Route.WEBSOCKET
    assert route_of(b"GET /w") is Route.UNDECIDED
    assert route_of(b"GET /wss HTTP/1.1") is Route.HTTP
    assert route_of(b"GET /healthz HTTP/1.1") is Route.HTTP
    assert route_of(b"POST /api/events") is Route.HTTP


def test_overdue_follows_the_heartbeat() -> None:
    limits = Timeouts(handshake=10, idle=8)  # ping after 4 s quiet, drop 2 s after it
    assert overdue(Phase.SNIFFING, 0, 0, 0, 9, limits) is Overdue.NOTHING
    assert overdue(Phase.HANDSHAKE, 0, 0, 0, 11, limits) is Overdue.HANDSHAKE
    assert overdue(Phase.OPEN, 0, 100, 0, 103, limits) is Overdue.NOTHING
    assert overdue(Phase.OPEN, 0, 100, 0, 104, limits) is Overdue.PING
    assert overdue(Phase.OPEN, 0, 100, 104, 105, limits) is Overdue.NOTHING  # pong not due
    assert overdue(Phase.OPEN, 0, 100, 104, 106.5, limits) is Overdue.IDLE
    assert overdue(Phase.OPEN, 0, 105, 104, 106.5, limits) is Overdue.NOTHING  # it answered
    assert overdue(Phase.OPEN, 0, 0, 0, 1e9, Timeouts(10, 0)) is Overdue.NOTHING  # no limit
    assert overdue(Phase.CLOSING, 0, 0, 0, 1e9, limits) is Overdue.NOTHING


def test_open_websockets_are_swept_at_the_idle_timeouts_pace_not_every_second() -> None:
    defaults = Timeouts(handshake=10, idle=300)
    assert defaults.opening_sweep_interval == 1.0  # handshakes: at most 1 s late
    assert defaults.open_sweep_interval == 37.5  # a ping within 150 + 37.5 s of quiet
    assert Timeouts(handshake=0.1, idle=1).opening_sweep_interval == 0.05
    assert Timeouts(handshake=10, idle=1).open_sweep_interval == 0.125
    assert Timeouts(handshake=10, idle=0).open_sweep_interval is None  # no idle limit


class RawClient:
    """A websocket client on a raw socket: wsproto frames, the test decides the bytes."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.pending: list[Event] = []

    @classmethod
    async def connect(
        cls, port: int, *, byte_by_byte: bool = False, then: bytes = b""
    ) -> RawClient:
        client = cls(*await asyncio.open_connection("127.0.0.1", port))
        request = client.ws.send(Request(host=f"127.0.0.1:{port}", target="/ws"))
        if byte_by_byte:
            for i in range(len(request) - 1):
                client.writer.write(request[i : i + 1])
                await client.writer.drain()
            request = request[-1:]
        client.writer.write(request + then)
        assert isinstance(await client.event(), AcceptConnection)
        return client

    def send(self, *events: Event) -> None:
        self.writer.write(b"".join(self.ws.send(event) for event in events))

    def send_json(self, frame: dict[str, Any]) -> None:
        self.send(TextMessage(data=json.dumps(frame)))

    async def event(self, timeout: float = 10) -> Event:
        while not self.pending:
            data = await asyncio.wait_for(self.reader.read(65536), timeout)
            self.ws.receive_data(data or None)
            self.pending.extend(self.ws.events())
        return self.pending.pop(0)

    async def json(self) -> dict[str, Any]:
        event = await self.event()
        assert isinstance(event, TextMessage), event
        decoded: dict[str, Any] = json.loads(event.data)
        return decoded

    async def eof(self, timeout: float = 10) -> None:
        """Until the hub closed the socket (a FIN, or a reset when it dropped it)."""
        try:
            while await asyncio.wait_for(self.reader.read(65536), timeout):
                pass
        except ConnectionResetError:
            pass
        self.writer.close()


async def still_serving(port: int) -> None:
    client = await RawClient.connect(port)
    client.send_json({"type": "subscribe", "channel": "tasks.>"})
    assert (await client.json())["type"] == "subscribed"
    client.send(CloseConnection(code=1000))
    assert isinstance(await client.event(), CloseConnection)
    await client.eof()


async def test_a_handshake_in_pieces_fragments_pings_binary_and_close(start_hub: Any) -> None:
    hub = start_hub()
    subscribe = {"type": "subscribe", "channel": "tasks.>"}
    # The handshake arrives one byte at a time and the first frame in the same packet
    # as its last byte.
    first_frame = bytes(FrameProtocol(client=True, extensions=[]).send_data(json.dumps(subscribe)))
    client = await RawClient.connect(hub.port, byte_by_byte=True, then=first_frame)
    assert (await client.json())["type"] == "subscribed"
    # One publish in three fragments.
    text = json.dumps({"id": "frag-1", "channel": "tasks.frag", **seed("frag")})
    thirds = [
        text[: len(text) // 3],
        text[len(text) // 3 : 2 * len(text) // 3],
        text[2 * len(text) // 3 :],
    ]
    client.send(
        TextMessage(data=thirds[0], message_finished=False),
        TextMessage(data=thirds[1], message_finished=False),
        TextMessage(data=thirds[2], message_finished=True),
    )
    replies = [await client.json(), await client.json()]
    assert sorted(r["type"] for r in replies) == ["ack", "api_action"]
    client.send(Ping(payload=b"are you there"))
    pong = await client.event()
    assert isinstance(pong, Pong) and pong.payload == b"are you there"
    client.send(BytesMessage(data=b"\x00\x01"))
    assert (await client.json())["code"] == "binary_unsupported"
    client.send(CloseConnection(code=1000))
    closing = await client.event()
    assert isinstance(closing, CloseConnection) and closing.code == 1000
    await client.eof()


async def test_protocol_violations_close_that_connection_only(start_hub: Any) -> None:
    hub = start_hub()
    bad_utf8 = await RawClient.connect(hub.port)
    # A masked text frame whose payload is not UTF-8 (mask of zeros keeps it readable).
    bad_utf8.writer.write(b"\x81\x82\x00\x00\x00\x00\xc3\x28")
    closing = await bad_utf8.event()
    assert isinstance(closing, CloseConnection) and closing.code == 1007
    await bad_utf8.eof()
    unmasked = await RawClient.connect(hub.port)
    unmasked.writer.write(b"\x81\x05hello")  # clients must mask
    closing = await unmasked.event()
    assert isinstance(closing, CloseConnection) and closing.code == 1002
    await unmasked.eof()
    await still_serving(hub.port)


async def test_a_message_over_the_limit_in_small_fragments_is_closed_1009(start_hub: Any) -> None:
    hub = start_hub("--max-frame-bytes", "4096")
    client = await RawClient.connect(hub.port)
    client.send(*(TextMessage(data="x" * 1000, message_finished=False) for _ in range(5)))
    closing = await client.event()
    assert isinstance(closing, CloseConnection) and closing.code == 1009
    await client.eof()
    async with aiohttp.ClientSession() as session, session.get(f"{hub.http}/metrics") as response:
        assert "taskcast_oversized_frames_total 1.0" in await response.text()
    await still_serving(hub.port)


async def test_a_bad_upgrade_gets_400_with_an_error_body(start_hub: Any) -> None:
    hub = start_hub()
    reader, writer = await asyncio.open_connection("127.0.0.1", hub.port)
    writer.write(f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{hub.port}\r\n\r\n".encode())
    answer = await asyncio.wait_for(reader.read(), 10)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400")
    assert json.loads(body)["code"] == "invalid_frame"
    writer.close()
    await still_serving(hub.port)


async def test_an_upgrade_on_a_reused_http_connection_is_served(start_hub: Any) -> None:
    """A keep-alive client that asks for /healthz and then upgrades the same connection
    reaches aiohttp's /ws route; it behaves like the front door's."""
    hub = start_hub()
    reader, writer = await asyncio.open_connection("127.0.0.1", hub.port)
    writer.write(f"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{hub.port}\r\n\r\n".encode())
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    assert head.startswith(b"HTTP/1.1 200")
    length = next(
        int(line.split(b":")[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length")
    )
    await reader.readexactly(length)
    client = RawClient(reader, writer)
    writer.write(client.ws.send(Request(host=f"127.0.0.1:{hub.port}", target="/ws")))
    assert isinstance(await client.event(), AcceptConnection)
    client.send_json({"type": "subscribe", "channel": "tasks.>"})
    assert (await client.json())["type"] == "subscribed"
    client.send_json({"id": "reused-1", "channel": "tasks.r", **seed("r")})
    assert sorted([(await client.json())["type"], (await client.json())["type"]]) == [
        "ack",
        "api_action",
    ]


async def test_a_peer_that_never_answers_pings_is_dropped(start_hub: Any) -> None:
    hub = start_hub("--idle-timeout", "1")
    client = await RawClient.connect(hub.port)
    started = time.monotonic()
    ping = await client.event()
    assert isinstance(ping, Ping)  # after idle/2 of quiet; not answered
    await client.eof()
    assert time.monotonic() - started < 5
    async with aiohttp.ClientSession() as session, session.get(f"{hub.http}/metrics") as response:
        assert "taskcast_idle_disconnects_total 1.0" in await response.text()
    answering = await RawClient.connect(hub.port)  # one that answers stays
    for _ in range(3):
        ping = await answering.event()
        assert isinstance(ping, Ping)
        answering.send(ping.response())
    answering.send_json({"type": "subscribe", "channel": "tasks.>"})
    assert (await answering.json())["type"] == "subscribed"
