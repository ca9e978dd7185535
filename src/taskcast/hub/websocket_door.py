"""The hub's front door: a fresh connection whose first request is ``GET /ws`` is a
websocket served here on the bare asyncio transport (the handshake by wsproto, frames
by ``wsframe``); any other
first request is handed to aiohttp, which serves the rest of that connection.

Why not aiohttp for websockets too: per idle subscriber it keeps the parsed upgrade
request, a reader and its queue, a response object, a handler task and its coroutine
frames through the middlewares — about 16 KB (docs/architecture.md). Here a websocket
is this one object (it is also the connection's sink), a small frame reader and the
transport, and each frame is handled as it is read (no task wakes per message).

An upgrade that arrives on a connection aiohttp already serves (a keep-alive HTTP
client reusing it) is still served by aiohttp's ``/ws`` route; both doors decide with
the same policy functions (``access.py``) and feed the same ``Hub``.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from urllib.parse import parse_qsl, urlsplit

from wsproto import ConnectionType
from wsproto.events import AcceptConnection, RejectConnection, RejectData, Request
from wsproto.handshake import H11Handshake
from wsproto.utilities import RemoteProtocolError

from taskcast.auth import Principal
from taskcast.frames import FrameError, error_frame
from taskcast.hub.access import HTTP_STATUS, authenticated, browser_refusal
from taskcast.hub.config import HubConfig
from taskcast.hub.connection import (
    ClientConnection,
    DirectSink,
    open_connection,
    pause_on_any_backlog,
    plain_socket_fd,
)
from taskcast.hub.core import Hub
from taskcast.vocabulary import ErrorCode
from taskcast.wsframe import (
    CLOSE_MESSAGE_TOO_BIG,
    FrameReader,
    Opcode,
    close_frame,
    close_reply,
    control_frame,
)

log = logging.getLogger("taskcast.hub")

CLOSE_INTERNAL_ERROR = 1011
BINARY_REFUSAL = error_frame(ErrorCode.BINARY_UNSUPPORTED, "frames must be JSON text frames")
_WEBSOCKET_REQUESTS = (b"GET /ws ", b"GET /ws?")
_SNIFF_BYTES = len(_WEBSOCKET_REQUESTS[0])
MAX_REQUEST_HEAD = 16 * 1024  # like h11's limit; aiohttp allows 8 KiB per header line


class Route(enum.Enum):
    UNDECIDED = "undecided"  # not enough bytes yet
    WEBSOCKET = "websocket"
    HTTP = "http"


def route_of(head: bytes) -> Route:
    """Where a fresh connection goes, from the first bytes it sent."""
    if head.startswith(_WEBSOCKET_REQUESTS):
        return Route.WEBSOCKET
    if len(head) < _SNIFF_BYTES and any(p.startswith(head) for p in _WEBSOCKET_REQUESTS):
        return Route.UNDECIDED
    return Route.HTTP


class Phase(enum.Enum):
    SNIFFING = "sniffing"  # reading the first bytes
    HANDSHAKE = "handshake"  # reading the upgrade request
    OPEN = "open"
    CLOSING = "closing"  # our close frame sent, waiting for the peer's
    CLOSED = "closed"


class Overdue(enum.Enum):
    NOTHING = "nothing"
    PING = "ping"  # quiet for idle/2: ask for a pong
    HANDSHAKE = "handshake"  # no complete request within the handshake timeout
    IDLE = "idle"  # no pong (nor anything else) within idle/4 of the ping


@dataclass(frozen=True, slots=True)
class Timeouts:
    handshake: float
    idle: float  # 0: no limit

    @classmethod
    def of(cls, config: HubConfig) -> Timeouts:
        return cls(config.handshake_timeout_seconds, config.idle_timeout_seconds)

    @property
    def opening_sweep_interval(self) -> float:
        """How often doors still in their handshake are checked (a handshake ends within
        a quarter of its timeout past it)."""
        return max(0.05, min(self.handshake / 4, 1.0))

    @property
    def open_sweep_interval(self) -> float | None:
        """How often open websockets are checked: an eighth of the idle timeout — a ping
        goes out within idle/2 + idle/8 of quiet. Not every second: at 12,500 open
        sockets a worker spent 14% of its time sweeping them (py-spy). None: no limit."""
        return max(0.05, self.idle / 8) if self.idle else None


def overdue(
    phase: Phase, opened: float, last_seen: float, ping_sent: float, now: float, limits: Timeouts
) -> Overdue:
    """What a connection's silence calls for — aiohttp's heartbeat, which the other door
    uses with ``heartbeat=idle/2``: a ping after idle/2 without a frame; no frame within
    idle/4 of it closes the connection. ``ping_sent`` is 0 when no ping is out."""
    if phase is Phase.SNIFFING or phase is Phase.HANDSHAKE:
        return Overdue.HANDSHAKE if now - opened > limits.handshake else Overdue.NOTHING
    if phase is not Phase.OPEN or not limits.idle:
        return Overdue.NOTHING
    if ping_sent and last_seen <= ping_sent:
        return Overdue.IDLE if now - ping_sent > limits.idle / 4 else Overdue.NOTHING
    return Overdue.PING if now - last_seen >= limits.idle / 2 else Overdue.NOTHING


def first_query_value(target: str, name: str) -> str | None:
    for key, value in parse_qsl(urlsplit(target).query, keep_blank_values=True):
        if key == name:
            return value
    return None


class Doors:
    """The hub's websocket doors: the factory the listening socket calls, and the
    sweep that enforces the handshake and idle timeouts (one timer for all, not one per
    connection)."""

    def __init__(self, hub: Hub, http: Callable[[], asyncio.Protocol]) -> None:
        self.hub = hub
        self.http = http
        self.limits = Timeouts.of(hub.config)
        self.opening: set[WebSocketDoor] = set()  # sniffing or in the handshake
        self.open: set[WebSocketDoor] = set()  # open websockets (idle timeout)
        self._sweepers: list[asyncio.Task[None]] = []

    def __call__(self) -> WebSocketDoor:
        return WebSocketDoor(self)

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        sweeps = [(self.opening, self.limits.opening_sweep_interval)]
        if self.limits.open_sweep_interval is not None:
            sweeps.append((self.open, self.limits.open_sweep_interval))
        self._sweepers = [
            loop.create_task(self._sweep_loop(doors, interval)) for doors, interval in sweeps
        ]

    async def stop(self) -> None:
        for sweeper in self._sweepers:
            sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sweeper

    def forget(self, door: WebSocketDoor) -> None:
        self.opening.discard(door)
        self.open.discard(door)

    async def _sweep_loop(self, doors: set[WebSocketDoor], interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                self.sweep(doors, time.monotonic())
            except Exception:
                log.exception("websocket timeout sweep failed")

    def sweep(self, doors: set[WebSocketDoor], now: float) -> None:
        limits = self.limits
        for door in list(doors):
            due = overdue(door.phase, door.opened, door.last_seen, door.ping_sent, now, limits)
            if due is Overdue.PING:
                door.ping(now)
            elif due is Overdue.HANDSHAKE:
                door.drop()
            elif due is Overdue.IDLE:
                self.hub.stats.idle_disconnects += 1
                door.drop()


class WebSocketDoor(asyncio.Protocol, DirectSink):
    """One connection from its first byte: the sniffer, the websocket handshake, then
    the open websocket and the ``Sink`` its ``ClientConnection`` writes to."""

    __slots__ = (
        "closed_waiter",
        "connection",
        "doors",
        "drained_callback",
        "fd",
        "handshake",
        "head",
        "last_seen",
        "opened",
        "phase",
        "ping_sent",
        "reader",
        "transport",
    )

    def __init__(self, doors: Doors) -> None:
        self.doors = doors
        self.phase = Phase.SNIFFING
        self.head = b""
        self.handshake: H11Handshake | None = None
        self.reader: FrameReader | None = None  # made when the websocket opens
        self.connection: ClientConnection | None = None
        self.opened = self.last_seen = time.monotonic()
        self.ping_sent = 0.0
        self.closed_waiter: asyncio.Future[None] | None = None
        self.drained_callback: Callable[[], None] | None = None
        self.fd: int | None = None  # set when the websocket opens

    # --- asyncio.Protocol ---------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.doors.opening.add(self)

    def data_received(self, data: bytes) -> None:
        self.last_seen = time.monotonic()
        phase = self.phase
        if phase is Phase.OPEN or phase is Phase.CLOSING:
            self._receive_frames(data)
        elif phase is Phase.SNIFFING:
            self._sniff(data)
        elif phase is Phase.HANDSHAKE:
            self._receive_handshake(data)

    def eof_received(self) -> bool | None:
        return None  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self._finish()

    def resume_writing(self) -> None:
        """The transport sent all it held (``pause_on_any_backlog``; the pause itself
        needs nothing: the connection learnt it from ``write_direct``)."""
        callback, self.drained_callback = self.drained_callback, None
        if callback is not None:
            callback()

    # --- the Sink a ClientConnection writes to ------------------------------

    @property
    def closed(self) -> bool:
        return self.phase is not Phase.OPEN or self.transport.is_closing()

    def when_drained(self, callback: Callable[[], None]) -> None:
        self.drained_callback = callback

    async def close(self, code: int, reason: bytes) -> None:
        """Send a close frame and wait ``close_timeout`` for the peer's; a peer that
        reads nothing cannot even take the close frame, so then the socket is dropped
        with what it holds."""
        transport = self.transport
        try:
            if self.phase is Phase.OPEN and not transport.is_closing():
                self.phase = Phase.CLOSING
                transport.write(close_frame(code, reason))
                waiter = self.closed_waiter = asyncio.get_running_loop().create_future()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.doors.hub.config.close_timeout_seconds):
                        await waiter
        finally:
            if not transport.is_closing() or transport.get_write_buffer_size():
                transport.abort()

    # --- the phases ---------------------------------------------------------

    def _sniff(self, data: bytes) -> None:
        head = self.head = self.head + data
        route = route_of(head)
        if route is Route.UNDECIDED:
            return
        self.head = b""
        if route is Route.HTTP:
            self._hand_to_http(head)
            return
        self.phase = Phase.HANDSHAKE
        self.handshake = H11Handshake(ConnectionType.SERVER)
        self._receive_handshake(head)

    def _hand_to_http(self, head: bytes) -> None:
        """aiohttp serves this connection from here on (its keep-alive, its timeouts)."""
        self.doors.forget(self)
        self.phase = Phase.CLOSED
        protocol = self.doors.http()
        self.transport.set_protocol(protocol)
        protocol.connection_made(self.transport)
        protocol.data_received(head)

    def _receive_handshake(self, data: bytes) -> None:
        """Buffer the request head; its end is the first blank line (an upgrade has no
        body). wsproto gets the head alone: it does not pass on bytes that came after
        it, so frames sent with the request are fed to the connection here."""
        head = self.head = self.head + data
        end = head.find(b"\r\n\r\n")
        if end < 0:
            if len(head) > MAX_REQUEST_HEAD:
                self._refuse(FrameError(ErrorCode.TOO_LARGE, "request head too large"), 431)
            return
        self.head = b""
        handshake = self.handshake
        assert handshake is not None
        try:
            handshake.receive_data(head[: end + 4])
            for event in handshake.events():
                if isinstance(event, Request):
                    self._upgrade(handshake, event, head[end + 4 :])
                    return
        except RemoteProtocolError as exc:
            hint = exc.event_hint
            status = hint.status_code if isinstance(hint, RejectConnection) else 400
            if status == HTTPStatus.UPGRADE_REQUIRED:
                # wsproto says "Missing header" for a version it does not speak, too.
                message = "unsupported Sec-WebSocket-Version: this hub speaks 13 (RFC 6455)"
            else:
                message = f"not a websocket upgrade: {exc}"
            extra = list(hint.headers) if isinstance(hint, RejectConnection) else []
            self._refuse(FrameError(ErrorCode.INVALID_FRAME, message), status, extra)

    def _upgrade(self, handshake: H11Handshake, request: Request, trailing: bytes) -> None:
        """The door policy, in the order the HTTP door applies it; then 101."""
        hub = self.doors.hub
        config = hub.config
        headers = {
            name.decode("latin-1"): value.decode("latin-1") for name, value in request.extra_headers
        }
        transport = self.transport
        refusal = browser_refusal(
            config,
            method="GET",
            host=request.host,
            origin=headers.get("origin"),
            content_type=None,
            scheme="https" if transport.get_extra_info("sslcontext") is not None else "http",
        )
        if refusal is not None:
            hub.count_refused(refusal.code)
            self._refuse(refusal)
            return
        principal = authenticated(
            config, headers.get("authorization"), first_query_value(request.target, "token")
        )
        if isinstance(principal, FrameError):
            hub.count_refused("unauthorized")
            self._refuse(principal)
            return
        peer = peer_of(transport)
        refusal = hub.admission_refusal(peer)
        if refusal is not None:
            hub.count_refused(refusal.code)
            self._refuse(refusal)
            return
        self._accept(handshake, principal, peer, trailing)

    def _accept(
        self, handshake: H11Handshake, principal: Principal, peer: str, trailing: bytes
    ) -> None:
        self.transport.write(handshake.send(AcceptConnection()))
        hub = self.doors.hub
        self.handshake = None  # wsproto's part ends here; frames are read by FrameReader
        self.reader = FrameReader(hub.config.max_frame_bytes)
        self.phase = Phase.OPEN
        self.doors.opening.discard(self)
        self.doors.open.add(self)
        pause_on_any_backlog(self.transport)
        self.fd = plain_socket_fd(self.transport)
        self.connection = open_connection(self, hub.config, peer, principal, hub.write_pass)
        hub.attach(self.connection)
        if trailing:  # frames that came with the request
            self._receive_frames(trailing)

    def _refuse(
        self,
        error: FrameError,
        status: int | None = None,
        extra_headers: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        """Answer the upgrade request with an HTTP error (the error frame as its body)
        and close, like the HTTP door's ``http_refusal``. ``extra_headers``: what the
        status calls for (426 names the version it wants: ``Sec-WebSocket-Version``)."""
        status = status or HTTP_STATUS.get(error.code, 400)
        body = error.to_frame()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
            *(extra_headers or []),
        ]
        if status == HTTPStatus.UNAUTHORIZED:
            headers.append((b"www-authenticate", b'Bearer realm="taskcast"'))
        handshake = self.handshake
        assert handshake is not None  # refusals happen during the handshake only
        answer = handshake.send(
            RejectConnection(status_code=status, headers=headers, has_body=True)
        ) + handshake.send(RejectData(data=body))
        self.phase = Phase.CLOSED
        self.transport.write(answer)
        self.transport.close()

    def _receive_frames(self, data: bytes) -> None:
        reader = self.reader
        connection = self.connection
        if reader is None or connection is None:
            return
        hub = self.doors.hub
        try:
            for opcode, payload in reader.feed(data):
                if isinstance(payload, str):  # a text message: the protocol's frames
                    if self.phase is Phase.OPEN:
                        hub.handle_text(connection, payload)
                elif opcode is Opcode.PING:
                    if self.phase is Phase.OPEN:
                        self.transport.write(control_frame(Opcode.PONG, payload))
                elif opcode is Opcode.PONG:
                    self.ping_sent = 0.0
                elif opcode is Opcode.CLOSE:
                    self._closed_by_peer(payload)
                    return
                elif self.phase is Phase.OPEN:  # a binary message
                    hub.reply(connection, BINARY_REFUSAL)
        except Exception:
            log.exception("%r: closing after an internal error", connection)
            self._fail(CLOSE_INTERNAL_ERROR, "internal error")
            return
        violation = reader.failed
        if violation is not None:
            if violation.code == CLOSE_MESSAGE_TOO_BIG:
                hub.stats.oversized_frames += 1
            self._fail(violation.code, violation.reason)

    def _closed_by_peer(self, payload: bytes) -> None:
        """The peer's close: answer it unless it answers ours, then close the socket —
        the server closes TCP first."""
        if self.phase is Phase.OPEN:
            self.transport.write(close_reply(payload))
        self.transport.close()
        self._finish()

    def _fail(self, code: int, reason: str) -> None:
        if self.phase is Phase.OPEN:
            self.transport.write(close_frame(code, reason.encode()))
        self.transport.close()
        self._finish()

    # --- timeouts (driven by Doors.sweep) -----------------------------------

    def ping(self, now: float) -> None:
        if self.phase is Phase.OPEN:
            self.ping_sent = now
            self.transport.write(control_frame(Opcode.PING))

    def drop(self) -> None:
        """A dead or frozen peer, or a handshake that never completed."""
        self.transport.abort()
        self._finish()

    def _finish(self) -> None:
        """Once, however the connection ends: leave the hub and the sweep."""
        self.phase = Phase.CLOSED
        self.drained_callback = None
        self.doors.forget(self)
        connection, self.connection = self.connection, None
        if connection is not None:
            self.doors.hub.detach(connection)
        waiter = self.closed_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


def peer_of(transport: asyncio.BaseTransport) -> str:
    """The peer's address, as aiohttp's ``request.remote`` gives it."""
    peername = transport.get_extra_info("peername")
    if isinstance(peername, (list, tuple)) and peername:
        return str(peername[0])
    return str(peername) if peername else "?"
