"""One client of the hub — a websocket or an SSE stream — its outbound queue and writer.

Fan-out never awaits a socket: it appends to the connection's ``OutboundBuffer``.
A websocket is then written directly, once per loop pass (the hub's ``WritePass``: one
``call_soon`` callback writes every connection that has frames; everything a fan-out
pass queued for one goes in one ``writev``, and no task wakes per delivery). When the
kernel takes less than all of it, the transport keeps the rest of the frame it stopped
in, and the connection writes nothing more until the transport says it has sent that
(its protocol's ``resume_writing``): meanwhile the frames after it wait in the queue,
shared with every other subscriber, instead of being copied into the transport's
buffer, and nothing polls. SSE goes through aiohttp's stream writer, in a writer task.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
from collections.abc import Callable
from typing import Protocol

from aiohttp import web
from aiohttp.abc import AbstractStreamWriter

from taskcast.auth import ANONYMOUS_ADMIN, Principal
from taskcast.broker import OutboundBuffer, Subscription
from taskcast.frames import encode
from taskcast.hub.config import HubConfig
from taskcast.ratelimit import TokenBucket
from taskcast.wsframe import text_frame

log = logging.getLogger("taskcast.hub")

CLOSE_GOING_AWAY = 1001
CLOSE_SLOW_CONSUMER = 4008
CLOSE_TOKEN_EXPIRED = 4401

_ids = itertools.count(1)


class Sink(Protocol):
    """Where a connection's frames go: a websocket (a ``DirectSink``, written without
    awaiting) or an SSE stream (``SSESink``, written by the connection's task)."""

    @property
    def closed(self) -> bool: ...

    async def close(self, code: int, reason: bytes) -> None: ...


IOV_MAX = os.sysconf("SC_IOV_MAX")  # buffers one writev takes


class DirectSink:
    """A websocket the hub writes itself, already framed (see wsframe), without awaiting.
    Both websocket doors are one."""

    __slots__ = ()
    transport: asyncio.Transport
    fd: int | None  # the socket's, when frames may go to it directly (plain_socket_fd)

    @property
    def closed(self) -> bool:
        raise NotImplementedError

    @property
    def behind(self) -> bool:
        """The transport holds bytes the kernel would not take yet."""
        return self.transport.get_write_buffer_size() > 0

    def write_direct(self, frames: list[tuple[int, bytes]]) -> int:
        """Hand frames that are already framed (``ClientConnection.deliver`` frames them;
        the hub frames each event once for all its subscribers) to the socket now,
        without awaiting, as far as the kernel takes them; gives how many were handed
        over. The frame the kernel stopped in goes to the transport, which keeps its
        rest and is then ``behind``; the frames after it stay with the caller, uncopied.

        On a plain socket the frames go in one ``writev``: no join into a new buffer —
        at 50,000 subscribers, joining the runs queued while a client was behind cost a
        worker 15% of its time, most of it faulting in fresh pages (perf). Through TLS,
        or after bytes the transport already holds, in one ``transport.write``."""
        transport = self.transport
        fd = self.fd
        if fd is None or transport.get_write_buffer_size():
            transport.write(b"".join([frame for _, frame in frames]))
            return len(frames)
        handed = 0
        while handed < len(frames):
            batch = [frame for _, frame in frames[handed : handed + IOV_MAX]]
            try:
                sent = os.writev(fd, batch)
            except BlockingIOError:
                sent = 0
            except OSError:
                # The transport meets the same error and closes as for its own writes.
                transport.write(b"".join([frame for _, frame in frames[handed:]]))
                return len(frames)
            for frame in batch:
                if sent < len(frame):
                    transport.write(memoryview(frame)[sent:] if sent else frame)
                    return handed + 1
                sent -= len(frame)
                handed += 1
        return handed

    def when_drained(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once the transport has handed all it holds to the kernel
        (not if the connection is lost first: then it is being closed)."""
        raise NotImplementedError


def plain_socket_fd(transport: asyncio.BaseTransport) -> int | None:
    """The descriptor of a plain TCP transport's socket, which the hub may write to
    while the transport holds nothing; None through TLS (bytes must go through its SSL
    object)."""
    if transport.get_extra_info("sslcontext") is not None:
        return None
    sock = transport.get_extra_info("socket")
    return None if sock is None else int(sock.fileno())


def pause_on_any_backlog(transport: asyncio.Transport) -> None:
    """Have the transport's protocol paused as soon as it holds a byte it could not
    send, and resumed once it holds none: ``DirectSink.when_drained`` hangs on that."""
    transport.set_write_buffer_limits(high=0, low=0)


class WritePass:
    """The websockets with frames queued this loop pass, written by one callback for
    all of them: a fan-out to N subscribers schedules one callback, not N. (Paced, one
    event at a time to 1,000 subscribers, a ``call_soon`` handle per connection and
    its run were ~13% of the hub's time: py-spy, docs/scale.md.) One per hub."""

    __slots__ = ("_due",)

    def __init__(self) -> None:
        self._due: list[ClientConnection] = []

    def add(self, connection: ClientConnection) -> None:
        if not self._due:
            asyncio.get_running_loop().call_soon(self._write_all)
        self._due.append(connection)

    def _write_all(self) -> None:
        due, self._due = self._due, []  # one written now may be due again: a new pass
        for connection in due:
            try:
                connection.write_queued()
            except Exception:  # one connection's bug must not leave the others unwritten
                log.exception("writing to %r failed", connection)


class WebSocketSink(DirectSink):
    """A websocket upgraded by aiohttp's ``/ws`` route (an upgrade on a connection that
    already served HTTP requests; see websocket_door): aiohttp does the handshake,
    reading, pings and the close handshake."""

    def __init__(
        self,
        ws: web.WebSocketResponse,
        writer: AbstractStreamWriter,
        transport: asyncio.Transport,
        close_timeout: float = 2.0,
    ) -> None:
        self.ws = ws
        self.writer = writer  # aiohttp's, whose drain() waits while its protocol is paused
        self.transport = transport
        self.fd = plain_socket_fd(transport)
        self.close_timeout = close_timeout
        self._waiting: asyncio.Task[None] | None = None
        pause_on_any_backlog(transport)

    @property
    def closed(self) -> bool:
        return self.ws.closed or self.transport.is_closing()

    def when_drained(self, callback: Callable[[], None]) -> None:
        self._waiting = asyncio.get_running_loop().create_task(self._wait_drained(callback))

    async def _wait_drained(self, callback: Callable[[], None]) -> None:
        try:
            await self.writer.drain()
        except ConnectionError:
            return  # lost: the route's handler detaches the connection
        finally:
            self._waiting = None
        callback()

    async def close(self, code: int, reason: bytes) -> None:
        """Close with ``code``; a peer that reads nothing cannot even take the close
        frame, so after ``close_timeout`` the socket is dropped with what it holds."""
        if self._waiting is not None:
            self._waiting.cancel()
        try:
            async with asyncio.timeout(self.close_timeout):
                await self.ws.close(code=code, message=reason)
        finally:
            if not self.transport.is_closing() or self.transport.get_write_buffer_size():
                self.transport.abort()


class SSESink:
    """Server-Sent Events: ``id: <seq>`` on events, so ``Last-Event-ID`` resumes."""

    def __init__(self, response: web.StreamResponse, transport: asyncio.Transport) -> None:
        self.response = response
        self.transport = transport

    @property
    def closed(self) -> bool:
        return self.transport.is_closing()

    async def write(self, frames: list[tuple[int, bytes]]) -> None:
        parts = []
        for seq, frame in frames:
            if not frame:
                parts.append(b": keep-alive\n\n")
            elif seq:
                parts.append(b"id: %d\ndata: %s\n\n" % (seq, frame))
            else:
                parts.append(b"data: %s\n\n" % frame)
        await self.response.write(b"".join(parts))

    async def close(self, code: int, reason: bytes) -> None:
        """End the stream cleanly if the reader takes it within two seconds, else drop
        the socket (a stalled reader must not pin the hub's memory)."""
        try:
            async with asyncio.timeout(2.0):
                await self.response.write_eof()
        except Exception:
            pass
        finally:
            if not self.transport.is_closing() or self.transport.get_write_buffer_size():
                self.transport.abort()


class ClientConnection:
    def __init__(
        self,
        sink: Sink,
        buffer_limit: int,
        peer: str,
        principal: Principal = ANONYMOUS_ADMIN,
        bucket: TokenBucket | None = None,
        writes: WritePass | None = None,
    ) -> None:
        """``writes``: the hub's write pass, which a websocket (a ``DirectSink``) needs."""
        self.sink = sink
        self.principal = principal
        self.bucket = bucket
        self.number = next(_ids)
        self.peer = peer
        self.outbound = OutboundBuffer(buffer_limit)
        self._subscriptions: dict[str, Subscription[ClientConnection]] = {}
        self.replays: dict[str, asyncio.Task[None]] = {}  # by pattern
        self._replay_turn: asyncio.Lock | None = None  # made on first replay
        self.expiry: asyncio.TimerHandle | None = None  # closes at the token's exp
        self.published = False
        # An event of this connection was not stored: later ones are refused until the
        # client reconnects and resends in order (Hub._held_back).
        self.publish_failed = False
        self._closing = False
        # A websocket is written directly (see the module docstring); other sinks by a task.
        self._direct = sink if isinstance(sink, DirectSink) else None
        if self._direct is not None and writes is None:
            raise ValueError("a websocket connection needs the hub's WritePass")
        self._writes = writes
        self._scheduled = False  # in this loop pass's WritePass already
        self._blocked = False  # the socket holds unsent bytes: writes wait until it drains
        # Made only when needed: an asyncio.Event holds a deque from birth, and most
        # connections never wait for a write.
        self._wake: asyncio.Event | None = None
        self._written: asyncio.Event | None = None
        self._writer_task: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"<connection #{self.number} {self.peer}>"

    def start(self) -> None:
        if self._direct is None:
            self._wake = asyncio.Event()
            self._writer_task = asyncio.create_task(self._write_loop(), name=repr(self))

    # --- state the hub reads (one home: the hub never reaches into the queue) ----

    @property
    def closing(self) -> bool:
        """Closed, or being closed: nothing more is queued for it."""
        return self._closing

    def begin_close(self) -> None:
        """Stop queueing at once (later deliveries of a batch are skipped)."""
        self._closing = True

    @property
    def last_sent_seq(self) -> int:
        """The last seq handed to the socket (a slow consumer resumes after it)."""
        return self.outbound.last_taken_seq

    @property
    def behind(self) -> bool:
        """Its socket holds bytes the kernel would not take: the client is not keeping up,
        and what comes for it waits in its queue until it reads."""
        return self._blocked

    @property
    def queued_frames(self) -> int:
        return len(self.outbound.frames)

    @property
    def queued_bytes(self) -> int:
        return self.outbound.size

    # --- subscriptions ------------------------------------------------------

    @property
    def subscription_count(self) -> int:
        return len(self._subscriptions)

    def subscription(self, pattern: str) -> Subscription[ClientConnection] | None:
        return self._subscriptions.get(pattern)

    def add_subscription(self, subscription: Subscription[ClientConnection]) -> None:
        self._subscriptions[subscription.pattern] = subscription

    def take_subscription(self, pattern: str) -> Subscription[ClientConnection] | None:
        return self._subscriptions.pop(pattern, None)

    def take_all_subscriptions(self) -> list[Subscription[ClientConnection]]:
        taken = list(self._subscriptions.values())
        self._subscriptions.clear()
        return taken

    # --- queueing -------------------------------------------------------------

    def deliver(self, frame: bytes, seq: int = 0) -> bool:
        """Queue a reply (ack, error, pong); False when the buffer is full — a client
        that does not read, whatever it was sent, is a slow consumer."""
        if self._closing:
            return True
        if self._direct is not None:
            frame = text_frame(frame)
        if not self.outbound.offer(frame, seq):
            return False
        self._kick()
        return True

    def deliver_run(self, frames: list[bytes], seqs: list[int], framed: bytes) -> bool:
        """Queue consecutive live events at once; False when the buffer is full. A
        websocket takes ``framed`` — all of them framed, made once for all subscribers —
        as one chunk; SSE takes them one by one."""
        if self._closing:
            return True
        outbound = self.outbound
        if self._direct is not None:
            if not outbound.offer(framed, seqs[-1]):
                return False
        else:
            for frame, seq in zip(frames, seqs, strict=True):
                if not outbound.offer(frame, seq):
                    return False
        self._kick()
        return True

    def put_replay(self, frame: bytes, seq: int) -> None:
        """Queue a replayed event; the replay waits for room (``wait_for_room``) instead."""
        if not self._closing:
            self.outbound.put(text_frame(frame) if self._direct is not None else frame, seq)
            self._kick()

    def _kick(self) -> None:
        """Something was queued: have it written."""
        if self._direct is None:
            if self._wake is not None:
                self._wake.set()
        elif not self._scheduled and not self._blocked:
            assert self._writes is not None  # __init__: a direct sink comes with one
            self._scheduled = True
            self._writes.add(self)

    def write_queued(self) -> None:
        """Write everything queued in one go; when the kernel took less than all of it,
        the next write waits until the socket has drained (meanwhile the queue keeps what
        was not handed over and grows, up to the slow-consumer limit)."""
        self._scheduled = False
        if self._closing or self._blocked or not self.outbound.frames:
            return
        sink = self._direct
        assert sink is not None
        if sink.closed:
            self._closing = True  # the reader side notices and cleans up
            self._notify_written()
            return
        outbound = self.outbound
        outbound.consume(sink.write_direct(outbound.frames))
        self._notify_written()
        if sink.behind:
            self._blocked = True
            sink.when_drained(self._drained)
        elif outbound.frames:  # the transport sent the rest of a frame at once after all
            self._kick()

    def _drained(self) -> None:
        self._blocked = False
        self.write_queued()

    def _notify_written(self) -> None:
        if self._written is not None:
            self._written.set()

    def _written_event(self) -> asyncio.Event:
        """The event the writer sets after each write, cleared for a new wait."""
        if self._written is None:
            self._written = asyncio.Event()
        self._written.clear()
        return self._written

    @property
    def replay_turn(self) -> asyncio.Lock:
        """A connection's replays read the log one page at a time, taking turns."""
        if self._replay_turn is None:
            self._replay_turn = asyncio.Lock()
        return self._replay_turn

    async def wait_for_room(self) -> None:
        """Back-pressure for replay: wait until the queue is below its low-water mark."""
        while not self._closing and not self.outbound.below_low_water():
            await self._written_event().wait()

    async def _write_loop(self) -> None:
        """The writer of sinks that must be awaited (SSE)."""
        sink, wake = self.sink, self._wake
        assert wake is not None and isinstance(sink, SSESink)
        try:
            while True:
                await wake.wait()
                wake.clear()
                while self.outbound.frames:
                    if sink.closed:
                        raise ConnectionResetError("closed")
                    await sink.write(self.outbound.take())
                    self._notify_written()
        except (ConnectionError, RuntimeError):
            # The peer went away mid-write; the reader side notices and cleans up.
            self._closing = True
            self._notify_written()

    async def flush(self) -> None:
        """Wait until queued frames reached the socket (before a graceful close)."""
        while self.outbound.frames and not self._closing:
            await self._written_event().wait()

    async def close(self, code: int, reason: dict[str, object] | None = None) -> None:
        self.stop_writer()
        if self._writer_task is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._writer_task
        self.outbound.clear()
        with contextlib.suppress(Exception):
            await self.sink.close(code, encode(reason) if reason else b"")

    def stop_writer(self) -> None:
        self._closing = True
        if self.expiry is not None:
            self.expiry.cancel()
        for replay in self.replays.values():
            replay.cancel()  # a client that left costs no more reads
        self.replays.clear()
        self._notify_written()
        if self._writer_task is not None:
            self._writer_task.cancel()


def open_connection(
    sink: Sink, config: HubConfig, peer: str, principal: Principal, writes: WritePass
) -> ClientConnection:
    """A websocket client of either door, with its publish rate limit when one is set."""
    bucket = TokenBucket(config.publish_rate, config.publish_burst) if config.publish_rate else None
    return ClientConnection(sink, config.max_subscriber_buffer, peer, principal, bucket, writes)
