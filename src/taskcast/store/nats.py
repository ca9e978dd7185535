"""Cluster mode: the log is one NATS JetStream stream that every hub node shares.

A write is acknowledged once JetStream acknowledged it (with R3, once a quorum of
servers has it); the stream sequence is the event's ``seq``, the same on every node.
Each node follows the stream from where it stood when it started, with an ordered
consumer, into a bounded window of recent events (``store/window.py``) that fan-out
and near-live resumes read; everything older is read from JetStream itself
(``store/nats_reads.py``). So a node's memory and start-up do not grow with the log:
nodes are stateless gateways, one that starts reads nothing of the past, one that dies
loses nothing. Webhooks and leases live in a JetStream key-value bucket whose
compare-and-set makes a lease one holder's across nodes; the task summaries a starting
node needs come from a snapshot some node saved (an object store) and the log after it.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import logging
import secrets
import ssl
from collections.abc import Awaitable, Callable
from typing import Any

import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import (
    ConsumerConfig,
    DeliverPolicy,
    KeyValueConfig,
    ObjectMeta,
    ObjectStoreConfig,
    StorageType,
    StreamConfig,
    StreamState,
)
from nats.js.kv import KeyValue
from nats.js.object_store import ObjectStore

from taskcast.frames import Publish
from taskcast.store.base import (
    AppendResult,
    EventQuery,
    QueryPage,
    RecordChange,
    Retention,
    StoredEvent,
)
from taskcast.store.nats_layout import (
    ATOMIC_DISABLED_ERR,
    ATOMIC_DUPLICATE_ERR,
    DEFAULT_DUPLICATE_WINDOW_SECONDS,
    DEFAULT_STREAM,
    MAX_MSG_SIZE_ERR,
    MSG_ID_HEADER,
    NatsUnavailable,
    atomic_batches_in,
    atomic_chunks,
    batch_answer,
    batch_headers,
    batch_seqs,
    channel_of,
    envelope,
    fits_payload,
    msg_id,
    plan_stream,
    record_id_of,
    record_key,
    shown_servers,
    stored_event,
    stream_conflict,
    stream_log_id,
    subject_of,
    subject_prefix,
)
from taskcast.store.nats_reads import StreamReader, ack_position
from taskcast.store.node_cache import NodeCache, default_start
from taskcast.store.window import RecentWindow

log = logging.getLogger("taskcast.store.nats")
Message = tuple[Publish, bytes]  # an event and its envelope

# Heartbeats of the feed consumer: two missed ones and it is recreated where it stopped.
FEED_HEARTBEAT_SECONDS = 1.0
CAS_ATTEMPTS = 20
CLOSE_TIMEOUT_SECONDS = 3.0
FEED_COALESCE_SECONDS = 0.002
TIME_MARGIN_MS = 5_000  # hub nodes' and NATS servers' clocks may differ this much
SNAPSHOT_NAME = "task-summaries"
CACHE_FILL_PAGE = 5_000  # events per write into the node's cache
CACHE_FILL_SECONDS = 0.05  # once caught up, at most one cache write per this


class NatsStore:
    def __init__(
        self,
        servers: list[str],
        retention: Retention = Retention(),
        *,
        stream: str = DEFAULT_STREAM,
        replicas: int = 1,
        duplicate_window_seconds: float = DEFAULT_DUPLICATE_WINDOW_SECONDS,
        credentials: str | None = None,
        tls: bool = False,
        timeout: float = 5.0,
        cache: NodeCache | None = None,
    ) -> None:
        self.servers = servers
        self.plan = plan_stream(stream, replicas, retention, duplicate_window_seconds)
        self.prefix = subject_prefix(stream)
        self._credentials = credentials
        self._tls = tls
        self._timeout = timeout
        self.window = RecentWindow()
        self.reader = StreamReader(self.plan.name, self.prefix, stored_event)
        self.cache = cache  # the stream's recent past on this node's disk (--nats-cache)
        self._cache_due = asyncio.Event()
        self._cache_filler: asyncio.Task[None] | None = None
        self._first_seq = 1  # the stream's oldest message (limits move it up)
        self._nc: Client | None = None
        self._reads = Client()
        self._js: JetStreamContext | None = None
        self._kv: KeyValue | None = None
        self._objects: ObjectStore | None = None
        self._feed: Any = None
        self._listeners: list[Callable[[], None]] = []
        self._generation = 0  # bumped on every disconnect from NATS
        self._closing = False
        self._notify_scheduled = False
        self._last_notify = 0.0
        self._last_error: str | None = None
        self._log_id = ""
        self.atomic = False  # the stream takes atomic batches (see ``append``)

    @property
    def head(self) -> int:
        return self.window.head

    @property
    def oldest(self) -> int:
        return min(self._first_seq, self.head + 1)

    @property
    def description(self) -> str:
        servers = shown_servers(self.servers)
        return f"nats:{servers} stream {self.plan.name} R{self.plan.replicas}"

    @property
    def log_id(self) -> str:
        return self._log_id

    # --- lifecycle --------------------------------------------------------------

    async def open(self) -> None:
        if self._credentials and importlib.util.find_spec("nkeys") is None:
            raise NatsUnavailable(
                "--nats-credentials needs the nkeys package: pip install 'taskcast[nats-auth]'"
            )
        self._nc = await self._connect("taskcast-hub", primary=True)
        # Reads of the past (replays, queries) get a connection of their own: a flood of
        # replayed messages must not queue ahead of the live feed on one socket.
        self._reads = await self._connect("taskcast-hub-reads", primary=False)
        self._js = RefusalAnsweringJetStream(self._nc, timeout=self._timeout)
        self.reader.attach(self._reads, self._reads.jetstream(timeout=self._timeout))
        try:
            state = await self._ensure_stream()
            self._kv = await self._js.create_key_value(
                KeyValueConfig(
                    bucket=f"{self.plan.name}_records",
                    replicas=self.plan.replicas,
                    storage=StorageType.FILE,
                )
            )
            self._objects = await self._js.create_object_store(
                f"{self.plan.name}_snapshots",
                ObjectStoreConfig(replicas=self.plan.replicas, storage=StorageType.FILE),
            )
        except (nats.errors.Error, NatsUnavailable) as exc:
            self._closing = True
            await self._nc.close()
            await self._reads.close()
            if isinstance(exc, NatsUnavailable):
                raise
            raise NatsUnavailable(
                f"NATS JetStream refused stream {self.plan.name} (is JetStream on? "
                f"nats-server -js): {exc!r}"
            ) from exc
        await self._follow(state.last_seq)
        if self.cache is not None:
            await self._open_cache(state)

    async def _open_cache(self, state: StreamState) -> None:
        """Open this node's copy of the stream and have it filled in the background from
        where it stopped (a new one: as far back as its budget reaches)."""
        assert self.cache is not None
        start = default_start(
            self._first_seq, state.last_seq, state.bytes, state.messages, self.cache.max_bytes
        )
        await self.cache.open(self._log_id, start)
        await self.cache.drop_before(self._first_seq)
        cache = self.cache
        held = f"seqs {cache.first} to {cache.last}" if cache.last >= cache.first else "nothing"
        log.info(
            "cache %s holds %s of the stream; filling from %d", cache.path, held, cache.last + 1
        )
        self._cache_filler = asyncio.create_task(self._fill_cache(self.cache))

    async def _fill_cache(self, cache: NodeCache) -> None:
        """Copy the stream into the cache in order, after what it holds: from the window
        when it reaches back that far (what this node follows), else from JetStream (a
        node that was down, or a new cache). At most one write per ``CACHE_FILL_SECONDS``
        once it has caught up."""
        while not self._closing:
            try:
                after, head = cache.last, self.window.head
                if after >= head:
                    self._cache_due.clear()
                    await self._cache_due.wait()
                    await asyncio.sleep(CACHE_FILL_SECONDS)
                    continue
                if self.window.covers(after):
                    events = self.window.events_after(after, CACHE_FILL_PAGE)
                    through = events[-1].seq if len(events) == CACHE_FILL_PAGE else head
                else:
                    page = await self.reader.query(
                        EventQuery(after=after, limit=CACHE_FILL_PAGE), head
                    )
                    events, through = page.events, page.scanned_to
                await cache.add(events, through)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # JetStream unwell, or the disk: try again later
                log.warning("could not fill the cache: %s", exc)
                await asyncio.sleep(1.0)

    async def _connect(self, name: str, *, primary: bool) -> Client:
        client = Client()
        # The one server listed gave an answer no retry changes. With several, another
        # may still answer (the client does not say which server refused): they get the
        # whole retry window.
        refused = asyncio.Event()

        async def on_error(exc: Exception) -> None:
            await (self._error if primary else _quiet_error)(exc)
            if len(self.servers) == 1 and is_final_refusal(exc):
                refused.set()

        # A client that reconnects forever also retries its first connect forever: a hub
        # pointed at no NATS must say so instead, and at once when its server refuses it.
        connecting = asyncio.ensure_future(
            client.connect(
                servers=self.servers,
                user_credentials=self._credentials,
                tls=ssl.create_default_context() if self._tls else None,
                name=name,
                connect_timeout=max(1, round(self._timeout)),
                allow_reconnect=True,
                max_reconnect_attempts=-1,
                reconnect_time_wait=1,  # per server: another server is tried at once
                disconnected_cb=self._disconnected if primary else _quiet,
                reconnected_cb=self._reconnected if primary else _quiet,
                error_cb=on_error,
            )
        )
        refusal = asyncio.ensure_future(refused.wait())
        try:
            await asyncio.wait(
                {connecting, refusal},
                timeout=self._timeout * (len(self.servers) + 1),
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            refusal.cancel()
            if not connecting.done():
                connecting.cancel()
                await asyncio.wait({connecting})
        try:
            if connecting.cancelled():
                raise TimeoutError
            connecting.result()
        except (TimeoutError, OSError, nats.errors.Error) as exc:
            self._closing = True
            with contextlib.suppress(Exception):
                await client.close()
            if not primary and self._nc is not None:
                await self._nc.close()
            # The client keeps retrying through most errors; the last one it reported
            # (an authorization violation, a TLS failure) says more than the timeout.
            detail = self._last_error or str(exc) or "no answer"
            raise NatsUnavailable(
                f"cannot reach NATS at {shown_servers(self.servers)}: {detail}"
            ) from exc
        return client

    async def _ensure_stream(self) -> StreamState:
        """Create the stream, or check the existing one fits and update its limits.
        Returns its state: its last seq is where this node starts following it."""
        assert self._js is not None
        version = self._js_version()
        atomic = atomic_batches_in(version)
        config = StreamConfig(
            storage=StorageType.FILE,
            allow_direct=True,
            allow_atomic=True if atomic else None,
            **self.plan.as_config(),
        )
        try:
            info = await self._js.stream_info(self.plan.name)
        except nats.js.errors.NotFoundError:
            info = await self._js.add_stream(config)
            log.info("created NATS stream %s (R%d)", self.plan.name, self.plan.replicas)
        else:
            existing = info.config
            storage = getattr(existing.storage, "value", existing.storage)  # enum or str
            problem = stream_conflict(self.plan, existing.subjects, storage)
            if problem is not None:
                raise NatsUnavailable(problem)
            if (
                existing.num_replicas != self.plan.replicas
                or existing.max_msgs != self.plan.max_msgs
                or (existing.max_age or 0) != self.plan.max_age_seconds
                or existing.duplicate_window != self.plan.duplicate_window_seconds
                or (atomic and not existing.allow_atomic)
            ):
                info = await self._js.update_stream(config)
                log.info("updated NATS stream %s to this hub's limits", self.plan.name)
        self.atomic = atomic and bool(info.config.allow_atomic)
        if not self.atomic:
            log.info("NATS %d.%d: events are published one by one (no atomic batches)", *version)
        self._log_id = stream_log_id(self.plan.name, info.created)
        self._first_seq = info.state.first_seq or info.state.last_seq + 1
        return info.state

    async def _follow(self, last_seq: int) -> None:
        """Follow the stream from just after ``last_seq``: what came before is read
        from JetStream when asked for, never copied here."""
        assert self._js is not None
        self.window.start_at(last_seq)
        self._feed = await self._js.subscribe(
            f"{self.prefix}.>",
            stream=self.plan.name,
            cb=self._on_message,
            ordered_consumer=True,
            idle_heartbeat=FEED_HEARTBEAT_SECONDS,
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
            config=ConsumerConfig(opt_start_seq=last_seq + 1),
            pending_msgs_limit=-1,
            pending_bytes_limit=-1,
        )

    async def close(self) -> None:
        """Close the NATS connection. Not ``drain()``: the hub has already settled every
        publish, and a drain waits for each subscription (up to 30 s) — a SIGTERM
        must not. Bounded in case the connection is mid-reconnect."""
        self._closing = True
        if self._cache_filler is not None:
            self._cache_filler.cancel()
            with contextlib.suppress(BaseException):
                await self._cache_filler
        if self.cache is not None:
            await self.cache.close()
        if self._nc is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(CLOSE_TIMEOUT_SECONDS):
                    await self.reader.close()
                    await self._reads.close()
                    await self._nc.close()
            self._nc = None

    async def _disconnected(self) -> None:
        self._generation += 1
        if not self._closing:
            log.warning("lost NATS connection; reconnecting")

    async def _reconnected(self) -> None:
        assert self._nc is not None
        url = self._nc.connected_url
        where = f"{url.hostname}:{url.port}" if url is not None else "?"  # no userinfo
        log.info("reconnected to NATS at %s", where)

    async def _error(self, exc: Exception) -> None:
        self._last_error = str(exc) or type(exc).__name__
        log.warning("NATS: %s", self._last_error)

    # --- the feed ---------------------------------------------------------------

    async def _on_message(self, msg: Msg) -> None:
        seq, _ = ack_position(msg.reply)  # not ``msg.metadata``: ~6% of a busy node's CPU
        if seq <= self.window.head:
            return  # already have it (the consumer was recreated behind us)
        try:
            event = stored_event(seq, channel_of(self.prefix, msg.subject), msg.data)
        except Exception:
            log.exception("stream message %d is not a taskcast event; skipped", seq)
            self.window.skip_to(seq)  # the head moves on all the same
        else:
            self.window.add(event)
        if not self._notify_scheduled:
            # Messages come in one by one as the server stores them. Alone, one is fanned
            # out at once; under load, at most one fan-out pass per FEED_COALESCE_SECONDS
            # carries everything that came in since — so each connection writes many
            # events per syscall instead of one (what a batch commit gives the SQLite hub).
            self._notify_scheduled = True
            loop = asyncio.get_running_loop()
            loop.call_at(max(loop.time(), self._last_notify + FEED_COALESCE_SECONDS), self._notify)

    def _notify(self) -> None:
        self._notify_scheduled = False
        self._last_notify = asyncio.get_running_loop().time()
        self._cache_due.set()
        for listener in self._listeners:
            listener()

    def on_advance(self, listener: Callable[[], None]) -> None:
        self._listeners.append(listener)

    def events_after(self, seq: int, limit: int) -> list[StoredEvent]:
        return self.window.events_after(seq, limit)

    async def last_seq(self) -> int:
        if self._js is None:
            raise NatsUnavailable("store is not open")
        info = await self._js.stream_info(self.plan.name)
        return int(info.state.last_seq)

    # --- writing ----------------------------------------------------------------

    def _js_version(self) -> tuple[int, int]:
        assert self._nc is not None
        try:
            version = self._nc.connected_server_version
            return (version.major, version.minor)
        except (ValueError, TypeError, AttributeError):  # a server that says no version
            return (0, 0)

    async def append(self, events: list[Publish], now_ms: int) -> list[AppendResult]:
        """Store the events in order. On a stream that takes atomic batches they go
        out as batches of up to 1,000, each stored whole or not at all, one answer
        each; a batch that is refused stops the rest (nothing later is stored ahead of
        it). Otherwise, or for a batch JetStream refused as a whole (a duplicate id
        in it), one message each (``_append_each``). An event too big for the server's
        ``max_payload`` is never sent (``fits_payload``): it is answered ``too_large``."""
        if self._js is None or self._nc is None:
            raise NatsUnavailable("store is not open")
        messages = [(event, envelope(event, now_ms)) for event in events]
        limit = self._nc.max_payload
        fits = [fits_payload(data, limit) for _, data in messages]
        if all(fits):
            return await self._append_messages(messages)
        # One the server can never take is answered at once and left out: never stored,
        # nothing later overtakes it.
        sent = [message for message, ok in zip(messages, fits, strict=True) if ok]
        stored = iter(await self._append_messages(sent))
        refusal = f"over this NATS server's max_payload of {limit} bytes, with its headers"
        return [
            next(stored) if ok else AppendResult(0, False, refusal, too_large=True) for ok in fits
        ]

    async def _append_messages(self, messages: list[Message]) -> list[AppendResult]:
        if not self.atomic or len(messages) < 2:
            return await self._append_each(messages)
        results: list[AppendResult] = []
        for chunk in atomic_chunks(len(messages)):
            part = messages[chunk.start : chunk.stop]
            answered = await self._append_batch(part)
            if answered is None:
                answered = await self._append_each(part)
            results.extend(answered)
            if any(result.error is not None and not result.too_large for result in answered):
                later = len(messages) - chunk.stop
                results.extend(
                    AppendResult(0, False, "an earlier event was not stored") for _ in range(later)
                )
                break
        return results

    async def _append_batch(self, messages: list[Message]) -> list[AppendResult] | None:
        """One atomic batch: every message but the last unanswered (core publish), the
        last commits it and is answered with the batch's last seq. None: JetStream
        refused the batch whole, so nothing of it is stored and each may go alone.
        (The commit is a plain request: nats-py's ``publish_async`` raises a refusal
        inside its reply handler and leaves the future unresolved.)"""
        nc = self._nc
        assert nc is not None
        generation = self._generation
        batch_id = secrets.token_urlsafe(16)
        count = len(messages)
        reply: Msg | None = None
        try:
            for position, (event, data) in enumerate(messages, 1):
                if generation != self._generation or not nc.is_connected:
                    break  # no commit went out: nothing of the batch is stored
                subject = subject_of(self.prefix, event.channel)
                event_id = msg_id(event) if event.client_id else None
                headers = batch_headers(batch_id, position, position == count, event_id)
                if position < count:
                    await nc.publish(subject, data, headers=headers)
                else:
                    reply = await nc.request(subject, data, self._timeout, headers=headers)
        except (TimeoutError, nats.errors.TimeoutError):
            return [AppendResult(0, False, "NATS did not acknowledge in time") for _ in messages]
        except Exception as exc:
            log.warning("NATS publish failed: %s", exc)
            return [AppendResult(0, False, f"NATS refused: {exc!r}") for _ in messages]
        if reply is None:
            return [AppendResult(0, False, "NATS connection lost") for _ in messages]
        answer = batch_answer(reply.data)
        if isinstance(answer, int):
            return [AppendResult(seq, False) for seq in batch_seqs(answer, count)]
        code, description = answer
        if code == ATOMIC_DISABLED_ERR:
            self.atomic = False
            log.warning("stream %s refuses atomic batches: one by one from now", self.plan.name)
        elif code != ATOMIC_DUPLICATE_ERR:
            log.warning("NATS refused a batch of %d (%s): one by one", count, description)
        return None

    async def _append_each(self, messages: list[Message]) -> list[AppendResult]:
        """Publish in order, pipelined, then wait for every JetStream ack. After a
        disconnect nothing more of the batch is sent: a later event must never be
        stored ahead of an earlier one that was lost on the way."""
        js, nc = self._js, self._nc
        assert js is not None and nc is not None
        generation = self._generation
        acks: list[asyncio.Future[Any]] = []
        for event, data in messages:
            if generation != self._generation or not nc.is_connected:
                break
            headers = {MSG_ID_HEADER: msg_id(event)} if event.client_id else None
            try:
                ack = await js.publish_async(
                    subject_of(self.prefix, event.channel),
                    data,
                    # No stall timeout (it costs a task per message): a batch is at most
                    # max_batch < the client's 4,000 pending, and late acks are cancelled.
                    headers=headers,
                )
            except Exception as exc:
                log.warning("NATS publish failed: %s", exc)
                break
            acks.append(ack)
        if acks:
            await asyncio.wait(acks, timeout=self._timeout)
        results: list[AppendResult] = []
        for ack in acks:
            if not ack.done():
                ack.cancel()
                results.append(AppendResult(0, False, "NATS did not acknowledge in time"))
            elif ack.cancelled() or ack.exception() is not None:
                problem = "cancelled" if ack.cancelled() else ack.exception()
                reason = f"NATS refused: {problem}"
                results.append(AppendResult(0, False, reason, too_large=_oversized(problem)))
            else:
                answer = ack.result()
                results.append(AppendResult(answer.seq, bool(answer.duplicate)))
        unsent = len(messages) - len(acks)
        results.extend(AppendResult(0, False, "NATS connection lost") for _ in range(unsent))
        return results

    # --- reading: the recent window, else JetStream -------------------------------

    async def query(self, query: EventQuery) -> QueryPage:
        """From the window when it reaches back to ``query.after``, else from this node's
        cache when it does, else from JetStream (the page then stops where the cache
        begins: the next one reads the file)."""
        if self.window.covers(query.after):
            return self.window.query(query)
        cache = self.cache
        if cache is not None and cache.covers(query.after):
            page = await cache.query(query)
            if page is not None:
                return page
        head = self.window.head
        if cache is not None and query.after < cache.first - 1 < cache.last:
            head = cache.first - 1
        return await self.reader.query(query, head)

    async def trim(self, now_ms: int) -> int:
        """The stream enforces its own limits: learn where it starts now (what they
        removed), and close the read cursors nobody came back to."""
        await self.reader.sweep()
        if self._js is None:
            return 0
        info = await self._js.stream_info(self.plan.name)
        before = self._first_seq
        self._first_seq = info.state.first_seq or info.state.last_seq + 1
        self.window.drop_before(self._first_seq)
        if self.cache is not None:
            await self.cache.drop_before(self._first_seq)
        return max(0, min(self._first_seq, self.window.head + 1) - before)

    async def count_by_time(
        self, since_ms: int, until_ms: int, bucket_ms: int
    ) -> list[tuple[int, str, str, int]]:
        """Read from JetStream's first message stored at ``since_ms`` (less a margin for
        the clocks of hub nodes and NATS servers) until events are past ``until_ms``."""
        start = await self.reader.seq_at(max(0, since_ms - TIME_MARGIN_MS))
        counts: dict[tuple[int, str, str], int] = {}
        if start is None:
            return []
        cursor, head = start - 1, self.head
        while cursor < head:
            page = await self.query(EventQuery(after=cursor, until=head, limit=5_000))
            for event in page.events:
                if since_ms <= event.ts < until_ms:
                    key = (event.ts // bucket_ms * bucket_ms, event.type, event.channel)
                    counts[key] = counts.get(key, 0) + 1
            if page.scanned_to <= cursor or (
                page.events and page.events[-1].ts >= until_ms + TIME_MARGIN_MS
            ):
                break
            cursor = page.scanned_to
        return [(*key, count) for key, count in counts.items()]

    # --- the task-summaries snapshot (a JetStream object store) ----------------------

    def pace_reads(self, pace: Callable[[], Awaitable[None]]) -> None:
        self.reader.pace = pace

    async def load_snapshot(self) -> tuple[int, bytes] | None:
        if self._objects is None:
            raise NatsUnavailable("store is not open")
        try:
            found = await self._objects.get(SNAPSHOT_NAME)
        except nats.js.errors.ObjectNotFoundError:
            return None
        seq = int(found.info.description or 0)
        return (seq, found.data) if seq and found.data is not None else None

    async def save_snapshot(self, seq: int, data: bytes) -> None:
        if self._objects is None:
            raise NatsUnavailable("store is not open")
        with contextlib.suppress(nats.js.errors.ObjectNotFoundError):
            kept = await self._objects.get_info(SNAPSHOT_NAME)
            if int(kept.description or 0) >= seq:
                return  # another node saved a newer one
        await self._objects.put(
            SNAPSHOT_NAME, data, meta=ObjectMeta(name=SNAPSHOT_NAME, description=str(seq))
        )

    # --- records (JetStream key-value) ------------------------------------------

    def _bucket(self) -> KeyValue:
        if self._kv is None:
            raise NatsUnavailable("store is not open")
        return self._kv

    async def load_records(self, kind: str) -> dict[str, dict[str, Any]]:
        """One watcher pass over the kind's keys (their latest values, deletes left out)."""
        watcher = await self._bucket().watch(f"{kind}.>", ignore_deletes=True)
        found: dict[str, dict[str, Any]] = {}
        try:
            async for entry in watcher:
                if entry is None:  # the end of what is stored
                    break
                if entry.value:
                    found[record_id_of(entry.key)[1]] = json.loads(entry.value)
        finally:
            await watcher.stop()  # type: ignore[no-untyped-call]
        return found

    async def save_record(self, kind: str, record_id: str, record: dict[str, Any]) -> None:
        await self._bucket().put(record_key(kind, record_id), _encode(record))

    async def delete_record(self, kind: str, record_id: str) -> None:
        with contextlib.suppress(nats.js.errors.KeyNotFoundError):
            await self._bucket().delete(record_key(kind, record_id))

    async def update_record(self, kind: str, record_id: str, change: RecordChange) -> None:
        """Compare-and-set on the key's revision, retried when another node got there
        first: two nodes can never both see a lease as free and both take it."""
        kv, key = self._bucket(), record_key(kind, record_id)
        for attempt in range(CAS_ATTEMPTS):
            try:
                entry = await kv.get(key)
                revision: int | None = entry.revision
                current = json.loads(entry.value) if entry.value else None
            except nats.js.errors.KeyNotFoundError:
                revision, current = None, None
            updated = change(current)
            try:
                if updated is None:
                    if current is not None:
                        await kv.delete(key, last=revision)
                elif revision is None:
                    await kv.create(key, _encode(updated))
                else:
                    await kv.update(key, _encode(updated), last=revision)
            except (nats.js.errors.KeyWrongLastSequenceError, nats.js.errors.KeyNotFoundError):
                # Another node changed it first (the client's create-after-delete check
                # can also read a replica that has not seen that change yet): read again.
                await asyncio.sleep(0.005 * attempt)
                continue
            return
        raise NatsUnavailable(f"record {kind}/{record_id} kept changing under us")


class RefusalAnsweringJetStream(JetStreamContext):
    """nats-py 2.16 raises JetStream's refusal of a ``publish_async`` message inside its
    reply handler instead of setting it on the message's future (nats-io/nats.py#985),
    which then never resolves: the event was answered only at the store's timeout, and
    the node's commits waited behind it. Here the refusal answers the future."""

    async def _handle_async_reply(self, msg: Msg) -> None:
        try:
            await super()._handle_async_reply(msg)
        except nats.js.errors.APIError as refusal:
            token = msg.subject[len(self._async_reply_prefix or b"") :]
            future = self._publish_async_futures.get(token)
            if future is not None and not future.done():
                future.set_exception(refusal)


def _oversized(problem: object) -> bool:
    """JetStream's refusal for the message's size (err_code 10054: over the stream's
    ``max_msg_size``), which no resend can change."""
    return isinstance(problem, nats.js.errors.APIError) and problem.err_code == MAX_MSG_SIZE_ERR


async def _quiet(*_: Any) -> None:
    """The read connection's events: the primary connection's callbacks report NATS."""


def is_final_refusal(exc: Exception) -> bool:
    """An answer no retry changes: the server refused the credentials, or its
    certificate is not one this hub trusts. At start that is a configuration error."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return True
    return isinstance(exc, nats.errors.Error) and "authorization violation" in str(exc).lower()


async def _quiet_error(exc: Exception) -> None:
    log.debug("NATS (reads): %s", exc)


def _encode(record: dict[str, Any]) -> bytes:
    return json.dumps(record, separators=(",", ":")).encode()
