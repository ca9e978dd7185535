"""The hub's engine: one ordered commit loop, fan-out, and replay hand-over.

Every publish goes through one queue. The commit loop takes all that is waiting
(group commit), stores it, then — in seq order, without awaiting in between —
delivers the new events to live subscriptions and acknowledges the publishers.
``published_head`` is the last seq fanned out; replay reads the store up to it
and switches a subscription to live only when nothing lies beyond it, so replay
and live meet with no gap and no duplicate.

On a shared log (cluster mode) other nodes write too: fan-out then follows the log
itself, in seq order, whoever wrote the event, and a publisher's ack waits until
its event has been fanned out here — so an acked event is visible on this node
(replay, summaries, HTTP) exactly as with the embedded store.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import heapq
import logging
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

from taskcast.broker import ReplayCursor, Subscription, SubscriptionIndex
from taskcast.channels import task_of_channel
from taskcast.commands import COMMAND_TYPE, Rejection, RemoteEvent
from taskcast.frames import (
    FrameError,
    Ping,
    Publish,
    Subscribe,
    Unsubscribe,
    ack_frame,
    decode,
    error_frame,
    parse_client_frame,
    parse_event,
    pong_frame,
    subscribed_frame,
    with_seq,
)
from taskcast.hub.access import (
    connection_refusal,
    publish_refusal,
    read_refusal,
    subscription_refusal,
)
from taskcast.hub.config import HubConfig
from taskcast.hub.connection import (
    CLOSE_GOING_AWAY,
    CLOSE_SLOW_CONSUMER,
    CLOSE_TOKEN_EXPIRED,
    ClientConnection,
    WritePass,
)
from taskcast.hub.group_commit import GroupCommit
from taskcast.hub.pacing import LoopLag
from taskcast.leases import Lapse, Lease, acquire, lapse_of, may_release, runner_lost_id
from taskcast.ratelimit import BucketTable
from taskcast.store import AppendResult, EventQuery, EventStore, SharedLog, StoredEvent
from taskcast.store.base import stored_row
from taskcast.summaries import TaskSummaries
from taskcast.vocabulary import FINAL_STATUSES, ErrorCode, EventType
from taskcast.webhooks.worker import WebhookDispatcher
from taskcast.wsframe import text_frame

log = logging.getLogger("taskcast.hub")

Outcome = AppendResult | BaseException


def store_refusal(
    outcome: Outcome, what: str = "event", frame_id: str | None = None
) -> FrameError | None:
    """Why the log did not store an event, one answer for every door: ``too_large`` when
    it never can (not to be resent), else ``store_unavailable`` (resend it); None once
    stored."""
    if isinstance(outcome, AppendResult):
        if outcome.too_large:
            return FrameError(ErrorCode.TOO_LARGE, f"{what} too large for the log", frame_id)
        if outcome.error is None:
            return None
    return FrameError(ErrorCode.STORE_UNAVAILABLE, f"{what} not stored", frame_id)


Reply = Callable[[Outcome], None]
# An event waiting for the commit loop, and the connection it came on (None: HTTP, hub).
Pending = tuple[Publish, Reply, "ClientConnection | None"]
STORE_FAILED = "an earlier event of this connection was not stored; resend from there"


# The ``reason`` label of taskcast_connections_refused_total for a refusal's code.
REFUSAL_REASONS: dict[str, str] = {
    ErrorCode.TOO_MANY_CONNECTIONS: "max_connections",
    ErrorCode.FORBIDDEN: "origin",
}
MAX_TYPE_LABELS = 100
HUB_PUBLISHER = "taskcast-hub"  # the publisher of events the hub itself writes
LEASE_KIND = "lease"  # the store records that hold leases
OTHER_LABEL = "other"

# A run's bytes before it is cut: one chunk per subscriber, far below any sane
# --max-subscriber-buffer (a run is also cut at a quarter of it).
RUN_BYTES = 64 * 1024
# Upper bounds (seconds) of the store commit latency histogram.
# How long a subscribe on a shared log waits for this node to reach its ``since``.
CATCH_UP_SECONDS = 5.0
COMMIT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
REPLAY_SLICE = 128  # replayed events queued between two yields to the event loop


@dataclass(slots=True)
class Run:
    """Consecutive events bound for the same subscriptions, delivered together."""

    frames: list[bytes] = field(default_factory=list)
    seqs: list[int] = field(default_factory=list)
    kinds: list[str] = field(default_factory=list)
    size: int = 0

    def add(self, frame: bytes, seq: int, kind: str) -> None:
        self.frames.append(frame)
        self.seqs.append(seq)
        self.kinds.append(kind)
        self.size += len(frame)


@dataclass(slots=True)
class HubStats:
    """Plain counters on the hot path; the metrics endpoint reads them at scrape time."""

    published: dict[str, int] = field(default_factory=dict)  # by event type
    delivered: dict[str, int] = field(default_factory=dict)  # by event type
    rejected: dict[str, int] = field(default_factory=dict)  # by error code
    duplicates: int = 0
    replays: int = 0
    replayed: int = 0
    slow_consumers: int = 0
    idle_disconnects: int = 0
    expired_tokens: int = 0
    oversized_frames: int = 0
    refused: dict[str, int] = field(default_factory=dict)  # connections, by reason
    commits: int = 0
    commit_buckets: list[int] = field(default_factory=lambda: [0] * (len(COMMIT_BUCKETS) + 1))
    commit_seconds_sum: float = 0.0

    def type_label(self, event_type: str) -> str:
        """The metric label for an event type: the first MAX_TYPE_LABELS types seen keep
        their name, the rest count as "other" (labels are a closed, bounded set)."""
        if event_type in self.published or len(self.published) < MAX_TYPE_LABELS:
            return event_type
        return OTHER_LABEL

    def observe_commit(self, seconds: float) -> None:
        self.commits += 1
        self.commit_seconds_sum += seconds
        self.commit_buckets[bisect.bisect_left(COMMIT_BUCKETS, seconds)] += 1


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def publisher_of(publish: Publish, origin: ClientConnection | None) -> Hashable:
    """Who sent an event, for group commit: its connection; over HTTP, its publisher."""
    return origin if origin is not None else publish.publisher


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class Hub:
    def __init__(self, store: EventStore, config: HubConfig) -> None:
        self.store = store
        self.config = config
        self.index: SubscriptionIndex[ClientConnection] = SubscriptionIndex()
        self.connections: set[ClientConnection] = set()
        self.connections_by_peer: dict[str, int] = {}
        self.write_pass = WritePass()  # writes the websockets a loop pass queued for
        self.stats = HubStats()
        self.summaries = TaskSummaries(config.max_task_summaries, config.summary_text_chars)
        self._replay_slots = asyncio.Semaphore(config.max_concurrent_replays)
        self.loop_lag = LoopLag()
        self.webhooks = WebhookDispatcher(
            store,
            lambda: self.published_head,
            allow_private=config.allow_private_webhooks or config.verifier is None,
            give_up_seconds=config.webhook_give_up_seconds,
            now_ms=now_ms,
            clustered=isinstance(store, SharedLog),
        )
        # POST /api/events has no connection to hang a bucket on: one per publisher.
        self.http_buckets = BucketTable(config.publish_rate, config.publish_burst)
        self.published_head = 0
        self.snapshot_seq = 0  # the seq of the last summaries snapshot saved or loaded
        self.shared = store if isinstance(store, SharedLog) else None
        # Shared log: acks waiting for their event to be fanned out, by seq.
        self._held: list[tuple[int, int, Reply, AppendResult]] = []
        self._held_count = 0
        # Subscribers waiting for this node's feed to reach a seq (``_head_reaching``).
        self._head_waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._pending: list[Pending] = []
        # Off in cluster mode: acks wait for the feed there, so the publishers of a
        # batch could not send during its wait (and it is not measured).
        self._group = GroupCommit(
            0.0 if isinstance(store, SharedLog) else config.commit_window_seconds,
            config.max_batch,
        )
        # A commit waiting for company: its future, and the pending count that ends it.
        self._joining: tuple[asyncio.Future[None], int] | None = None
        self._has_work = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._tasks: list[asyncio.Task[None]] = []
        self._closers: set[asyncio.Task[None]] = set()
        self.accepting = True

    async def start(self) -> None:
        self.published_head = self.store.head
        await self._load_summaries()
        self._tasks.append(asyncio.create_task(self._commit_loop(), name="taskcast-commit"))
        self._tasks.append(asyncio.create_task(self._trim_loop(), name="taskcast-trim"))
        self._tasks.append(asyncio.create_task(self._lease_loop(), name="taskcast-leases"))
        await self.webhooks.start()
        if self.shared is not None:
            self._tasks.append(
                asyncio.create_task(self._snapshot_loop(), name="taskcast-snapshots")
            )
            self.shared.pace_reads(self.loop_lag.give_way)
            self.shared.on_advance(self._follow_log)
            self._follow_log()  # what arrived while the summaries loaded

    async def _load_summaries(self) -> None:
        """Fold the log into the task summaries; a shared log's node starts from the
        latest snapshot a node saved and folds only what came after it."""
        cursor = self.store.oldest - 1
        if self.shared is not None:
            try:
                snapshot = await self.shared.load_snapshot()
            except Exception as exc:
                log.warning("no task-summaries snapshot (%s): folding the whole log", exc)
                snapshot = None
            if snapshot is not None and cursor < snapshot[0] <= self.published_head:
                self.summaries.load(snapshot[1])
                self.summaries.forget_before(self.store.oldest)
                cursor = snapshot[0]
                self.snapshot_seq = snapshot[0]
                log.info(
                    "task summaries from the snapshot at seq %d, then %d seqs of the log",
                    cursor,
                    self.published_head - cursor,
                )
        while cursor < self.published_head:
            page = await self.store.query(
                EventQuery(after=cursor, until=self.published_head, limit=10_000)
            )
            for event in page.events:
                self._observe(event)
            cursor = page.scanned_to

    # --- publishing -------------------------------------------------------

    def submit(
        self, publish: Publish, reply: Reply, origin: ClientConnection | None = None
    ) -> None:
        self._pending.append((publish, reply, origin))
        self._group.arrived(publisher_of(publish, origin))
        joining = self._joining
        if joining is not None and len(self._pending) >= joining[1]:
            self._joining = None
            _resolve(joining[0])  # unless the window's timer did, a moment ago
        self._idle.clear()
        self._has_work.set()

    async def publish(self, publish: Publish) -> AppendResult:
        """Publish and wait for the durable ack (the HTTP API's path)."""
        future: asyncio.Future[AppendResult] = asyncio.get_running_loop().create_future()

        def reply(outcome: Outcome) -> None:
            if future.done():
                return
            if isinstance(outcome, BaseException):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)

        self.submit(publish, reply)
        return await future

    async def _commit_loop(self) -> None:
        while True:
            if not self._has_work.is_set():
                await self._has_work.wait()
                # Woken from idle by what may be the first event of a burst: one loop
                # pass more reads the rest that has already arrived, so it goes in this
                # commit and one fan-out, not two (docs/architecture.md: "From idle").
                await asyncio.sleep(0)
            await self._group_wait()
            self._group.last_commit = time.monotonic()
            batch = self._held_back(self._pending[: self.config.max_batch])
            del self._pending[: self.config.max_batch]
            if not self._pending:
                self._has_work.clear()
            if not batch:
                if not self._pending:
                    self._idle.set()
                continue
            stamp = now_ms()
            started = time.perf_counter()
            try:
                results = await self.store.append([publish for publish, _, _ in batch], stamp)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.error("store append failed for %d events: %s", len(batch), exc)
                for _, reply, origin in batch:
                    self._publish_failed(origin)
                    reply(exc)
                await asyncio.sleep(0.05)  # a failing store is not retried in a hot loop
            else:
                self.stats.observe_commit(time.perf_counter() - started)
                if self.shared is None:
                    self._fan_out(batch, results, stamp)
                else:
                    self._settle(batch, results)
            if not self._pending:
                self._idle.set()

    async def _group_wait(self) -> None:
        """Under many publishers, let more events join this commit (group_commit.py)."""
        pending = self._pending
        wait = self._group.wait(
            time.monotonic(),
            (publisher_of(publish, origin) for publish, _, origin in pending),
            len(pending),
        )
        if wait is None:
            return
        loop = asyncio.get_running_loop()
        joined: asyncio.Future[None] = loop.create_future()
        self._joining = (joined, wait.pending)
        timer = loop.call_later(wait.seconds, _resolve, joined)
        try:
            await joined
        finally:
            timer.cancel()
            self._joining = None

    def _held_back(self, batch: list[Pending]) -> list[Pending]:
        """Refuse, unstored, every event of a connection that already had one refused:
        storing a later event ahead of the earlier one's resend would break its order.
        The client reconnects and resends from the first unacknowledged event."""
        kept: list[Pending] = []
        for item in batch:
            origin = item[2]
            if origin is not None and origin.publish_failed:
                item[1](AppendResult(0, False, STORE_FAILED))
            else:
                kept.append(item)
        return kept

    def _publish_failed(self, origin: ClientConnection | None) -> None:
        if origin is not None:
            origin.publish_failed = True

    def _fan_out(self, batch: list[Pending], results: list[AppendResult], stamp: int) -> None:
        """Deliver what the batch stored, then ack it: a publisher subscribed to its own
        channel has each event before its ack."""
        slow: list[ClientConnection] = []
        stored = [
            (StoredEvent(*stored_row(result.seq, publish, stamp)), publish.payload)
            for (publish, _, origin), result in zip(batch, results, strict=True)
            if self._stored_anew(publish, origin, result)  # payload: decoded at parse time
        ]
        self._fan_out_stored(stored, slow)
        for (_, reply, _), result in zip(batch, results, strict=True):
            reply(result)
        for connection in slow:
            self._drop_slow_consumer(connection)
        self.webhooks.notify()

    def _stored_anew(
        self, publish: Publish, origin: ClientConnection | None, result: AppendResult
    ) -> bool:
        """Count a repeat or a refusal; True for an event stored for the first time."""
        if result.duplicate:
            self.stats.duplicates += 1
        elif result.error is not None:
            log.warning("event %s not stored: %s", publish.id, result.error)
            if not result.too_large:  # it is never resent: nothing later waits for it
                self._publish_failed(origin)
        else:
            return True
        return False

    def _deliver_run(
        self,
        run: Run,
        subscriptions: list[Subscription[ClientConnection]],
        slow: list[ClientConnection],
    ) -> None:
        """Queue a run of consecutive events for every live subscription they all match:
        framed once, one chunk per websocket (per subscriber the cost is per run, not
        per event); count the deliveries."""
        framed = b"".join([text_frame(frame) for frame in run.frames])
        count = 0
        for subscription in subscriptions:
            connection = subscription.connection
            if subscription.live and not connection.closing:  # closing: not delivered
                if connection.deliver_run(run.frames, run.seqs, framed):
                    count += 1
                else:
                    slow.append(connection)
        if count:
            delivered = self.stats.delivered
            for kind in run.kinds:
                delivered[kind] += count

    # --- a shared log (cluster mode) ---------------------------------------------

    def _settle(self, batch: list[Pending], results: list[AppendResult]) -> None:
        """Answer what needs no fan-out now; hold each new event's ack until the log
        brings it back here (``_follow_log``)."""
        for (publish, reply, origin), result in zip(batch, results, strict=True):
            self._stored_anew(publish, origin, result)
            if result.error is None and result.seq > self.published_head:
                self._held_count += 1
                heapq.heappush(self._held, (result.seq, self._held_count, reply, result))
            else:
                reply(result)

    def _follow_log(self) -> None:
        """Fan out, in seq order, what the shared log holds beyond ``published_head``."""
        assert self.shared is not None
        slow: list[ClientConnection] = []
        while events := self.shared.events_after(self.published_head, 1000):
            self._fan_out_stored([(event, None) for event in events], slow)
        # Seqs the log skipped (a message that is no taskcast event) are passed too.
        self.published_head = max(self.published_head, self.shared.head)
        held = self._held
        while held and held[0][0] <= self.published_head:
            _, _, reply, result = heapq.heappop(held)
            reply(result)
        if self._head_waiters:
            waiting = self._head_waiters
            self._head_waiters = [(seq, f) for seq, f in waiting if seq > self.published_head]
            for seq, future in waiting:
                if seq <= self.published_head and not future.done():
                    future.set_result(None)
        for connection in slow:
            self._drop_slow_consumer(connection)
        self.webhooks.notify()

    def _fan_out_stored(
        self,
        events: list[tuple[StoredEvent, dict[str, Any] | None]],
        slow: list[ClientConnection],
    ) -> None:
        """Deliver stored events in seq order, count them, fold them into the summaries
        and move ``published_head`` — for the commit loop and a shared log's feed alike.
        Each event's payload comes along when it is already decoded. Consecutive events
        for the same subscriptions go out as one run (``_deliver_run``)."""
        stats = self.stats
        run_limit = min(RUN_BYTES, self.config.max_subscriber_buffer // 4)
        run = Run()
        run_for: list[Subscription[ClientConnection]] | None = None
        for event, payload in events:
            seq = event.seq
            frame = with_seq(event.body, seq)
            subscriptions = self.index.match(event.channel)
            kind = stats.type_label(event.type)
            stats.published[kind] = stats.published.get(kind, 0) + 1
            stats.delivered.setdefault(kind, 0)
            if subscriptions:  # an event for nobody does not cut a run
                if run_for is not None and (subscriptions is not run_for or run.size > run_limit):
                    self._deliver_run(run, run_for, slow)
                    run = Run()
                run_for = subscriptions
                run.add(frame, seq, kind)
            self._observe(event, payload)
            self.published_head = seq
            if event.type == COMMAND_TYPE:
                if payload is None:
                    decoded = decode(event.body).get("payload")
                    payload = decoded if isinstance(decoded, dict) else {}
                self._answer_command_for_ended_task(
                    seq, event.id, event.publisher, event.channel, payload
                )
        if run_for is not None:
            self._deliver_run(run, run_for, slow)

    def _observe(self, event: StoredEvent, payload: dict[str, Any] | None = None) -> None:
        """Fold a stored event into the task summaries."""
        self.summaries.observe(
            event.seq,
            event.ts,
            event.type,
            event.task_id,
            event.source,
            event.body,
            event.channel,
            payload,
        )

    def _answer_command_for_ended_task(
        self,
        seq: int,
        command_id: str,
        by: str,
        channel: str,
        payload: dict[str, Any],
    ) -> None:
        """A command for a task the log shows as ended has no runner to answer it: the
        hub answers ``command_rejected`` (``task_ended``) on the task's channel. Its id
        comes from the command's seq, so every node of a cluster may answer and the log
        keeps one answer."""
        owner = task_of_channel(channel)
        summary = self.summaries.get(owner[1]) if owner is not None else None
        if summary is None or summary.status not in FINAL_STATUSES.values():
            return
        rejection = parse_event(
            {
                "id": f"command-{seq}-rejected",
                "type": RemoteEvent.COMMAND_REJECTED.value,
                "payload": {
                    "taskId": summary.task_id,
                    "action": payload.get("action"),
                    "requestId": payload.get("requestId"),
                    "commandId": command_id,
                    "by": by,
                    "reason": Rejection.TASK_ENDED.value,
                    "timestamp": now_ms(),
                },
            },
            HUB_PUBLISHER,
        )
        self.submit(rejection, lambda outcome: None)

    async def take_lease(self, task_id: str, holder: str, ttl_seconds: float) -> tuple[bool, Lease]:
        """Grant or renew ``holder``'s lease in one atomic step of the store, so two
        hub nodes can never both grant it."""
        outcome: list[tuple[bool, Lease]] = []

        def change(record: dict[str, Any] | None) -> dict[str, Any] | None:
            current = Lease.from_record(record) if record is not None else None
            outcome[:] = [acquire(current, task_id, holder, now_ms(), ttl_seconds)]
            granted, lease = outcome[0]
            return lease.to_record() if granted else record

        await self.store.update_record(LEASE_KIND, task_id, change)
        return outcome[0]

    async def release_lease(self, task_id: str, holder: str) -> bool:
        released: list[bool] = []

        def change(record: dict[str, Any] | None) -> dict[str, Any] | None:
            current = Lease.from_record(record) if record is not None else None
            released[:] = [may_release(current, holder)]
            return None if released[0] else record

        await self.store.update_record(LEASE_KIND, task_id, change)
        return released[0]

    async def drain(self) -> None:
        """Wait until every event submitted so far is committed and fanned out."""
        await self._idle.wait()

    # --- connections ------------------------------------------------------

    @property
    def publishers(self) -> int:
        """Open connections that have published."""
        return sum(1 for c in self.connections if c.published)

    @property
    def subscribers(self) -> int:
        """Open connections with at least one subscription."""
        return sum(1 for c in self.connections if c.subscription_count)

    def admission_refusal(self, peer: str) -> FrameError | None:
        """Whether one more websocket or SSE stream from ``peer`` may open."""
        return connection_refusal(
            self.config,
            accepting=self.accepting,
            open_total=len(self.connections),
            open_from_peer=self.connections_by_peer.get(peer, 0),
        )

    def attach(self, connection: ClientConnection) -> None:
        self.connections.add(connection)
        peer = connection.peer
        self.connections_by_peer[peer] = self.connections_by_peer.get(peer, 0) + 1
        connection.start()
        expires_at = connection.principal.expires_at
        if expires_at is not None and connection.principal.authenticated:
            # A token stops working at its exp on open connections too (close 4401;
            # clients reconnect with a fresh token).
            delay = max(0.0, expires_at - time.time())
            connection.expiry = asyncio.get_running_loop().call_later(
                delay, self._expire, connection
            )

    def _expire(self, connection: ClientConnection) -> None:
        if connection.closing:
            return
        self.stats.expired_tokens += 1
        self._close_soon(connection, CLOSE_TOKEN_EXPIRED, {"code": "token_expired"})

    def detach(self, connection: ClientConnection) -> None:
        if connection in self.connections:
            self.connections.discard(connection)
            peer = connection.peer
            left = self.connections_by_peer.get(peer, 1) - 1
            if left > 0:
                self.connections_by_peer[peer] = left
            else:
                self.connections_by_peer.pop(peer, None)
        for subscription in connection.take_all_subscriptions():
            self.index.remove(subscription)
        connection.stop_writer()

    def handle_text(self, connection: ClientConnection, data: str) -> None:
        principal = connection.principal
        try:
            frame = parse_client_frame(data, principal.publisher)
        except FrameError as exc:
            self.reject(connection, exc)
            return
        if isinstance(frame, Publish):
            connection.published = True
            refusal = publish_refusal(
                principal,
                frame.channel,
                accepting=self.accepting,
                bucket=connection.bucket,
                now=time.monotonic(),
                event_id=frame.id,
                event_type=frame.type,
            )
            if refusal is not None:
                self.reject(connection, refusal)
                return
            if connection.publish_failed:
                self._ack(connection, frame, AppendResult(0, False, STORE_FAILED))
                return
            self.submit(
                frame, lambda outcome: self._ack(connection, frame, outcome), origin=connection
            )
        elif isinstance(frame, Subscribe):
            refusal = read_refusal(principal, frame.pattern) or subscription_refusal(
                self.config,
                current=connection.subscription_count,
                replacing=connection.subscription(frame.pattern) is not None,
            )
            if refusal is not None:
                self.reject(connection, refusal)
                return
            self.subscribe(connection, frame)
        elif isinstance(frame, Unsubscribe):
            self.unsubscribe(connection, frame.pattern)
        elif isinstance(frame, Ping):
            self.reply(connection, pong_frame(frame.id))

    def reply(self, connection: ClientConnection, frame: bytes) -> None:
        """Queue a reply; it counts toward the connection's buffer like any delivery."""
        if not connection.deliver(frame):
            self._drop_slow_consumer(connection)

    def count_refused(self, reason: str) -> None:
        reason = REFUSAL_REASONS.get(reason, reason)
        self.stats.refused[reason] = self.stats.refused.get(reason, 0) + 1

    def reject(self, connection: ClientConnection, error: FrameError) -> None:
        self.count_rejected(error.code)
        self.reply(connection, error.to_frame())

    def count_rejected(self, code: str) -> None:
        self.stats.rejected[code] = self.stats.rejected.get(code, 0) + 1

    def _ack(self, connection: ClientConnection, publish: Publish, outcome: Outcome) -> None:
        refusal = store_refusal(outcome, frame_id=publish.id)
        if refusal is not None:
            self.reply(connection, refusal.to_frame())
        elif isinstance(outcome, AppendResult):  # always, once stored
            self.reply(connection, ack_frame(publish.id, outcome.seq, outcome.duplicate))

    def subscribe(self, connection: ClientConnection, request: Subscribe) -> None:
        self.unsubscribe(connection, request.pattern)
        subscription = Subscription(connection, request.pattern, live=request.since is None)
        connection.add_subscription(subscription)
        self.index.add(subscription)
        since = request.since
        if since is not None and since > self.published_head and self.shared is not None:
            # This node may trail the shared log (its feed brings what other nodes wrote
            # a few ms later): ask the log before saying that ``since`` is ahead of it.
            connection.replays[request.pattern] = asyncio.create_task(
                self._answer_when_caught_up(subscription, since)
            )
            return
        self._answer_subscribe(subscription, since)

    def _answer_subscribe(
        self, subscription: Subscription[ClientConnection], since: int | None
    ) -> None:
        """``subscribed`` (head, log id, recovered, ahead), then the replay from ``since``."""
        connection = subscription.connection
        head = self.published_head
        oldest = min(self.store.oldest, head + 1)
        ahead = since is not None and since > head
        self.reply(
            connection,
            subscribed_frame(
                subscription.pattern, head, since, oldest, self.store.log_id, ahead=ahead
            ),
        )
        if since is not None and not connection.closing:
            self.stats.replays += 1
            connection.replays[subscription.pattern] = asyncio.create_task(
                self._replay(subscription, since)
            )

    async def _answer_when_caught_up(
        self, subscription: Subscription[ClientConnection], since: int
    ) -> None:
        """On a shared log: when ``since`` is within the log, wait (a bounded while) for
        this node's feed to reach it; then answer as ``_answer_subscribe`` does."""
        assert self.shared is not None
        try:
            if since <= await self.shared.last_seq():
                await self._head_reaching(since, CATCH_UP_SECONDS)
        except Exception as exc:  # the log could not say: answer with what this node has
            log.warning("could not read the shared log's head: %s", exc)
        connection = subscription.connection
        if connection.closing or connection.subscription(subscription.pattern) is not subscription:
            return
        if connection.replays.get(subscription.pattern) is asyncio.current_task():
            del connection.replays[subscription.pattern]
        self._answer_subscribe(subscription, since)

    async def _head_reaching(self, seq: int, timeout: float) -> None:
        """Until ``published_head`` reaches ``seq`` (or ``timeout`` passes)."""
        if self.published_head >= seq:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._head_waiters.append((seq, future))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(future), timeout)

    def unsubscribe(self, connection: ClientConnection, pattern: str) -> None:
        subscription = connection.take_subscription(pattern)
        if subscription is not None:
            self.index.remove(subscription)
        replay = connection.replays.pop(pattern, None)
        if replay is not None:
            replay.cancel()  # a resubscribe replaces the old replay instead of adding one

    async def _replay(self, subscription: Subscription[ClientConnection], since: int) -> None:
        """Replay the log to one subscription, a page at a time: one page of this
        connection's at once, ``max_concurrent_replays`` pages hub-wide, so a flood of
        ``subscribe since=0`` neither starves the HTTP API nor outlives its client."""
        connection = subscription.connection
        cursor = ReplayCursor(since)
        try:
            while True:
                async with connection.replay_turn, self._replay_slots:
                    span = cursor.next_range(self.published_head)
                    if span is None:
                        subscription.live = True  # no await since reading published_head
                        return
                    page = await self.store.query(
                        EventQuery(
                            after=span[0],
                            until=span[1],
                            pattern=subscription.pattern,
                            limit=self.config.replay_page,
                        )
                    )
                if (
                    connection.closing
                    or connection.subscription(subscription.pattern) is not subscription
                ):
                    return
                for index, event in enumerate(page.events, 1):
                    connection.put_replay(with_seq(event.body, event.seq), event.seq)
                    if not index % REPLAY_SLICE:
                        await self.loop_lag.give_way()  # live delivery goes first
                self.stats.replayed += len(page.events)
                cursor.advance(page.scanned_to)
                await connection.wait_for_room()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("replay failed for %r", connection)
            self.reply(
                connection,
                error_frame(ErrorCode.REPLAY_FAILED, "replay failed; resubscribe with since"),
            )
        finally:
            if connection.replays.get(subscription.pattern) is asyncio.current_task():
                del connection.replays[subscription.pattern]

    def _drop_slow_consumer(self, connection: ClientConnection) -> None:
        if connection.closing:
            return
        connection.begin_close()  # at once: later deliveries in this batch are skipped
        self.stats.slow_consumers += 1
        last_seq = connection.last_sent_seq
        log.warning("closing slow consumer %r (last seq sent %d)", connection, last_seq)
        for subscription in connection.take_all_subscriptions():
            self.index.remove(subscription)
        self._close_soon(
            connection, CLOSE_SLOW_CONSUMER, {"code": "slow_consumer", "lastSeq": last_seq}
        )

    def _close_soon(
        self, connection: ClientConnection, code: int, reason: dict[str, object]
    ) -> None:
        task = asyncio.create_task(connection.close(code, reason))
        self._closers.add(task)
        task.add_done_callback(self._closers.discard)

    # --- housekeeping -----------------------------------------------------

    async def _lease_loop(self) -> None:
        """Look for lapsed leases every ``lease_sweep_seconds``: a runner that stopped
        renewing before its task ended is reported (``runner_lost``), once. It ends when
        the hub stops accepting, even if a cancellation is swallowed in the NATS client."""
        while self.accepting:
            await asyncio.sleep(self.config.lease_sweep_seconds)
            try:
                await self.sweep_leases(now_ms())
            except Exception as exc:
                log.warning("lease sweep failed: %s", exc)

    async def sweep_leases(self, now: int) -> None:
        for record in (await self.store.load_records(LEASE_KIND)).values():
            lease = Lease.from_record(record)
            summary = self.summaries.get(lease.task_id)
            ended = summary is not None and summary.status in FINAL_STATUSES.values()
            lapse = lapse_of(lease, now, ended)
            if lapse is Lapse.KEEP:
                continue
            if lapse is Lapse.REPORT:
                try:
                    lost = parse_event(
                        {
                            "id": runner_lost_id(lease),
                            "type": EventType.RUNNER_LOST.value,
                            "payload": {
                                "taskId": lease.task_id,
                                "holder": lease.holder,
                                "lastSeq": summary.last_seq if summary is not None else 0,
                                "leaseExpiredAt": lease.expires_at,
                                "timestamp": now,
                            },
                        },
                        HUB_PUBLISHER,
                    )
                except FrameError as exc:  # a lease taken before task ids were checked
                    log.warning("dropping the lease on %r: %s", lease.task_id, exc)
                else:
                    self.submit(lost, lambda outcome: None)

            def forget(
                current: dict[str, Any] | None, lapsed: Lease = lease
            ) -> dict[str, Any] | None:
                # Only that lapsed lease: a runner that took it since keeps its own.
                return None if current == lapsed.to_record() else current

            await self.store.update_record(LEASE_KIND, lease.task_id, forget)

    async def _snapshot_loop(self) -> None:
        """Save the task summaries of a shared log now and then, so that a node that
        starts folds only the log's tail: start-up does not grow with the log."""
        assert self.shared is not None
        while self.accepting:
            await asyncio.sleep(self.config.snapshot_interval_seconds)
            if self.published_head - self.snapshot_seq < self.config.snapshot_min_events:
                continue
            seq, data = self.published_head, self.summaries.dump()  # one consistent view
            try:
                await self.shared.save_snapshot(seq, data)
            except Exception as exc:
                log.warning("saving the task-summaries snapshot failed: %s", exc)
            else:
                self.snapshot_seq = seq

    async def _trim_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.trim_interval_seconds)
            try:
                removed = await self.store.trim(now_ms())
            except Exception:
                log.exception("retention trim failed")
            else:
                if removed:
                    log.info("retention removed %d events", removed)
                forgotten = self.summaries.forget_before(self.store.oldest)
                if forgotten:
                    log.info("retention removed %d task summaries", forgotten)

    async def stop(self) -> None:
        """Commit what is pending, close every client with 1001, stop the loops."""
        self.accepting = False
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.config.shutdown_timeout_seconds):
                await self.drain()
        connections = list(self.connections)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.config.shutdown_timeout_seconds / 2):
                await asyncio.gather(*(c.flush() for c in connections))
        await asyncio.gather(*(c.close(CLOSE_GOING_AWAY) for c in connections))
        await self.webhooks.stop()
        await self.loop_lag.stop()
        for task in [*self._tasks, *self._closers]:
            task.cancel()
        with contextlib.suppress(TimeoutError):  # a stop must end, whatever a store does
            async with asyncio.timeout(self.config.shutdown_timeout_seconds):
                await asyncio.gather(*self._tasks, *self._closers, return_exceptions=True)
