"""A cluster node's own copy of the stream's recent past, on its disk, bounded in bytes.

Replays from JetStream run at the rate nats-py parses messages (~23,000 2-KB events/s
through a node, docs/cluster.md); the same events from a SQLite file reach the rate of
the single hub. So a node started with ``--nats-cache DIR`` keeps what it follows in a
SQLite file there, and serves reads the in-memory window no longer reaches from it,
falling back to JetStream only below what the file holds. The stream stays the log: the
file is disposable (another stream, or a file that cannot be read, and it starts
over), holds at most ``max_bytes`` of events (the oldest go first), and never what the
stream's own limits removed. Its memory is SQLite's page cache, whatever the log's
length.

The file covers a range of seqs, ``first`` to ``last``: every taskcast event of the
stream in that range is in it (seqs may skip: not every stream message is one). It
grows at ``last`` only (``add``), in the order the stream has; ``first`` moves up as
the oldest events go. One process writes a file: each takes the first free
``cache-N.db`` of the directory (a lock file), so the processes of ``--workers`` each
have their own.
"""

from __future__ import annotations

import fcntl
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from taskcast.files import ensure_private_dir, ensure_private_file
from taskcast.store.base import EventQuery, QueryPage, StoredEvent
from taskcast.store.sqlite import (
    CACHED_STATEMENTS,
    EVENT_COLUMNS,
    PAGE_SIZE,
    SqliteThreads,
    insert_events,
    read_page,
    transaction,
)

# The log's row without its dedupe (JetStream's), and its channel index (read_page).
_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS events ({EVENT_COLUMNS});
CREATE INDEX IF NOT EXISTS events_channel ON events(channel, seq);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value);
"""
# What an event costs the file beyond its body, roughly: the row's other columns, its
# channel index entry and page slack (measured: ~2,160 bytes on disk per 2-KB event).
ROW_OVERHEAD = 160
# Trimmed to this share of max_bytes when full: one trim per tenth of the budget.
TRIM_TO = 0.9
MAX_SLOTS = 64


class NodeCache:
    def __init__(self, directory: str | Path, max_bytes: int) -> None:
        if max_bytes <= 0:
            raise ValueError("the cache needs a size above 0 bytes")
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self.first = 1
        self.last = 0
        self.bytes = 0
        self._threads = SqliteThreads("taskcast-cache")
        self._conn: sqlite3.Connection | None = None
        self._lock_file: IO[bytes] | None = None

    @property
    def path(self) -> Path | None:
        """The file this process took (None until ``open``)."""
        return self._threads.path

    def covers(self, after: int) -> bool:
        """Whether the file holds the events right after ``after`` (and some)."""
        return self.first - 1 <= after < self.last

    def describe(self) -> dict[str, Any]:
        """What ``/healthz`` shows of it."""
        return {"path": str(self.path), "first": self.first, "last": self.last, "bytes": self.bytes}

    async def open(self, log_id: str, start: int) -> None:
        """Take a free slot in the directory and open its file for the stream
        ``log_id``. A file of another stream, or one that cannot be read, starts over,
        empty at ``start`` (where a new copy begins: the node fills it from there)."""
        await self._on_writer(self._open, log_id, start)

    def _open(self, log_id: str, start: int) -> None:
        try:
            ensure_private_dir(self.directory)
        except OSError as exc:  # say which flag it was: the hub exits with this
            raise OSError(f"--nats-cache {self.directory}: {exc.strerror or exc}") from exc
        for slot in range(MAX_SLOTS):
            lock = open(ensure_private_file(self.directory / f"cache-{slot}.lock"), "wb")  # noqa: SIM115
            try:
                fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                lock.close()
                continue
            self._lock_file = lock
            self._threads.path = self.directory / f"cache-{slot}.db"
            break
        else:
            raise OSError(f"{self.directory}: all {MAX_SLOTS} cache files are in use")
        try:
            meta = dict(self._connect().execute("SELECT key, value FROM meta").fetchall())
            span = _span_of(meta) if meta.get("log_id") == log_id else None
        except (sqlite3.Error, KeyError, ValueError):  # not a cache (any more): a copy
            span = None
        if span is None:
            self._start_over(log_id, start)
        else:
            self._take(span)

    def _connect(self) -> sqlite3.Connection:
        assert self.path is not None
        ensure_private_file(self.path)
        conn = sqlite3.connect(
            self.path,
            isolation_level=None,
            check_same_thread=False,
            cached_statements=CACHED_STATEMENTS,
        )
        self._conn = conn  # closed by _start_over or close, even if what follows fails
        conn.execute(f"PRAGMA page_size={PAGE_SIZE}")
        conn.execute("PRAGMA journal_mode=WAL")
        # A copy: a commit lost with the machine's power is read from JetStream again.
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.executescript(_SCHEMA)
        return conn

    def _start_over(self, log_id: str, start: int) -> None:
        assert self.path is not None
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        for suffix in ("", "-wal", "-shm"):
            Path(f"{self.path}{suffix}").unlink(missing_ok=True)
        conn = self._connect()
        span = _Span(start, start - 1, 0)
        with transaction(conn):
            conn.execute("INSERT INTO meta VALUES ('log_id', ?)", (log_id,))
            _save_span(conn, span)
        self._take(span)

    def _take(self, span: _Span) -> None:
        """What a committed transaction made the file cover (never before the commit:
        a read that trusts ``covers`` must find it all)."""
        self.first, self.last, self.bytes = span.first, span.last, span.bytes

    async def add(self, events: list[StoredEvent], through: int) -> None:
        """The stream's events after ``last`` up to ``through`` (those of them that are
        taskcast events), in seq order; the oldest go if the file is over its budget."""
        if through <= self.last:
            return
        await self._on_writer(self._add, events, through)

    def _add(self, events: list[StoredEvent], through: int) -> None:
        conn = self._conn
        assert conn is not None
        rows = [
            (e.seq, e.id, e.channel, e.type, e.task_id, e.source, e.ts, e.body, e.publisher)
            for e in events
            if e.seq > self.last
        ]
        added = sum(len(row[7]) for row in rows) + ROW_OVERHEAD * len(rows)
        span = _Span(self.first, through, self.bytes + added)
        with transaction(conn):
            insert_events(conn, rows)
            if span.bytes > self.max_bytes:
                _trim_to(conn, span, int(self.max_bytes * TRIM_TO))
            _save_span(conn, span)
        self._take(span)

    async def drop_before(self, oldest: int) -> None:
        """The stream's limits removed everything below ``oldest``: so does the file."""
        if oldest > self.first:
            await self._on_writer(self._drop_before, oldest)

    def _drop_before(self, oldest: int) -> None:
        conn = self._conn
        assert conn is not None
        span = _Span(self.first, self.last, self.bytes)
        with transaction(conn):
            _remove_through(conn, span, oldest - 1)
            _save_span(conn, span)
        self._take(span)

    async def query(self, query: EventQuery) -> QueryPage | None:
        """``query`` answered from the file, up to ``last`` at most; None when the file
        no longer holds the events right after ``query.after`` (a trim came between
        ``covers`` and the read: the caller reads them elsewhere)."""
        page: QueryPage | None = await self._threads.read(self._query, query)
        return page

    def _query(self, query: EventQuery) -> QueryPage | None:
        conn = self._threads.reader_conn()
        with transaction(conn, "BEGIN"):  # the range and the events: one snapshot
            span = _span_of(dict(conn.execute("SELECT key, value FROM meta").fetchall()))
            if not span.first - 1 <= query.after < span.last:
                return None
            upto = span.last if query.until is None else min(query.until, span.last)
            return read_page(conn, query, upto)

    async def close(self) -> None:
        if self._conn is not None:
            await self._on_writer(self._conn.close)
            self._conn = None
        await self._threads.close()
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None

    async def _on_writer(self, fn: Any, *args: Any) -> Any:
        return await self._threads.write(fn, *args)


@dataclass(slots=True)
class _Span:
    """What the file covers, as a transaction changes it."""

    first: int
    last: int
    bytes: int


def _span_of(meta: dict[str, Any]) -> _Span:
    return _Span(int(meta["first"]), int(meta["last"]), int(meta["bytes"]))


def _save_span(conn: sqlite3.Connection, span: _Span) -> None:
    conn.executemany(
        "INSERT OR REPLACE INTO meta VALUES (?, ?)",
        [("first", span.first), ("last", span.last), ("bytes", span.bytes)],
    )


def _trim_to(conn: sqlite3.Connection, span: _Span, budget: int) -> None:
    """Remove the oldest events until the rest fit in ``budget`` bytes."""
    excess, cut = span.bytes - budget, span.first - 1
    sizes = conn.execute(
        "SELECT seq, length(body) FROM events WHERE seq >= ? ORDER BY seq", (span.first,)
    )
    for seq, size in sizes:
        if excess <= 0:
            break
        excess -= size + ROW_OVERHEAD
        cut = seq
    sizes.close()
    _remove_through(conn, span, cut)


def _remove_through(conn: sqlite3.Connection, span: _Span, cut: int) -> None:
    """Remove every event up to ``cut``: the span then starts after it."""
    if cut < span.first:
        return
    freed, count = conn.execute(
        "SELECT COALESCE(SUM(length(body)), 0), COUNT(*) FROM events WHERE seq <= ?", (cut,)
    ).fetchone()
    conn.execute("DELETE FROM events WHERE seq <= ?", (cut,))
    span.bytes = max(0, span.bytes - freed - ROW_OVERHEAD * count)
    span.first = cut + 1
    span.last = max(span.last, cut)


def default_start(
    first_seq: int, last_seq: int, stream_bytes: int, messages: int, budget: int
) -> int:
    """Where a new copy of the stream begins: as far back as ``budget`` bytes reach
    (from the stream's mean message size), never before its first seq."""
    mean = stream_bytes / messages if messages else 0
    fits = int(budget * TRIM_TO / (mean + ROW_OVERHEAD)) if mean else last_seq
    return max(first_seq, last_seq + 1 - fits, 1)
