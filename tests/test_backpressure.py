"""Subscribers that stop reading: the hub sees their sockets fill, keeps what comes for
them in their queues (waiting for the transport to say it drained, not polling), and
writes it all, in order, once they read again — through both websocket doors (the
front door, and aiohttp's /ws route that an upgrade on a reused HTTP connection
reaches), and over TLS."""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
import struct
from pathlib import Path
from typing import Any, cast

import aiohttp
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, Request, TextMessage

from taskcast.hub.connection import (
    IOV_MAX,
    ClientConnection,
    DirectSink,
    Sink,
    WritePass,
    pause_on_any_backlog,
    plain_socket_fd,
)
from taskcast.wsframe import text_frame
from tests.helpers import (
    bearer,
    collect_events,
    metric,
    publish_acked,
    recv,
    seed,
    self_signed,
    small_receive_buffer,
    subscribe,
    token,
)


class StalledSubscriber:
    """A websocket client on a blocking socket with a tiny receive buffer, which reads
    only when told to: until then the hub's writes to it back up at once."""

    def __init__(self, port: int, *, http_first: bool) -> None:
        sock = self.sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.settimeout(30)
        sock.connect(("127.0.0.1", port))
        self.pending = b""
        if http_first:  # a keep-alive request first: the upgrade then reaches aiohttp's route
            sock.sendall(f"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
            head = self._read_until(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200"), head
            length = next(
                int(line.split(b":")[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length")
            )
            while len(self.pending) < length:
                self.pending += sock.recv(65536)
            self.pending = self.pending[length:]
        self.ws = WSConnection(ConnectionType.CLIENT)
        sock.sendall(self.ws.send(Request(host=f"127.0.0.1:{port}", target="/ws")))
        if self.pending:  # (wsproto takes b"" for the end of the stream)
            self.ws.receive_data(self.pending)
        self.texts: list[dict[str, Any]] = []
        self._partial = ""
        accepted = next(iter(self.ws.events()), None)
        while accepted is None:
            self.ws.receive_data(sock.recv(65536))
            accepted = next(iter(self.ws.events()), None)
        assert isinstance(accepted, AcceptConnection), accepted
        sock.sendall(
            self.ws.send(TextMessage(data=json.dumps({"type": "subscribe", "channel": "tasks.>"})))
        )
        assert self.next_text()["type"] == "subscribed"

    def _read_until(self, marker: bytes) -> bytes:
        while marker not in self.pending:
            self.pending += self.sock.recv(65536)
        head, _, self.pending = self.pending.partition(marker)
        return head

    def next_text(self) -> dict[str, Any]:
        while not self.texts:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionResetError("the hub closed the socket")
            self.ws.receive_data(data)
            for event in self.ws.events():
                if isinstance(event, TextMessage):
                    self._partial += event.data
                    if event.message_finished:
                        self.texts.append(json.loads(self._partial))
                        self._partial = ""
        return self.texts.pop(0)

    def read_events(self, count: int) -> list[int]:
        """Read now: the seqs of the next ``count`` events."""
        return [self.next_text()["seq"] for _ in range(count)]


TOTAL = 3000  # events of ~2 KB: ~6 MB, more than the kernel takes for a socket (tcp_wmem: 4 MiB)


async def publish_past_the_kernels_buffers(
    session: aiohttp.ClientSession, url: str, headers: dict[str, str] | None = None
) -> tuple[aiohttp.ClientWebSocketResponse, aiohttp.ClientWebSocketResponse]:
    """Publish TOTAL events while a subscriber that reads keeps up with them (stalled
    ones hold up nobody); the publisher and that watcher, which has read them all."""
    watcher = await session.ws_connect(url, headers=headers)
    await subscribe(watcher, "tasks.>")
    publisher = await session.ws_connect(url, headers=headers)
    watched = asyncio.create_task(collect_events(watcher, TOTAL, timeout=120))
    for _ in range(0, TOTAL, 100):
        await publish_acked(publisher, [seed("s", "x" * 2000) for _ in range(100)])
    assert len(await watched) == TOTAL
    return publisher, watcher


async def test_subscribers_that_stop_reading_wait_in_the_queue_then_get_everything(
    start_hub: Any,
) -> None:
    hub = start_hub("--max-subscriber-buffer", str(32 * 1024 * 1024))
    stalled = await asyncio.to_thread(
        lambda: [StalledSubscriber(hub.port, http_first=n % 2 == 1) for n in range(20)]
    )
    async with aiohttp.ClientSession() as session:
        await publish_past_the_kernels_buffers(session, hub.url)

        async with asyncio.timeout(20):  # the hub's fan-out pass may still be under way
            while await metric(session, hub.http, "taskcast_subscribers_behind") < len(stalled):
                await asyncio.sleep(0.05)
        assert await metric(session, hub.http, "taskcast_subscriber_queued_bytes") > 0

        received = await asyncio.to_thread(lambda: [s.read_events(TOTAL) for s in stalled])
        for seqs in received:
            assert seqs == list(range(1, TOTAL + 1))  # all, in order: none dropped as slow
        assert await metric(session, hub.http, "taskcast_subscribers_behind") == 0
        assert await metric(session, hub.http, "taskcast_slow_consumer_disconnects_total") == 0
    for subscriber in stalled:
        subscriber.sock.close()


async def test_a_slow_consumer_that_never_reads_is_dropped_after_the_close_timeout(
    start_hub: Any,
) -> None:
    """Closed with 4008 for a queue over --max-subscriber-buffer, a client that reads
    nothing cannot take the close frame either: after --close-timeout the hub drops the
    socket with what it holds, and serves the others on."""
    hub = start_hub("--max-subscriber-buffer", str(256 * 1024), "--close-timeout", "0.5")
    stalled = await asyncio.to_thread(StalledSubscriber, hub.port, http_first=False)
    async with aiohttp.ClientSession() as session:
        publisher, watcher = await publish_past_the_kernels_buffers(session, hub.url)
        assert await metric(session, hub.http, "taskcast_slow_consumer_disconnects_total") == 1
        async with asyncio.timeout(20):  # 0.5 s after the close: two connections left
            while await metric(session, hub.http, "taskcast_connections") > 2:
                await asyncio.sleep(0.05)

        def read_to_the_end() -> list[int]:
            seqs: list[int] = []
            try:
                while True:
                    seqs.append(stalled.next_text()["seq"])
            except ConnectionError:
                pass  # dropped: a reset, or the end of the stream with no close frame
            return seqs

        seqs = await asyncio.to_thread(read_to_the_end)
        assert seqs == list(range(1, len(seqs) + 1)) and len(seqs) < TOTAL
        await publish_acked(publisher, [seed("after")])
        (after,) = await collect_events(watcher, 1)
        assert after["seq"] == TOTAL + 1
    stalled.sock.close()


async def test_over_tls_clients_that_are_behind_get_everything_once_they_read(
    secure_hub: Any, tmp_path: Path
) -> None:
    """The same through asyncio's TLS transport, which pauses and resumes the door on
    its own buffer: aiohttp clients with a tiny receive buffer that read nothing yet."""
    cert, key = self_signed(tmp_path)
    hub = secure_hub("--tls-cert", str(cert), "--tls-key", str(key))
    context = ssl.create_default_context(cafile=str(cert))
    credentials = bearer(token(publish=["tasks.>"], subscribe=["tasks.>"], metrics=True))
    async with (
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as session,
        aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=context, socket_factory=small_receive_buffer)
        ) as slow_session,
    ):
        stalled = [await slow_session.ws_connect(hub.url, headers=credentials) for _ in range(4)]
        for client in stalled:
            await subscribe(client, "tasks.>")
        await publish_past_the_kernels_buffers(session, hub.url, credentials)
        async with asyncio.timeout(20):
            while await metric(session, hub.http, "taskcast_subscribers_behind", credentials) < 4:
                await asyncio.sleep(0.05)
        for client in stalled:
            seqs = [(await recv(client, timeout=30))["seq"] for _ in range(TOTAL)]
            assert seqs == list(range(1, TOTAL + 1))
        assert await metric(session, hub.http, "taskcast_subscribers_behind", credentials) == 0


class RawDoor(asyncio.Protocol, DirectSink):
    """The hub's way of writing a websocket (``DirectSink``) on a bare asyncio transport
    — a loopback TCP connection accepted by an asyncio server — without the protocol
    around it, to watch exactly what the kernel, the transport and the queue hold."""

    def __init__(self) -> None:
        self.opened = asyncio.get_running_loop().create_future()
        self.lost = asyncio.Event()
        self.resumed = asyncio.Event()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.fd = plain_socket_fd(transport)
        pause_on_any_backlog(transport)
        self.opened.set_result(None)

    @property
    def closed(self) -> bool:
        return self.transport.is_closing()

    def resume_writing(self) -> None:
        self.resumed.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost.set()


class BrokenDoor(RawDoor):
    """A door whose write fails in a way no socket error explains: a bug."""

    def write_direct(self, frames: list[tuple[int, bytes]]) -> int:
        raise RuntimeError("a bug in this connection's write")


async def raw_door_and_client(
    receive_buffer: int | None, door_type: type[RawDoor] = RawDoor
) -> tuple[RawDoor, socket.socket]:
    loop = asyncio.get_running_loop()
    accepted: asyncio.Future[RawDoor] = loop.create_future()

    def accept() -> RawDoor:
        door = door_type()
        accepted.set_result(door)
        return door

    server = await loop.create_server(accept, "127.0.0.1", 0)
    client = socket.socket()
    if receive_buffer is not None:
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    client.setblocking(False)
    await loop.sock_connect(client, server.sockets[0].getsockname())
    door = await accepted
    await door.opened
    server.close()
    return door, client


async def test_a_write_the_kernel_takes_in_part_leaves_the_rest_in_the_queue() -> None:
    """The transport keeps only the rest of the frame the kernel stopped in; the frames
    after it are not handed over (nor copied) until the transport has sent that, and
    the reader gets every byte, in order."""
    loop = asyncio.get_running_loop()
    door, client = await raw_door_and_client(receive_buffer=4096)
    assert door.fd is not None  # a plain socket: frames go out in one writev
    frames = [(n, bytes([65 + n % 26]) * 1000) for n in range(1, 3001)]
    expected = b"".join(frame for _, frame in frames)
    handed = door.write_direct(frames)
    assert 0 < handed < len(frames)
    assert door.behind
    assert door.transport.get_write_buffer_size() < 1000  # the rest of one frame
    received = bytearray()
    async with asyncio.timeout(30):
        while len(received) < len(expected):
            if handed < len(frames) and door.resumed.is_set():
                door.resumed.clear()
                handed += door.write_direct(frames[handed:])
                assert door.transport.get_write_buffer_size() < 1000
            received += await loop.sock_recv(client, 65536)
    assert handed == len(frames)
    assert bytes(received) == expected
    client.close()


async def test_more_frames_than_one_writev_takes_go_out_in_order() -> None:
    """A queue of replayed events holds a frame per event: more than IOV_MAX of them
    take several writev calls in one write."""
    loop = asyncio.get_running_loop()
    door, client = await raw_door_and_client(receive_buffer=None)
    frames = [(n, b"%06d;" % n) for n in range(1, IOV_MAX * 2 + 500)]
    assert door.write_direct(frames) == len(frames)
    assert not door.behind
    expected = b"".join(frame for _, frame in frames)
    received = bytearray()
    async with asyncio.timeout(30):
        while len(received) < len(expected):
            received += await loop.sock_recv(client, 65536)
    assert bytes(received) == expected
    client.close()


async def test_a_write_to_a_reset_connection_closes_it_through_the_transport() -> None:
    """The peer reset the connection: writev fails, and the transport, handed the same
    bytes, meets the error and closes as it does for its own writes."""
    door, client = await raw_door_and_client(receive_buffer=None)
    client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    client.close()  # an RST, not a FIN
    async with asyncio.timeout(10):
        while True:  # until the reset has reached the door's socket
            handed = door.write_direct([(1, b"x" * 100), (2, b"y" * 100)])
            assert handed == 2
            if door.transport.is_closing():
                break
            await asyncio.sleep(0.01)
        await door.lost.wait()


async def test_one_connection_failing_its_write_leaves_the_others_in_the_pass_written(
    caplog: Any,
) -> None:
    """One write pass writes every connection a fan-out queued for: a bug in one
    connection's write is logged, and the ones after it in the same pass still get
    their frames, then the next pass's."""
    loop = asyncio.get_running_loop()
    writes = WritePass()
    broken_door, broken_client = await raw_door_and_client(None, BrokenDoor)
    door, client = await raw_door_and_client(None)
    # A RawDoor has no close(): these two connections are never closed.
    broken = ClientConnection(cast(Sink, broken_door), 1 << 20, "broken", writes=writes)
    working = ClientConnection(cast(Sink, door), 1 << 20, "working", writes=writes)
    for seq in (1, 2):
        events = [b'{"type":"api_action","seq":%d}' % seq]
        framed = text_frame(events[0])
        for connection in (broken, working):  # the broken one first in the pass
            assert connection.deliver_run(events, [seq], framed)
        received = bytearray()
        async with asyncio.timeout(10):
            while len(received) < len(framed):
                received += await loop.sock_recv(client, 65536)
        assert bytes(received) == framed
        assert working.last_sent_seq == seq and working.queued_frames == 0
    assert "writing to <connection" in caplog.text and "a bug in this connection" in caplog.text
    broken_client.close()
    client.close()
