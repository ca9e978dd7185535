"""Cluster mode: the log is one NATS JetStream stream that every hub node shares.

A write is acknowledged once JetStream acknowledged it (with R3, once a quorum of
servers has it); the stream sequence is the event's ``seq``, the same on every node.
Each node follows the stream with an ordered consumer into an in-memory replica
(bounded by the same retention as the stream) and answers replays and queries
from it, so nodes are stateless gateways: one that starts reads the stream, one
that dies loses nothing. Webhooks and leases live in a JetStream key-value bucket
whose compare-and-set makes a lease one holder's across nodes.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import logging
import ssl
from collections.abc import Callable
from typing import Any

import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import (
    DeliverPolicy,
    KeyValueConfig,
    StorageType,
    StreamConfig,
)
from nats.js.kv import KeyValue

from taskcast.frames import Publish
from taskcast.store.base import (
    AppendResult,
    EventQuery,
    QueryPage,
    RecordChange,
    Retention,
    StoredEvent,
)
from taskcast.store.memory import MemoryStore
from taskcast.store.nats_layout import (
    DEFAULT_DUPLICATE_WINDOW_SECONDS,
    DEFAULT_STREAM,
    MSG_ID_HEADER,
    NatsUnavailable,
    channel_of,
    envelope,
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

log = logging.getLogger("taskcast.store.nats")

# Heartbeats of the feed consumer: two missed ones and it is recreated where it stopped.
FEED_HEARTBEAT_SECONDS = 1.0
CAS_ATTEMPTS = 20
CLOSE_TIMEOUT_SECONDS = 3.0
FEED_COALESCE_SECONDS = 0.002


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
    ) -> None:
        self.servers = servers
        self.plan = plan_stream(stream, replicas, retention, duplicate_window_seconds)
        self.prefix = subject_prefix(stream)
        self._credentials = credentials
        self._tls = tls
        self._timeout = timeout
        self.replica = MemoryStore(retention)
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        self._kv: KeyValue | None = None
        self._feed: Any = None
        self._listeners: list[Callable[[], None]] = []
        self._caught_up = asyncio.Event()
        self._catch_up_to = 0
        self._generation = 0  # bumped on every disconnect from NATS
        self._closing = False
        self._notify_scheduled = False
        self._last_notify = 0.0
        self._last_error: str | None = None
        self._log_id = ""

    @property
    def head(self) -> int:
        return self.replica.head

    @property
    def oldest(self) -> int:
        return self.replica.oldest

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
        client = Client()
        try:
            # A client that reconnects forever also retries its first connect forever:
            # a hub pointed at no NATS must say so instead.
            async with asyncio.timeout(self._timeout * (len(self.servers) + 1)):
                await client.connect(
                    servers=self.servers,
                    user_credentials=self._credentials,
                    tls=ssl.create_default_context() if self._tls else None,
                    name="taskcast-hub",
                    connect_timeout=max(1, round(self._timeout)),
                    allow_reconnect=True,
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=1,  # per server: another server is tried at once
                    disconnected_cb=self._disconnected,
                    reconnected_cb=self._reconnected,
                    error_cb=self._error,
                )
        except (TimeoutError, OSError, nats.errors.Error) as exc:
            self._closing = True
            with contextlib.suppress(Exception):
                await client.close()
            # The client keeps retrying through most errors; the last one it reported
            # (an authorization violation, a TLS failure) says more than the timeout.
            detail = self._last_error or str(exc) or "no answer"
            raise NatsUnavailable(
                f"cannot reach NATS at {shown_servers(self.servers)}: {detail}"
            ) from exc
        self._nc = client
        self._js = self._nc.jetstream(timeout=self._timeout)
        try:
            last_seq, kept = await self._ensure_stream()
            self._kv = await self._js.create_key_value(
                KeyValueConfig(
                    bucket=f"{self.plan.name}_records",
                    replicas=self.plan.replicas,
                    storage=StorageType.FILE,
                )
            )
        except (nats.errors.Error, NatsUnavailable) as exc:
            self._closing = True
            await self._nc.close()
            if isinstance(exc, NatsUnavailable):
                raise
            raise NatsUnavailable(
                f"NATS JetStream refused stream {self.plan.name} (is JetStream on? "
                f"nats-server -js): {exc!r}"
            ) from exc
        await self._follow(last_seq, kept)

    async def _ensure_stream(self) -> tuple[int, int]:
        """Create the stream, or check the existing one fits and update its limits.
        Returns its last seq (what the replica must reach before the hub serves) and
        how many messages it keeps."""
        assert self._js is not None
        config = StreamConfig(storage=StorageType.FILE, allow_direct=True, **self.plan.as_config())
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
            ):
                info = await self._js.update_stream(config)
                log.info("updated NATS stream %s to this hub's limits", self.plan.name)
        self._log_id = stream_log_id(self.plan.name, info.created)
        return info.state.last_seq, info.state.messages

    async def _follow(self, last_seq: int, kept: int) -> None:
        """Start the ordered consumer at the first seq kept and wait until the replica
        holds everything the stream held when we looked."""
        assert self._js is not None
        self._catch_up_to = last_seq
        if kept == 0:  # empty, or emptied by its limits: numbering goes on after last_seq
            self.replica.skip_to(last_seq)
            self._caught_up.set()
        self._feed = await self._js.subscribe(
            f"{self.prefix}.>",
            stream=self.plan.name,
            cb=self._on_message,
            ordered_consumer=True,
            idle_heartbeat=FEED_HEARTBEAT_SECONDS,
            deliver_policy=DeliverPolicy.ALL,
            pending_msgs_limit=-1,
            pending_bytes_limit=-1,
        )
        await self._caught_up.wait()

    async def close(self) -> None:
        """Close the NATS connection. Not ``drain()``: the hub has already settled every
        publish, and a drain waits for each subscription (up to 30 s) — a SIGTERM
        must not. Bounded in case the connection is mid-reconnect."""
        self._closing = True
        if self._nc is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(CLOSE_TIMEOUT_SECONDS):
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
        seq = msg.metadata.sequence.stream
        if seq <= self.replica.head:
            return  # already have it (the consumer was recreated behind us)
        try:
            event = stored_event(seq, channel_of(self.prefix, msg.subject), msg.data)
        except Exception:
            log.exception("stream message %d is not a taskcast event; skipped", seq)
            self.replica.skip_to(seq)  # the head moves on all the same
        else:
            self.replica.add_stored([event])
        if not self._caught_up.is_set():
            if seq >= self._catch_up_to:
                self._caught_up.set()
            return
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
        for listener in self._listeners:
            listener()

    def on_advance(self, listener: Callable[[], None]) -> None:
        self._listeners.append(listener)

    def events_after(self, seq: int, limit: int) -> list[StoredEvent]:
        return self.replica.events_after(seq, limit)

    async def last_seq(self) -> int:
        if self._js is None:
            raise NatsUnavailable("store is not open")
        info = await self._js.stream_info(self.plan.name)
        return int(info.state.last_seq)

    # --- writing ----------------------------------------------------------------

    async def append(self, events: list[Publish], now_ms: int) -> list[AppendResult]:
        """Publish in order, pipelined, then wait for every JetStream ack. After a
        disconnect nothing more of the batch is sent: a later event must never be
        stored ahead of an earlier one that was lost on the way."""
        js, nc = self._js, self._nc
        if js is None or nc is None:
            raise NatsUnavailable("store is not open")
        generation = self._generation
        acks: list[asyncio.Future[Any]] = []
        for event in events:
            if generation != self._generation or not nc.is_connected:
                break
            headers = {MSG_ID_HEADER: msg_id(event)} if event.client_id else None
            try:
                ack = await js.publish_async(
                    subject_of(self.prefix, event.channel),
                    envelope(event, now_ms),
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
                results.append(AppendResult(0, False, f"NATS refused: {problem}"))
            else:
                answer = ack.result()
                results.append(AppendResult(answer.seq, bool(answer.duplicate)))
        unsent = len(events) - len(acks)
        results.extend(AppendResult(0, False, "NATS connection lost") for _ in range(unsent))
        return results

    # --- reading (from the replica) --------------------------------------------

    async def query(self, query: EventQuery) -> QueryPage:
        return await self.replica.query(query)

    async def trim(self, now_ms: int) -> int:
        """The stream enforces its own limits; the replica drops what they drop."""
        return await self.replica.trim(now_ms)

    async def count_by_time(
        self, since_ms: int, until_ms: int, bucket_ms: int
    ) -> list[tuple[int, str, str, int]]:
        return await self.replica.count_by_time(since_ms, until_ms, bucket_ms)

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


def _encode(record: dict[str, Any]) -> bytes:
    return json.dumps(record, separators=(",", ":")).encode()
