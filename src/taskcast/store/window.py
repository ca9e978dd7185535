"""The recent end of a shared log, kept in memory by each cluster node (pure: no I/O).

A node follows the stream from where it stood when the node started; the window keeps
what came in since, up to a count and a byte budget, so fan-out and a subscriber that
resumes a little behind are served from memory — and a node's memory does not grow with
the log. Anything older is read from JetStream itself (``store/nats_reads.py``).
"""

from __future__ import annotations

import bisect
import itertools
from collections import deque

from taskcast.store.base import EventQuery, QueryPage, StoredEvent, select_page

DEFAULT_WINDOW_EVENTS = 20_000
DEFAULT_WINDOW_BYTES = 32 * 1024 * 1024


class RecentWindow:
    """Events in seq order after ``base``: every event of the log with ``base < seq <=
    head`` that is a taskcast event is here (seqs may skip: not every stream message is
    one). Evicting the oldest moves ``base`` up past it."""

    def __init__(
        self, max_events: int = DEFAULT_WINDOW_EVENTS, max_bytes: int = DEFAULT_WINDOW_BYTES
    ) -> None:
        self.max_events = max_events
        self.max_bytes = max_bytes
        self.base = 0
        self.head = 0
        self.bytes = 0
        self._events: deque[StoredEvent] = deque()
        self._seqs: deque[int] = deque()

    def __len__(self) -> int:
        return len(self._events)

    def start_at(self, head: int) -> None:
        """An empty window at the log's head (a node that starts)."""
        self._events.clear()
        self._seqs.clear()
        self.bytes = 0
        self.base = self.head = head

    def add(self, event: StoredEvent) -> None:
        """The next event (its seq above ``head``); the oldest go past the budget."""
        self._events.append(event)
        self._seqs.append(event.seq)
        self.bytes += _size(event)
        self.head = event.seq
        while self._events and (len(self._events) > self.max_events or self.bytes > self.max_bytes):
            gone = self._events.popleft()
            self._seqs.popleft()
            self.bytes -= _size(gone)
            self.base = gone.seq

    def skip_to(self, head: int) -> None:
        """The log went on to ``head`` with nothing here to keep (not taskcast events)."""
        self.head = max(self.head, head)

    def covers(self, after: int) -> bool:
        """Whether every event after ``after`` (up to ``head``) is in the window."""
        return after >= self.base

    def events_after(self, seq: int, limit: int) -> list[StoredEvent]:
        start = bisect.bisect_right(self._seqs, seq)
        stop = min(len(self._events), start + limit)
        return [self._events[index] for index in range(start, stop)]

    def query(self, query: EventQuery) -> QueryPage:
        """``query`` answered from the window (only when it ``covers(query.after)``)."""
        upto = self.head if query.until is None else min(query.until, self.head)
        start = bisect.bisect_right(self._seqs, query.after)
        return select_page(itertools.islice(self._events, start, None), query, upto)

    def drop_before(self, oldest: int) -> None:
        """The stream's limits removed everything below ``oldest``."""
        while self._events and self._events[0].seq < oldest:
            gone = self._events.popleft()
            self._seqs.popleft()
            self.bytes -= _size(gone)
        self.base = max(self.base, oldest - 1)


def _size(event: StoredEvent) -> int:
    """What one event costs the window, roughly: its body and a fixed overhead."""
    return len(event.body) + 200
