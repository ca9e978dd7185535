"""An in-process log: fast, and gone when the hub stops (tests, throwaway hubs)."""

from __future__ import annotations

import bisect
from typing import Any

from taskcast.frames import Publish
from taskcast.ids import random_id
from taskcast.store.base import (
    AppendResult,
    EventQuery,
    QueryPage,
    RecordChange,
    Retention,
    StoredEvent,
    select_page,
    stored_row,
)


class MemoryStore:
    def __init__(self, retention: Retention = Retention()) -> None:
        self._retention = retention
        self._events: list[StoredEvent] = []
        self._seqs: list[int] = []
        self._ids: dict[tuple[str, str], int] = {}
        self._head = 0
        self._records: dict[str, dict[str, dict[str, Any]]] = {}
        self._log_id = f"memory-{random_id()}"  # a new log every time: gone when it stops

    @property
    def head(self) -> int:
        return self._head

    @property
    def oldest(self) -> int:
        return self._seqs[0] if self._seqs else self._head + 1

    @property
    def description(self) -> str:
        return "memory"

    @property
    def log_id(self) -> str:
        return self._log_id

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def append(self, events: list[Publish], now_ms: int) -> list[AppendResult]:
        results: list[AppendResult] = []
        for event in events:
            key = (event.publisher, event.id)
            known = self._ids.get(key)
            if known is not None:
                results.append(AppendResult(known, True))
                continue
            self._head += 1
            seq = self._head
            self._ids[key] = seq
            self._seqs.append(seq)
            self._events.append(StoredEvent(*stored_row(seq, event, now_ms)))
            results.append(AppendResult(seq, False))
        return results

    def add_stored(self, events: list[StoredEvent]) -> None:
        """Add events numbered elsewhere (a replica of a shared log); each seq must be
        above ``head``. Ids are not checked: the log that numbered them did."""
        for event in events:
            self._seqs.append(event.seq)
            self._events.append(event)
            self._head = event.seq

    def skip_to(self, head: int) -> None:
        """The log's numbering is at ``head`` though nothing up to it is kept here."""
        self._head = max(self._head, head)

    def events_after(self, seq: int, limit: int) -> list[StoredEvent]:
        start = bisect.bisect_right(self._seqs, seq)
        return self._events[start : start + limit]

    async def query(self, query: EventQuery) -> QueryPage:
        upto = self._head if query.until is None else min(query.until, self._head)
        start = bisect.bisect_right(self._seqs, query.after)
        events = self._events
        return select_page((events[i] for i in range(start, len(events))), query, upto)

    async def trim(self, now_ms: int) -> int:
        drop = 0
        if self._retention.max_events is not None:
            drop = max(drop, len(self._events) - self._retention.max_events)
        if self._retention.max_age_seconds is not None:
            cutoff = now_ms - int(self._retention.max_age_seconds * 1000)
            while drop < len(self._events) and self._events[drop].ts < cutoff:
                drop += 1
        if drop:
            for event in self._events[:drop]:
                self._ids.pop((event.publisher, event.id), None)
            del self._events[:drop]
            del self._seqs[:drop]
        return drop

    async def count_by_time(
        self, since_ms: int, until_ms: int, bucket_ms: int
    ) -> list[tuple[int, str, str, int]]:
        counts: dict[tuple[int, str, str], int] = {}
        for event in self._events:
            if since_ms <= event.ts < until_ms:
                key = (event.ts // bucket_ms * bucket_ms, event.type, event.channel)
                counts[key] = counts.get(key, 0) + 1
        return [(*key, count) for key, count in counts.items()]

    async def load_records(self, kind: str) -> dict[str, dict[str, Any]]:
        return dict(self._records.get(kind, {}))

    async def save_record(self, kind: str, record_id: str, record: dict[str, Any]) -> None:
        self._records.setdefault(kind, {})[record_id] = dict(record)

    async def delete_record(self, kind: str, record_id: str) -> None:
        self._records.get(kind, {}).pop(record_id, None)

    async def update_record(self, kind: str, record_id: str, change: RecordChange) -> None:
        records = self._records.setdefault(kind, {})
        current = records.get(record_id)
        updated = change(dict(current) if current is not None else None)
        if updated is None:
            records.pop(record_id, None)
        else:
            records[record_id] = dict(updated)
