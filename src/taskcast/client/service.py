"""``CommunicationService``: what an agent uses to publish its events to a hub.

``send_message`` only encodes the event and puts it in the outbox: it never
blocks on the network and never raises for transport trouble. A background
thread with its own event loop keeps one websocket to the hub, sends what is new,
resends every unacknowledged event in order after each reconnect (the hub drops
repeats by id), and reconnects forever with backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
from collections import deque
from collections.abc import AsyncGenerator, Callable
from typing import Any

import aiohttp
from aiohttp import WSMsgType

from taskcast.channels import control_channel, matches
from taskcast.client.failover import HubRotation, HubUrls
from taskcast.client.outbox import Outbox
from taskcast.client.resume import ResumePoint, Resumption
from taskcast.client.subscriber import TokenSource, auth_headers, backoff_delay, subscribe
from taskcast.commands import COMMAND_TYPE, command_fields
from taskcast.frames import decode, encode
from taskcast.ids import random_id
from taskcast.vocabulary import ErrorCode

log = logging.getLogger("taskcast.client")

Handler = Callable[[dict[str, Any]], None]
# Frames the service makes itself for its ``on`` handlers, about a followed pattern.
LOG_CHANGED = "log_changed"  # the hub serves another log: followed again from its start
LOG_MISMATCH = "log_mismatch"  # strict: the follow stopped

# Errors after which resending the same event can never succeed.
PERMANENT_ERRORS = frozenset(
    {
        ErrorCode.BAD_JSON,
        ErrorCode.INVALID_FRAME,
        ErrorCode.INVALID_TYPE,
        ErrorCode.RESERVED_TYPE,
        ErrorCode.INVALID_PAYLOAD,
        ErrorCode.INVALID_EVENT,
        ErrorCode.INVALID_CHANNEL,
        ErrorCode.FORBIDDEN,
        ErrorCode.TOO_LARGE,  # bigger than the log takes (a NATS stream's max_msg_size)
    }
)
RETRY_ERRORS = frozenset(
    {ErrorCode.STORE_UNAVAILABLE, ErrorCode.SHUTTING_DOWN, ErrorCode.RATE_LIMITED}
)


class CommunicationService:
    """Publish events to a taskcast hub; safe from any thread and from async code."""

    nonblocking = True  # the Task may call send_message inline

    def __init__(
        self,
        url: HubUrls = "ws://127.0.0.1:8765/ws",
        *,
        token: TokenSource = None,
        source: str | None = None,
        outbox_path: str | os.PathLike[str] | None = None,
        max_outbox: int = 100_000,
    ) -> None:
        self._hubs = HubRotation(url)  # several: the nodes of a cluster, tried in turn
        self.token = token
        self.source = source
        self.connected = False
        self._outbox = Outbox(max_outbox, outbox_path)
        self._new: deque[bytes] = deque(self._outbox.frames())
        self._lock = threading.Lock()
        self._emptied = threading.Condition(self._lock)
        self._io_idle = False
        self._closing = False
        self._handlers: dict[str, list[Handler]] = {}
        self._follows: dict[str, ResumePoint] = {}
        self._unfollows: list[str] = []
        self._loop = asyncio.new_event_loop()
        self._wake: asyncio.Event | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(
            target=self._thread_main, name="taskcast-client", daemon=True
        )
        self._thread.start()
        self._ready.wait()

    @property
    def url(self) -> str:
        """The hub node this client uses now."""
        return self._hubs.current

    @property
    def urls(self) -> list[str]:
        return list(self._hubs.urls)

    # --- publishing (any thread) -----------------------------------------

    def send_message(
        self,
        message: dict[str, Any] | str,
        payload: dict[str, Any] | None = None,
        *,
        channel: str | None = None,
    ) -> str:
        """Queue an event and return its id at once.

        Takes either a whole message ``{"type": ..., "payload": ...}`` (as a ``Task``
        sends it) or ``(type, payload)``. Never blocks and never raises for
        transport trouble; events wait in the outbox until the hub acknowledges them.
        """
        if isinstance(message, dict):
            frame = dict(message)
        else:
            frame = {"type": message, "payload": payload if payload is not None else {}}
        event_id = frame.get("id")
        if not isinstance(event_id, str) or not event_id:
            event_id = random_id()  # random 128-bit: nobody can take it first
            frame["id"] = event_id
        if channel is not None:
            frame["channel"] = channel
        if self.source is not None and "source" not in frame:
            frame["source"] = self.source
        data = encode(frame)
        wake = False
        with self._lock:
            dropped = self._outbox.add(event_id, data)
            self._new.append(data)
            if self._io_idle:
                self._io_idle = False
                wake = True
        if dropped is not None:
            log.warning(
                "outbox full (%d events): dropped the oldest, %s", self._outbox.max_events, dropped
            )
        if wake:
            self._schedule_wake()
        return event_id

    def _schedule_wake(self) -> None:
        """Wake the client thread — after the caller's current step when it runs an event
        loop, so a burst of events (api_action, llm_usage, tool_executed) costs one wake
        and no thread hand-off happens inside ``send_message`` itself."""
        try:
            caller = asyncio.get_running_loop()
        except RuntimeError:
            caller = None
        if caller is not None and caller is not self._loop:
            caller.call_soon(self._wake_now)
        else:
            self._wake_now()

    def _wake_now(self) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: close() was called
            self._loop.call_soon_threadsafe(self._wake_io)

    @property
    def pending(self) -> int:
        """Events not yet acknowledged by the hub."""
        with self._lock:
            return len(self._outbox)

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every event sent so far is acknowledged; False on timeout."""
        self._wake_now()  # in case a deferred wake never ran (its loop stopped first)
        with self._emptied:
            return self._emptied.wait_for(lambda: len(self._outbox) == 0, timeout)

    async def aflush(self, timeout: float | None = None) -> bool:
        return await asyncio.get_running_loop().run_in_executor(None, self.flush, timeout)

    def close(self, timeout: float | None = 5.0) -> bool:
        """Flush (up to ``timeout``), then stop. Unacknowledged events stay in the file outbox."""
        flushed = self.flush(timeout) if timeout else len(self._outbox) == 0
        self._closing = True
        self._wake_now()
        self._thread.join(10)
        with self._lock:
            self._outbox.close()
        return flushed

    async def aclose(self, timeout: float | None = 5.0) -> bool:
        """``close`` for async code: never blocks the caller's event loop."""
        return await asyncio.get_running_loop().run_in_executor(None, self.close, timeout)

    def __enter__(self) -> CommunicationService:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- receiving -------------------------------------------------------

    def on(self, frame_type: str, handler: Handler) -> None:
        """Call ``handler(frame)`` (on the client thread) for each frame of this type
        the hub pushes on this connection: ``ack``, ``error``, or events of patterns
        added with ``follow``. ``"*"`` receives every frame."""
        with self._lock:
            self._handlers.setdefault(frame_type, []).append(handler)

    def off(self, frame_type: str, handler: Handler) -> None:
        """Stop calling ``handler`` for ``frame_type``."""
        with self._lock:
            handlers = self._handlers.get(frame_type, [])
            if handler in handlers:
                handlers.remove(handler)

    def follow(
        self, pattern: str, since: int | ResumePoint | None = None, *, strict: bool = False
    ) -> None:
        """Subscribe this connection to ``pattern``; events go to the ``on`` handlers,
        resumed without gaps or repeats across reconnects. ``since`` may be a
        ``ResumePoint`` (seq and log id): on another log the follow starts from that log's
        beginning and the ``log_changed`` handlers hear of it, or — ``strict`` — it stops
        and the ``log_mismatch`` handlers hear of it (``follow_point`` tells where it is)."""
        point = since if isinstance(since, ResumePoint) else ResumePoint(since)
        point.strict = point.strict or strict
        with self._lock:
            self._follows[pattern] = point
        self._wake_now()

    def follow_point(self, pattern: str) -> ResumePoint | None:
        """Where the follow of ``pattern`` stands (a copy), to save and resume from."""
        with self._lock:
            point = self._follows.get(pattern)
            return None if point is None else ResumePoint(point.last, point.log_id)

    def unfollow(self, pattern: str) -> None:
        """Stop following ``pattern`` (from the next connection on; events of it that are
        already on their way may still arrive)."""
        with self._lock:
            self._follows.pop(pattern, None)
            self._unfollows.append(pattern)
        self._wake_now()

    def command(
        self,
        task_id: str,
        action: str,
        request_id: str | None = None,
        *,
        text: str | None = None,
        reason: str | None = None,
    ) -> str:
        """Send a command to a running task (approve, deny, reply, abort, message) as a
        ``task_command`` on ``control.<taskId>``; returns its event id. Needs a token
        with the ``control`` claim on a hub with auth."""
        payload = {"taskId": task_id, **command_fields(action, request_id, text, reason)}
        return self.send_message(
            {"type": COMMAND_TYPE, "payload": payload}, channel=control_channel(task_id)
        )

    def subscribe(
        self, pattern: str, since: int | None = None
    ) -> AsyncGenerator[dict[str, Any], None]:
        """An async iterator of events matching ``pattern``, resuming by itself."""
        return subscribe(self._hubs.urls, pattern, since, token=self.token)

    # --- the client thread -----------------------------------------------

    def _thread_main(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._wake = asyncio.Event()
        self._ready.set()
        try:
            self._loop.run_until_complete(self._run())
        finally:
            self._loop.close()

    def _wake_io(self) -> None:
        if self._wake is not None:
            self._wake.set()

    async def _run(self) -> None:
        attempt = 0
        async with aiohttp.ClientSession() as session:
            while not self._closing:
                try:
                    async with session.ws_connect(
                        self.url,
                        headers=auth_headers(self.token),
                        heartbeat=20,
                        autoclose=True,
                        max_msg_size=0,
                        timeout=aiohttp.ClientWSTimeout(ws_close=2.0),
                    ) as ws:
                        attempt = 0
                        self.connected = True
                        await self._connected(ws)
                except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                    log.debug("hub %s unreachable: %s", self.url, exc)
                finally:
                    self.connected = False
                if self._closing:
                    break
                self._hubs.next()  # on to the next node (the same one when there is one)
                await self._sleep_unless_closing(backoff_delay(attempt))
                attempt += 1

    async def _sleep_unless_closing(self, delay: float) -> None:
        assert self._wake is not None
        self._wake.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), delay)

    async def _connected(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        assert self._wake is not None
        with self._lock:
            resend = self._outbox.frames()  # everything unacknowledged, in order
            self._new.clear()
            follows = dict(self._follows)
            self._unfollows.clear()  # a new connection follows only what is followed now
        for pattern, point in follows.items():
            await self._send_follow(ws, pattern, point)
        for data in resend:
            await ws.send_frame(data, WSMsgType.TEXT)
        reader = asyncio.create_task(self._read(ws))
        followed = set(follows)
        try:
            while not self._closing and not reader.done():
                with self._lock:
                    batch = list(self._new)
                    self._new.clear()
                    if not batch:
                        self._io_idle = True
                        self._wake.clear()
                    new_follows = {p: s for p, s in self._follows.items() if p not in followed}
                    unfollows, self._unfollows = self._unfollows, []
                for pattern, point in new_follows.items():
                    await self._send_follow(ws, pattern, point)
                    followed.add(pattern)
                for pattern in unfollows:
                    if pattern in followed and pattern not in self._follows:
                        followed.discard(pattern)
                        await ws.send_frame(
                            encode({"type": "unsubscribe", "channel": pattern}), WSMsgType.TEXT
                        )
                if batch:
                    for data in batch:
                        await ws.send_frame(data, WSMsgType.TEXT)
                    continue
                waiter = asyncio.create_task(self._wake.wait())
                # The timeout is a safety net for a deferred wake whose loop never ran it.
                await asyncio.wait(
                    {waiter, reader}, timeout=1.0, return_when=asyncio.FIRST_COMPLETED
                )
                waiter.cancel()
        finally:
            with self._lock:
                self._io_idle = False
            if not reader.done():
                await ws.close()
                reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader

    async def _send_follow(
        self, ws: aiohttp.ClientWebSocketResponse, pattern: str, point: ResumePoint
    ) -> None:
        await ws.send_frame(point.request(pattern), WSMsgType.TEXT)

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        async for message in ws:
            if message.type != WSMsgType.TEXT:
                continue
            frame = decode(message.data)
            if not isinstance(frame, dict):
                continue
            kind = frame.get("type")
            if kind == "ack":
                self._acked([frame["id"]])
            elif kind == "error":
                if not self._handle_error(frame):
                    await ws.close()  # reconnect and resend everything, in order
                    return
            elif kind == "subscribed":
                await self._followed(ws, frame)
            elif isinstance(frame.get("seq"), int) and not self._advance_follows(frame):
                continue
            self._dispatch(frame)

    async def _followed(self, ws: aiohttp.ClientWebSocketResponse, frame: dict[str, Any]) -> None:
        """A followed pattern's ``subscribed``: go on, start again on a new log (saying so
        to the ``log_changed`` handlers), or — strict — stop following it
        (``log_mismatch``)."""
        pattern = str(frame.get("channel"))
        with self._lock:
            point = self._follows.get(pattern)
            verdict = point.subscribed(frame) if point is not None else Resumption.CONTINUE
            if verdict is Resumption.REFUSE:
                del self._follows[pattern]
        if point is None:
            return
        if point.problem is not None:
            log.warning("following %s: %s", pattern, point.problem)
        if verdict is Resumption.RESTART:
            await self._send_follow(ws, pattern, point)
        if verdict is not Resumption.CONTINUE:
            notice = LOG_CHANGED if verdict is Resumption.RESTART else LOG_MISMATCH
            self._dispatch(
                {
                    "type": notice,
                    "channel": pattern,
                    "logId": point.found,
                    "message": point.problem,
                }
            )
        if verdict is Resumption.REFUSE:
            await ws.send_frame(encode({"type": "unsubscribe", "channel": pattern}), WSMsgType.TEXT)

    def _acked(self, ids: list[str]) -> None:
        with self._lock:
            self._outbox.ack(ids)
            if len(self._outbox) == 0:
                self._emptied.notify_all()

    def _handle_error(self, frame: dict[str, Any]) -> bool:
        """True when the connection can go on; False to reconnect and resend."""
        event_id = frame.get("id")
        code = frame.get("code")
        if code in PERMANENT_ERRORS and isinstance(event_id, str):
            log.warning("hub refused event %s: %s %s", event_id, code, frame.get("message"))
            self._acked([event_id])  # resending could never succeed
            return True
        if code in RETRY_ERRORS:
            log.info("hub answered %s; will resend after reconnecting", code)
            return False
        log.warning("hub error: %s", frame)
        return True

    def _advance_follows(self, frame: dict[str, Any]) -> bool:
        """Track the last seq per followed pattern; False for an event already seen."""
        seq = frame["seq"]
        channel = frame.get("channel", "")
        fresh = False
        with self._lock:
            for pattern, point in self._follows.items():
                if matches(pattern, channel) and point.accept(seq):
                    fresh = True
        return fresh

    def _dispatch(self, frame: dict[str, Any]) -> None:
        with self._lock:
            handlers = [
                *self._handlers.get(frame.get("type", ""), ()),
                *self._handlers.get("*", ()),
            ]
        for handler in handlers:
            try:
                handler(frame)
            except Exception:
                log.exception("handler for %s failed", frame.get("type"))
