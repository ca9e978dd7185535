"""The ordered, durable event log every store implements."""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from taskcast.channels import matches
from taskcast.frames import ANONYMOUS, Publish


@dataclass(slots=True)
class StoredEvent:
    seq: int
    id: str
    channel: str
    type: str
    task_id: str | None
    source: str | None
    ts: int  # hub receive time, ms since the epoch
    body: bytes  # the delivery frame without "seq" (see frames.with_seq)
    publisher: str = ANONYMOUS  # the authenticated sub that published it


def stored_row(seq: int, event: Publish, now_ms: int) -> tuple[Any, ...]:
    """An event as the log keeps it, in ``StoredEvent`` field order (the SQLite columns)."""
    return (
        seq,
        event.id,
        event.channel,
        event.type,
        event.task_id,
        event.source,
        now_ms,
        event.body,
        event.publisher,
    )


@dataclass(slots=True)
class AppendResult:
    seq: int
    duplicate: bool
    # Set when this one event could not be stored (the rest of its batch still was).
    error: str | None = None
    # The store can never take this event (bigger than it allows): a resend cannot help,
    # so it is answered ``too_large`` and the connection's later events go on.
    too_large: bool = False


@dataclass(slots=True)
class EventQuery:
    """Events with ``after < seq <= until`` matching the filters, oldest first."""

    after: int = 0
    until: int | None = None
    pattern: str | None = None
    type: str | None = None
    task_id: str | None = None
    limit: int = 1000
    # When set, only channels matching one of these patterns (what a token may read).
    readable: tuple[str, ...] | None = None

    def selects(self, event: StoredEvent) -> bool:
        return (
            (self.type is None or event.type == self.type)
            and (self.task_id is None or event.task_id == self.task_id)
            and (self.pattern is None or matches(self.pattern, event.channel))
            and (self.readable is None or any(matches(p, event.channel) for p in self.readable))
        )


@dataclass(slots=True)
class QueryPage:
    events: list[StoredEvent]
    # Every matching event with seq <= scanned_to is in this page or an earlier
    # one: the next page starts after it.
    scanned_to: int


def select_page(events: Iterable[StoredEvent], query: EventQuery, upto: int) -> QueryPage:
    """The page ``query`` selects from ``events`` (in seq order, all after
    ``query.after``) up to seq ``upto``: what every store's ``query`` returns."""
    found: list[StoredEvent] = []
    scanned_to = max(query.after, upto)
    for event in events:
        if event.seq > upto:
            break
        if query.selects(event):
            found.append(event)
            if len(found) >= query.limit:
                scanned_to = event.seq
                break
    return QueryPage(found, scanned_to)


@dataclass(slots=True, frozen=True)
class Retention:
    max_events: int | None = None
    max_age_seconds: float | None = None

    def __post_init__(self) -> None:
        # 0 or less would trim the whole log on the first pass (JetStream reads 0 as
        # "no limit" instead): refuse it, whoever builds the policy.
        if self.max_events is not None and self.max_events < 1:
            raise ValueError(f"keep at least 1 event, not {self.max_events} (None: keep all)")
        age = self.max_age_seconds
        if age is not None and not (age > 0 and math.isfinite(age)):
            raise ValueError(f"keep events for a finite time over 0 s, not {age}")


class EventStore(Protocol):
    """An append-only log numbered by ``seq``, strictly increasing in storage order."""

    @property
    def head(self) -> int:
        """The highest seq stored (0 when nothing ever was)."""
        ...

    @property
    def oldest(self) -> int:
        """The oldest seq still kept (``head + 1`` when the log is empty)."""
        ...

    @property
    def description(self) -> str: ...

    @property
    def log_id(self) -> str:
        """This log's identity, made with it and kept with it (valid once open): a seq
        means something only together with it — a resume point is ``(log_id, seq)``."""
        ...

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def append(self, events: list[Publish], now_ms: int) -> list[AppendResult]:
        """Durably store new events in order; an id the same publisher already used
        returns its first seq. One event that cannot be stored never fails the others."""
        ...

    async def query(self, query: EventQuery) -> QueryPage: ...

    async def trim(self, now_ms: int) -> int:
        """Apply the retention policy; return how many events were removed."""
        ...

    async def count_by_time(
        self, since_ms: int, until_ms: int, bucket_ms: int
    ) -> list[tuple[int, str, str, int]]:
        """Events received in ``[since_ms, until_ms)``, counted per time bucket, type and
        channel: ``(bucket start ms, type, channel, count)`` — analytics over the log."""
        ...

    async def load_records(self, kind: str) -> dict[str, dict[str, Any]]:
        """The hub's own durable records of one kind (webhooks), by id."""
        ...

    async def save_record(self, kind: str, record_id: str, record: dict[str, Any]) -> None:
        """Store (or replace) one record durably."""
        ...

    async def delete_record(self, kind: str, record_id: str) -> None: ...

    async def update_record(self, kind: str, record_id: str, change: RecordChange) -> None:
        """Read one record and write ``change(current)`` back (``None`` deletes) as one
        atomic step, even between hub nodes sharing the store (leases rely on it)."""
        ...


# Given the record as stored (None when absent), the record to store (None: absent).
RecordChange = Callable[[dict[str, Any] | None], dict[str, Any] | None]


@runtime_checkable
class SharedLog(Protocol):
    """A log several hub nodes write at once (the NATS store). Each node learns of new
    events, its own and the others', from the log itself, in seq order."""

    def on_advance(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` after new events were added at the end of the log."""
        ...

    def events_after(self, seq: int, limit: int) -> list[StoredEvent]:
        """The events after ``seq`` this node has, oldest first, without waiting."""
        ...

    async def last_seq(self) -> int:
        """The log's own head, as the log says now (this node may not have it yet)."""
        ...

    def pace_reads(self, pace: Callable[[], Awaitable[None]]) -> None:
        """Have reads of the past await ``pace`` between slices (the hub's pacing)."""
        ...

    async def load_snapshot(self) -> tuple[int, bytes] | None:
        """The latest task-summaries snapshot any node saved: ``(seq, data)``, the
        summaries folded from the log up to ``seq`` (None when none was saved)."""
        ...

    async def save_snapshot(self, seq: int, data: bytes) -> None:
        """Keep a task-summaries snapshot, unless a newer one is kept already."""
        ...
