"""Reading a taskcast stream from JetStream itself, not from a copy in memory.

A read (a replay page, ``/api/events``, the webhook worker, analytics) is served by a
``StreamCursor``: a push consumer on the read's subject filter, started at the seq the
read begins at, whose messages wait in a small buffer. A replay reads page after page
from the same cursor (the pool finds it by where the last page ended), so a million
events stream from one consumer at the rate nats-py can parse them. Backpressure is
JetStream's own: the consumer acks all-up-to (``AckPolicy.ALL``) with at most
``BUFFER_MESSAGES`` unacknowledged, and a cursor acks what it hands over, so the server
sends no more than the buffer holds — memory stays bounded whatever the length of the
log, and nothing is dropped. (Holding an ordered consumer's callback instead lets
nats-py's queue overflow; the consumer then restarts past what it dropped — measured:
gaps of thousands of events in a 300,000-event replay.) Measured choices are in
docs/architecture.md (a push consumer reads ~87k 2-KB messages/s in nats-py, a batched
direct get ~35k, a pull consumer ~20k).

Where a filtered read has nothing more to find, the consumer would simply stay quiet;
one direct get (``next_by_subj``) answers instead whether anything matching is left up
to the read's end.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import logging
import secrets
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from typing import Any

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from taskcast.store.base import EventQuery, QueryPage, StoredEvent
from taskcast.store.nats_layout import NatsUnavailable, channel_of

log = logging.getLogger("taskcast.store.nats")

BUFFER_MESSAGES = 1_000  # per cursor: JetStream sends no more unacknowledged
MAX_CURSORS = 32  # at most 32,000 messages buffered for reads, whatever the log's length
ACK_WAIT_SECONDS = 600.0  # a reader this slow gets what it holds again (skipped)
CONSUMER_IDLE_SECONDS = 10.0  # JetStream drops a cursor's consumer nobody listens to
CURSOR_IDLE_SECONDS = 30.0
SCAN_PER_PAGE = 20_000  # messages one page may look at (sparse filters come back partial)
READ_TIMEOUT_SECONDS = 10.0
SLICE = 250  # messages decoded between two yields to the event loop

Decode = Callable[[int, str, bytes], StoredEvent]


def ack_position(reply: str) -> tuple[int, int]:
    """The stream seq and the matching messages left, from a JetStream delivery's reply
    subject (``$JS.ACK.<stream>.<consumer>.<delivered>.<seq>.<cseq>.<ts>.<pending>``, or
    with a domain and an account hash after ``ACK``): what ``Msg.metadata`` gives, at a
    fifth of its cost — it is paid once per replayed message."""
    tokens = reply.split(".")
    if len(tokens) == 9:
        return int(tokens[5]), int(tokens[8])
    return int(tokens[7]), int(tokens[10])


class StreamCursor:
    """One push consumer from ``next_seq`` on, over ``subject``; what it delivered and
    nobody took yet waits in ``buffer`` as ``(seq, subject, data, pending, reply)``."""

    def __init__(self, subject: str, next_seq: int) -> None:
        self.subject = subject
        self.next_seq = next_seq  # the seq the next take starts at
        self.buffer: deque[tuple[int, str, bytes, int, str]] = deque()
        self.arrived = asyncio.Event()
        self.used = time.monotonic()
        self.sub: Any = None
        self.name = f"taskcast-read-{secrets.token_hex(8)}"
        self.last_pending = -1  # matching messages left after the last one delivered
        self._js: JetStreamContext | None = None
        self._stream = ""

    async def start(self, js: JetStreamContext, stream: str) -> None:
        self._js, self._stream = js, stream
        self.sub = await js.subscribe(
            self.subject,
            stream=stream,
            cb=self._on_message,
            manual_ack=True,
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
            config=ConsumerConfig(
                name=self.name,
                opt_start_seq=self.next_seq,
                ack_policy=AckPolicy.ALL,
                max_ack_pending=BUFFER_MESSAGES,
                ack_wait=ACK_WAIT_SECONDS,
                inactive_threshold=CONSUMER_IDLE_SECONDS,
                mem_storage=True,
                num_replicas=1,
            ),
            pending_msgs_limit=4 * BUFFER_MESSAGES,  # never reached: the server holds back
            pending_bytes_limit=-1,
        )

    async def _on_message(self, msg: Msg) -> None:
        seq, pending = ack_position(msg.reply)
        self.buffer.append((seq, msg.subject, msg.data, pending, msg.reply))
        self.arrived.set()

    def take(self, upto: int, limit: int) -> tuple[list[tuple[int, str, bytes]], str | None]:
        """Buffered messages with seq ≤ ``upto``, at most ``limit``; and the ack subject
        that acknowledges them all (None when none was taken)."""
        out: list[tuple[int, str, bytes]] = []
        buffer = self.buffer
        last_reply: str | None = None
        while buffer and len(out) < limit and buffer[0][0] <= upto:
            seq, subject, data, pending, last_reply = buffer.popleft()
            self.last_pending = pending
            if seq >= self.next_seq:  # (below it: a redelivery, or matching nothing)
                self.next_seq = seq + 1
                out.append((seq, subject, data))
        if not buffer:
            self.arrived.clear()
        return out, last_reply

    async def close(self) -> None:
        sub, self.sub = self.sub, None
        if sub is not None:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
            if self._js is not None:  # at once, not after the inactivity threshold
                with contextlib.suppress(Exception):
                    await self._js.delete_consumer(self._stream, self.name)


async def _next_turn() -> None:
    await asyncio.sleep(0)


class StreamReader:
    """Reads pages of a stream for ``EventQuery``s, keeping a cursor per read that goes
    on (found again by its subject and the seq it stands at)."""

    def __init__(self, stream: str, prefix: str, decode: Decode) -> None:
        self.stream = stream
        self.prefix = prefix
        self.decode = decode
        self.nc: Client | None = None
        self.js: JetStreamContext | None = None
        self._cursors: OrderedDict[tuple[str, int], StreamCursor] = OrderedDict()
        self._busy: set[StreamCursor] = set()
        # Awaited between slices: the hub's pacing, so that reads (and the messages
        # their acks let in) wait while live delivery runs late.
        self.pace: Callable[[], Awaitable[None]] = _next_turn

    def attach(self, nc: Client, js: JetStreamContext) -> None:
        self.nc, self.js = nc, js

    def subject_for(self, pattern: str | None) -> str:
        """A channel pattern is a subject pattern below the prefix (same wildcards)."""
        return f"{self.prefix}.{pattern or '>'}"

    async def query(self, query: EventQuery, head: int) -> QueryPage:
        """Events with ``after < seq <= until`` (``until`` at most ``head``) that the
        query selects, from JetStream; a page may stop early (``scanned_to``)."""
        upto = head if query.until is None else min(query.until, head)
        if upto <= query.after:
            return QueryPage([], max(query.after, upto))
        subject = self.subject_for(query.pattern)
        cursor = await self._cursor(subject, query.after + 1)
        try:
            return await self._page(cursor, query, upto)
        except BaseException:
            self._busy.discard(cursor)
            await cursor.close()
            raise
        finally:
            if cursor in self._busy:
                self._busy.discard(cursor)
                self._park(cursor)

    async def _page(self, cursor: StreamCursor, query: EventQuery, upto: int) -> QueryPage:
        found: list[StoredEvent] = []
        scanned = 0
        only_pattern = query.type is None and query.task_id is None and query.readable is None
        deadline = time.monotonic() + READ_TIMEOUT_SECONDS
        while len(found) < query.limit and scanned < SCAN_PER_PAGE:
            if cursor.next_seq > upto:
                return self._through(cursor, found, upto)
            want = min(query.limit - len(found), SCAN_PER_PAGE - scanned, SLICE)
            taken, ack = cursor.take(upto, want)
            if ack is not None and self.nc is not None:
                await self.nc.publish(ack, b"+ACK")  # acks all up to it: room for more
            for seq, subject, data in taken:
                scanned += 1
                event = self._decoded(seq, subject, data)
                # The subject filter already chose the pattern's channels.
                if event is not None and (only_pattern or query.selects(event)):
                    found.append(event)
            if taken:
                await self.pace()  # a slice at a time: live delivery goes first
                continue
            if cursor.buffer:  # what is buffered is beyond upto
                return self._through(cursor, found, upto)
            if cursor.last_pending <= 0:  # -1: nothing delivered yet
                # Nothing buffered: is anything matching left up to upto at all?
                following = await self._next_matching(cursor.subject, cursor.next_seq)
                if following is None or following > upto:
                    return self._through(cursor, found, upto)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise NatsUnavailable("JetStream did not deliver the events asked for")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(cursor.arrived.wait(), min(remaining, 1.0))
        return QueryPage(found, cursor.next_seq - 1)

    @staticmethod
    def _through(cursor: StreamCursor, found: list[StoredEvent], upto: int) -> QueryPage:
        """A page that read everything up to ``upto``: the cursor stands after it (no
        message in between matches), where the read's next page will ask for it."""
        cursor.next_seq = max(cursor.next_seq, upto + 1)
        return QueryPage(found, upto)

    def _decoded(self, seq: int, subject: str, data: bytes) -> StoredEvent | None:
        try:
            return self.decode(seq, channel_of(self.prefix, subject), data)
        except Exception:
            return None  # not a taskcast event: passed over, as the feed does

    async def _cursor(self, subject: str, start: int) -> StreamCursor:
        cursor = self._cursors.pop((subject, start), None)
        if cursor is None:
            if self.js is None:
                raise NatsUnavailable("store is not open")
            await self._evict(MAX_CURSORS - 1)
            cursor = StreamCursor(subject, start)
            await cursor.start(self.js, self.stream)
        cursor.used = time.monotonic()
        self._busy.add(cursor)
        return cursor

    def _park(self, cursor: StreamCursor) -> None:
        """Keep a cursor for the read's next page (the oldest go first)."""
        key = (cursor.subject, cursor.next_seq)
        old = self._cursors.pop(key, None)
        if old is not None:
            asyncio.get_running_loop().create_task(old.close())
        self._cursors[key] = cursor

    async def _evict(self, keep: int) -> None:
        now = time.monotonic()
        for key, cursor in list(self._cursors.items()):
            if len(self._cursors) > keep or now - cursor.used > CURSOR_IDLE_SECONDS:
                del self._cursors[key]
                await cursor.close()

    async def sweep(self) -> None:
        """Close cursors no read came back to."""
        await self._evict(MAX_CURSORS)

    async def close(self) -> None:
        for cursor in [*self._cursors.values(), *self._busy]:
            await cursor.close()
        self._cursors.clear()
        self._busy.clear()

    # --- direct gets ----------------------------------------------------------------

    async def _direct_get(self, request: dict[str, Any]) -> Msg | None:
        """One message by a direct get (None when there is none)."""
        if self.nc is None:
            raise NatsUnavailable("store is not open")
        reply = await self.nc.request(
            f"$JS.API.DIRECT.GET.{self.stream}", json.dumps(request).encode(), timeout=5.0
        )
        status = (reply.headers or {}).get("Status")
        if status == "404":
            return None
        if status is not None:
            raise NatsUnavailable(f"JetStream direct get failed: {status} {reply.headers}")
        return reply

    async def _next_matching(self, subject: str, start: int) -> int | None:
        """The seq of the first message at or after ``start`` on ``subject``."""
        found = await self._direct_get({"seq": start, "next_by_subj": subject})
        return int(found.headers["Nats-Sequence"]) if found is not None and found.headers else None

    async def seq_at(self, when_ms: int) -> int | None:
        """The seq of the first message JetStream stored at or after ``when_ms``."""
        instant = datetime.datetime.fromtimestamp(when_ms / 1000, tz=datetime.UTC)
        found = await self._direct_get({"start_time": instant.isoformat()})
        return int(found.headers["Nats-Sequence"]) if found is not None and found.headers else None
