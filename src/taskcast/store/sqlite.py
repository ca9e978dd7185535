"""The embedded default: an ordered log in one SQLite file (WAL, group commit).

A commit is one write to the log's journal (``store/journal.py``), then the ack; one
writer thread owns the write connection and folds what the journal took into SQLite in
bulk, off the ack path, so neither SQLite's commits nor its checkpoints hold an ack.
Readers use their own connections (WAL lets them read while the writer writes), and a
read past what SQLite holds first waits for the fold. A lock file keeps a second hub off
the same log, since seqs are assigned by the one writer. The log, its WAL, its journal
and the lock are private to the hub's user (0600, directory 0700): they hold every
prompt and tool output.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import sqlite3
import stat
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO, Any

from taskcast.channels import is_literal, literal_prefix, prefix_is_exact, task_channel
from taskcast.files import ensure_private_dir, ensure_private_file
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
from taskcast.store.journal import Journal, frame_rows
from taskcast.store.seen_ids import SeenIds
from taskcast.store.serial_thread import SerialThread

log = logging.getLogger(__name__)

SCHEMA_VERSION = 3
# v2: ids are unique per publisher (the authenticated sub), not across the whole log,
# so nobody can take another principal's future id or probe whether it exists.
# v3: no index of its own for task_id. A task's events are those of its channel
# ``tasks.<id>`` and the channels under it (``task_of_channel``), so the channel index
# finds them (``_task_query``). That index cost each commit of events from many agents a
# leaf page per event: writer CPU per 300-byte event from 1,000 agents 73 → 52 µs, WAL
# 7.2 → 5.5 KB (issue 30).
# An event's row, in the log and in a cluster node's copy of the stream (node_cache.py).
EVENT_COLUMNS = """
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL,
    channel TEXT NOT NULL,
    type TEXT NOT NULL,
    task_id TEXT,
    source TEXT,
    ts INTEGER NOT NULL,
    body BLOB NOT NULL,
    publisher TEXT NOT NULL DEFAULT 'anonymous'"""
_EVENTS = (
    "CREATE TABLE IF NOT EXISTS {name} ("
    + EVENT_COLUMNS
    + """,
    UNIQUE (id, publisher)  -- id first: the resend lookup is by id (WHERE id IN …)
);
"""
)
_SCHEMA = (
    _EVENTS.format(name="events")
    + """
CREATE INDEX IF NOT EXISTS events_channel ON events(channel, seq);
CREATE INDEX IF NOT EXISTS events_ts ON events(ts);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS records (
    kind TEXT NOT NULL, id TEXT NOT NULL, body BLOB NOT NULL, PRIMARY KEY (kind, id)
);
CREATE TABLE IF NOT EXISTS identity (log_id TEXT NOT NULL);
"""
)
_V1_COLUMNS = "seq, id, channel, type, task_id, source, ts, body"

_COLUMNS = "seq, id, channel, type, task_id, source, ts, body, publisher"
# Rows per INSERT statement, at most. ``executemany`` steps its statement once per row,
# and the sqlite3 module lets go of the GIL around every step: each step is a GIL
# handoff between the writer thread and the busy event loop (futex waits were ~25% of
# the writer thread's CPU: perf, 1,000 publishers). A statement of many rows is one step.
# Statements of each size up to this are prepared once and stay cached, so a commit of
# a few events is one statement: its own transaction, one step (``commit_events``).
ROWS_PER_INSERT = 64
_ROW = "(?, ?, ?, ?, ?, ?, ?, ?, ?)"


def _insert_sql(rows: int) -> str:
    return f"INSERT INTO events({_COLUMNS}) VALUES " + ", ".join([_ROW] * rows)


_INSERT_ROWS = {size: _insert_sql(size) for size in range(1, ROWS_PER_INSERT + 1)}
# Each connection that inserts keeps a statement for every size, and a few of its own.
CACHED_STATEMENTS = ROWS_PER_INSERT + 64


def insert_events(conn: sqlite3.Connection, rows: list[tuple[Any, ...]]) -> None:
    """Insert rows (``stored_row`` order) into an ``events`` table — the log's, or a
    cluster node's copy of the stream — up to ``ROWS_PER_INSERT`` to a statement."""
    for start in range(0, len(rows), ROWS_PER_INSERT):
        chunk = rows[start : start + ROWS_PER_INSERT]
        conn.execute(_INSERT_ROWS[len(chunk)], [value for row in chunk for value in row])


def commit_events(conn: sqlite3.Connection, rows: list[tuple[Any, ...]]) -> None:
    """Insert and commit rows: rows that fit one statement are that statement alone, its
    own transaction (one step, so one GIL handoff, where BEGIN, the insert and COMMIT
    were three); more go in one transaction."""
    if len(rows) <= ROWS_PER_INSERT:
        insert_events(conn, rows)  # one statement (or none)
    else:
        with transaction(conn):
            insert_events(conn, rows)


# How long the journal's events wait for the fold into SQLite, at most. A fold of more
# events costs SQLite less per event: a leaf page of the channel index is written once
# for all of a fold's events of that channel (1,000 agents: WAL per event 2.4 KB in folds
# of 500, 1.0 KB in folds of 10,000). 1,000 publishers x 10 events/s through the hub:
# folds every 50 ms 0.74-0.75 cores, every 1 s (with the writer's cache below) 0.64-0.65
# (docs/scale.md). A read never waits for the timer: it folds at once what it needs.
FOLD_SECONDS = 1.0
# Fold at once past this many events; past MAX_UNFOLDED (SQLite failing, say) a commit
# waits for the fold, so the hub's memory stays bounded.
FOLD_EVENTS = 20_000
MAX_UNFOLDED = 100_000
SEEN_RETRY_SECONDS = 60  # a failed build of the ids' filter, tried again after
WRITER_CACHE_KIB = 32 * 1024
# How long a connection off the event loop waits for another process's lock.
BUSY_TIMEOUT_MS = 5000
CHECKPOINT_SECONDS = 1.0
# The WAL starts over from its beginning only when a commit finds it wholly copied into
# the database. The checkpoint thread races the writer and, under a steady load, never
# gets there on its own: the WAL grew to 790 MB in 45 s of bench/soak.py, its index
# (-shm, mapped into the hub) with it. Past this size the writer finishes the copy
# itself after a commit — only what the thread has not copied yet. That step holds the
# commits behind it for two device flushes (WAL, then database: 10 to 20 ms on this VM's
# disk), so it must be rare: at 64 MB, 1,000 agents at 10 events/s (16.8 KB of WAL per
# event) reached it on every checkpoint pass, once a second — the periodic ack stall of
# issue 30. At 256 MB and 1 KiB pages it comes about every 4 s at that load.
WAL_LIMIT_BYTES = 256 * 1024 * 1024
# SQLite cuts the WAL file back to its size limit when it starts over, a truncate of its
# own (6 to 9 ms, perf trace) inside that step. The file stays near the limit between
# restarts, so cut it back only if it ever grew to twice that.
_WAL_FILE_LIMIT_FACTOR = 2
_WAL_FRAME_HEADER = 24  # bytes before each page in the WAL
# A commit of a few events from many agents touches one leaf page per event in each
# index keyed by channel, task or (random) event id, and the WAL takes each whole page:
# with 4 KiB pages 16.8 KB of WAL per 300-byte event, with 1 KiB pages 7.0 KB (and
# commits 0.39 → 0.28 ms; replays of 300-byte events 22% slower, of 2 KB events no
# slower). New logs only: a log keeps the page size it was made with.
PAGE_SIZE = 1024


def read_only_connection(path: Path, busy_timeout_ms: int) -> sqlite3.Connection:
    """A connection that only reads ``path`` (autocommit: a snapshot needs a BEGIN)."""
    conn = sqlite3.connect(
        f"{path.resolve().as_uri()}?mode=ro",
        uri=True,
        isolation_level=None,
        check_same_thread=False,
    )
    conn.execute(f"PRAGMA busy_timeout={busy_timeout_ms}")
    return conn


@contextlib.contextmanager
def transaction(conn: sqlite3.Connection, begin: str = "BEGIN IMMEDIATE") -> Iterator[None]:
    """One transaction on an autocommit connection: committed when the block ends,
    rolled back if it (or the commit) fails. ``BEGIN`` for a reader's snapshot."""
    conn.execute(begin)
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        # SQLite may have rolled back already (a full disk, say): the error to report
        # is what failed, not "cannot rollback - no transaction is active".
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


class SqliteThreads:
    """One writer thread and two reader threads over one SQLite file, each reader with a
    read-only connection of its own (WAL: reads never wait for the writer): the log's
    I/O, and a cluster node's copy of the stream (``node_cache.py``)."""

    def __init__(self, name: str, path: Path | None = None) -> None:
        self.path = path  # None until the file is chosen
        self._writer = SerialThread(f"{name}-w")
        self._readers = ThreadPoolExecutor(2, thread_name_prefix=f"{name}-r")
        self._local = threading.local()
        self._conns: list[sqlite3.Connection] = []
        self._conns_lock = threading.Lock()

    async def write(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await self.write_soon(fn, *args)

    def write_soon(self, fn: Callable[..., Any], *args: Any) -> asyncio.Future[Any]:
        """Queue ``fn`` on the writer thread; a future of its outcome."""
        return self._writer.call(fn, *args)

    async def read(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._readers, fn, *args)

    def reader_conn(self) -> sqlite3.Connection:
        """This reader thread's connection (autocommit: a snapshot needs a BEGIN)."""
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            assert self.path is not None, "no file chosen yet"
            conn = read_only_connection(self.path, BUSY_TIMEOUT_MS)
            self._local.conn = conn
            with self._conns_lock:
                self._conns.append(conn)
        return conn

    async def close(self) -> None:
        """Once what was queued has run (off the event loop: a long read must not hold
        it), close the readers' connections."""
        loop = asyncio.get_running_loop()
        await self._writer.shutdown()
        await loop.run_in_executor(None, self._readers.shutdown, True)
        with self._conns_lock:
            for conn in self._conns:
                conn.close()
            self._conns.clear()


class StoreLocked(RuntimeError):
    """Another hub process already owns this log file."""


class NotALog(RuntimeError):
    """The file at the log's path is not an SQLite database (or is damaged)."""


SQLITE_HEADER = b"SQLite format 3\x00"


def log_file_refusal(path: Path) -> str | None:
    """Why the file at ``path`` must not be opened as the log; None when it is absent,
    empty, or a log. Checked before anything touches it: opening makes the file 0600
    and puts a lock file beside it (``--store sqlite:/dev/null`` made /dev/null 0600)."""
    try:
        info = path.stat()
    except (FileNotFoundError, NotADirectoryError):  # the directory's check says which
        return None
    if not stat.S_ISREG(info.st_mode):
        return f"{path} is not a regular file"
    if info.st_size == 0:
        return None
    with open(path, "rb") as file:
        if file.read(len(SQLITE_HEADER)) != SQLITE_HEADER:
            return f"{path} is not a taskcast log: not an SQLite database"
    # immutable: read the file as it is, making no -wal or -shm beside it. What only a
    # WAL holds goes unseen, which can only make the check pass (a log's schema is
    # written before its first checkpoint, whole).
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro&immutable=1", uri=True)
        try:
            rows = conn.execute("SELECT name FROM sqlite_master WHERE type='table'").fetchall()
            columns = {row[1] for row in conn.execute("PRAGMA table_info(events)")}
        finally:
            conn.close()
    except sqlite3.Error:
        return None  # damaged, say: opening it says what is wrong
    tables = sorted(name for (name,) in rows)
    if tables and not {"seq", "channel", "body"} <= columns:
        shown = ", ".join(tables[:3]) + (", …" if len(tables) > 3 else "")
        return f"{path} is not a taskcast log: an SQLite database of other tables ({shown})"
    return None


class SqliteStore:
    def __init__(
        self,
        path: str | os.PathLike[str],
        retention: Retention = Retention(),
        *,
        fsync: bool = False,
        checkpoint_seconds: float = CHECKPOINT_SECONDS,
        wal_limit_bytes: int = WAL_LIMIT_BYTES,
    ) -> None:
        self.path = Path(path)
        self._retention = retention
        self._fsync = fsync
        self._checkpoint_seconds = checkpoint_seconds
        self._wal_limit_bytes = wal_limit_bytes
        self._wal_limit_frames = 0  # set from the page size when the log opens
        self._wal_frames = 0  # as the checkpoint thread last saw it
        self._threads = SqliteThreads("taskcast-sqlite", self.path)
        self._write_conn: sqlite3.Connection | None = None
        self._lookup_conn: sqlite3.Connection | None = None  # resend lookups (``append``)
        self._journal = Journal(self.path, fsync=fsync)
        self._sync_thread = SerialThread("taskcast-journal-sync") if fsync else None
        # Committed to the journal, not yet in SQLite: rows in seq order and their ids.
        self._unfolded: list[tuple[Any, ...]] = []
        self._unfolded_ids: dict[tuple[str, str], int] = {}
        self._stored = 0  # the newest seq SQLite holds (set on the loop)
        self._stored_on_writer = 0  # the same, as the writer thread knows it
        self._fold_handle: asyncio.TimerHandle | None = None
        # The fold running, settled once its outcome is booked (``_folded``): a future
        # of the loop's own, so nobody sees a fold done before ``_stored`` has moved.
        self._folding: asyncio.Future[None] | None = None
        self._closing = False
        self._fold_failures = 0
        self._one_append = asyncio.Lock()
        # Rules out most ids before the resend lookup: None until built from the log
        # (in the background once it opens); the ids appended while one is built.
        self._seen: SeenIds | None = None
        self._seen_since: list[tuple[str, str]] | None = None
        self._seen_retry_at = 0.0  # after a build failed: not before (monotonic)
        self._lock_file: IO[bytes] | None = None
        self._held_log: IO[bytes] | None = None
        self._head = 0
        self._oldest = 1
        self._log_id = ""
        self._stopping = threading.Event()
        self._checkpointer: threading.Thread | None = None

    @property
    def head(self) -> int:
        return self._head

    @property
    def oldest(self) -> int:
        return self._oldest

    @property
    def description(self) -> str:
        return f"sqlite:{self.path}"

    @property
    def log_id(self) -> str:
        return self._log_id

    async def open(self) -> None:
        await self._on_writer(self._take_lock)
        try:
            await self._on_writer(self._open_writer)
        except sqlite3.DatabaseError as exc:
            self._let_go()
            await self._threads.close()
            code = exc.sqlite_errorcode & 0xFF
            if code in (sqlite3.SQLITE_NOTADB, sqlite3.SQLITE_CORRUPT):
                raise NotALog(f"{self.path} is not a taskcast log: {exc}") from exc
            if code == sqlite3.SQLITE_BUSY:  # held past the busy timeout
                raise StoreLocked(f"{self.path} is held by another process: {exc}") from exc
            raise  # a permission, a disk: SQLite's own words
        self._build_seen()

    def _take_lock(self) -> None:
        problem = log_file_refusal(self.path)
        if problem is not None:
            raise NotALog(problem)
        ensure_private_dir(self.path.parent)
        lock_path = Path(f"{self.path}.lock")
        try:
            lock = open(ensure_private_file(lock_path), "wb")  # noqa: SIM115
        except OSError as exc:  # the bare error named only the lock file
            raise OSError(
                f"cannot use {self.path}: no lock file {lock_path} ({exc.strerror})"
            ) from exc
        try:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            # The log file itself too: with its lock file deleted, a second hub would
            # share the journal and ack seqs the first had given (a user check). BSD
            # locks do not touch SQLite's POSIX ones; this descriptor closes last.
            held = open(ensure_private_file(self.path), "rb")  # noqa: SIM115
            try:
                fcntl.flock(held.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BaseException:
                held.close()
                raise
        except BlockingIOError:
            lock.close()
            raise StoreLocked(f"{self.path} is in use by another taskcast hub") from None
        self._lock_file = lock
        self._held_log = held

    def _open_writer(self) -> None:
        # SQLite gives the -wal and -shm files the main file's mode: make that 0600 first.
        ensure_private_file(self.path)
        for suffix in ("-wal", "-shm"):
            sidecar = Path(f"{self.path}{suffix}")
            if sidecar.exists():
                sidecar.chmod(0o600)
        conn = self._connect_writer(BUSY_TIMEOUT_MS)
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        self._wal_limit_frames = max(1, self._wal_limit_bytes // (page_size + _WAL_FRAME_HEADER))
        _migrate(conn)
        conn.executescript(_SCHEMA)
        conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        row = conn.execute("SELECT value FROM meta WHERE key='head'").fetchone()
        stored_max = conn.execute("SELECT MAX(seq) FROM events").fetchone()[0] or 0
        self._head = max(row[0] if row else 0, stored_max)
        self._write_conn = conn
        self._log_id = _log_identity(conn)
        # What the journal took that SQLite lacks (the hub died before the fold) goes in
        # first; then the journal starts afresh.
        missing = [row for row in self._journal.recover(self._log_id) if row[0] > self._head]
        if missing:
            self._fold_rows(missing)
            log.info("%s: %d events taken back from the journal", self.path, len(missing))
            self._head = missing[-1][0]
        self._journal.start(self._head + 1, self._log_id)
        self._stored = self._stored_on_writer = self._head
        self._oldest = conn.execute("SELECT MIN(seq) FROM events").fetchone()[0] or self._head + 1
        self._lookup_conn = read_only_connection(self.path, 0)  # never waits in the loop
        self._checkpointer = threading.Thread(
            target=self._checkpoint_loop, name="taskcast-sqlite-ckpt", daemon=True
        )
        self._checkpointer.start()

    def _connect_writer(self, busy_timeout_ms: int) -> sqlite3.Connection:
        """The writer thread's connection: it waits up to ``busy_timeout_ms`` for
        another process's write lock."""
        conn = sqlite3.connect(
            self.path,
            isolation_level=None,
            check_same_thread=False,
            cached_statements=CACHED_STATEMENTS,
        )
        try:
            conn.execute(f"PRAGMA page_size={PAGE_SIZE}")  # a new, empty file only
            conn.execute("PRAGMA journal_mode=WAL")
            # NORMAL in WAL mode: a commit survives a crash of the process (kill -9);
            # FULL (--fsync) also survives power loss, at the cost of an fsync per batch.
            conn.execute(f"PRAGMA synchronous={'FULL' if self._fsync else 'NORMAL'}")
            conn.execute(f"PRAGMA busy_timeout={busy_timeout_ms}")
            # Checkpoints move the WAL into the database file; done inside a commit
            # (SQLite's default, every 1,000 pages) they stall that commit and every
            # event waiting on it. A thread of its own does them (``_checkpoint_loop``).
            conn.execute("PRAGMA wal_autocheckpoint=0")
            # A fold's pages stay in the cache to its commit (SQLite's default, 2 MiB,
            # spills them midway): fold CPU per event 21 -> 15 us at 5,000-10,000 a fold.
            conn.execute(f"PRAGMA cache_size=-{WRITER_CACHE_KIB}")
            limit = self._wal_limit_bytes * _WAL_FILE_LIMIT_FACTOR
            conn.execute(f"PRAGMA journal_size_limit={limit}")
        except BaseException:
            conn.close()
            raise
        return conn

    def _checkpoint_loop(self) -> None:
        """PASSIVE checkpoints every ``checkpoint_seconds`` on a connection of their own:
        they never wait for the writer, and the writer never waits for them. Each notes
        how big the WAL is for the writer (``_finish_wal_copy``)."""
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            while not self._stopping.wait(self._checkpoint_seconds):
                with contextlib.suppress(sqlite3.Error):
                    _, frames, _ = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                    self._wal_frames = frames
        finally:
            conn.close()

    @property
    def _wal_copy_due(self) -> bool:
        """The WAL passed its limit at the checkpoint thread's last pass."""
        return self._wal_frames >= self._wal_limit_frames

    def _finish_wal_copy(self, conn: sqlite3.Connection) -> None:
        """On the writer, after a commit, once the WAL has passed its limit: copy what
        the checkpoint thread has not (no commit can come in between), so the next
        commit starts the WAL over. Once per checkpoint pass, right after it: should a
        reader still need old frames, the thread's next pass brings the next try."""
        if not self._wal_copy_due:
            return
        self._wal_frames = 0
        with contextlib.suppress(sqlite3.Error):  # the commit stands
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)")

    async def close(self) -> None:
        self._closing = True  # no fold timer from here on: the fold below is the last
        if self._sync_thread is not None:
            await self._sync_thread.shutdown()  # the journal writes queued go in first
        if self._write_conn is not None:
            with contextlib.suppress(Exception):  # what stays unfolded is in the journal
                await self._fold_upto(self._head)
        if self._fold_handle is not None:
            self._fold_handle.cancel()
            self._fold_handle = None
        self._journal.close(
            held_elsewhere=self._write_conn is not None and self._stored >= self._head
        )
        self._stopping.set()
        if self._checkpointer is not None:
            await asyncio.get_running_loop().run_in_executor(None, self._checkpointer.join)
        if self._lookup_conn is not None:
            self._lookup_conn.close()
            self._lookup_conn = None
        if self._write_conn is not None:
            await self._on_writer(self._write_conn.close)
            self._write_conn = None
        await self._threads.close()
        self._let_go()

    def _let_go(self) -> None:
        """Give the log up to another hub: its file's lock and its lock file's."""
        for held in (self._held_log, self._lock_file):
            if held is not None:
                held.close()
        self._held_log = self._lock_file = None

    async def append(self, events: list[Publish], now_ms: int) -> list[AppendResult]:
        """Number the batch, write it to the journal, and answer: the fold into SQLite
        comes later, off the ack path. Resends are found here, before anything is
        written: among what is not folded yet, then in SQLite's unique (id, publisher)
        index, one lookup per batch. A hub-made id its publisher had chosen before (a
        collision) fails that one event, never its batch. One batch at a time: with
        ``--fsync`` the next is numbered only once this one's flush is done."""
        async with self._one_append:
            return await self._append(events, now_ms)

    async def _append(self, events: list[Publish], now_ms: int) -> list[AppendResult]:
        if len(self._unfolded) >= MAX_UNFOLDED:
            await self._fold_upto(self._unfolded[-1][0])
        assert self._lookup_conn is not None, "store is not open"
        head = self._head
        seen = self._seen  # its bits set for the batch as it rules ids out: one hash each
        asked = [e.id for e in events if seen is None or seen.add((e.publisher, e.id))]
        known = self._known_ids(self._lookup_conn, asked) if asked else {}
        rows: list[tuple[Any, ...]] = []
        results: list[AppendResult] = []
        batch_ids: dict[tuple[str, str], int] = {}
        for event in events:
            key = (event.publisher, event.id)
            first = batch_ids.get(key) or self._unfolded_ids.get(key) or known.get(key)
            if first is not None:
                if event.client_id:
                    results.append(AppendResult(first, True))
                else:
                    results.append(AppendResult(0, False, "id already used by this publisher"))
                continue
            head += 1
            batch_ids[key] = head
            rows.append(stored_row(head, event, now_ms))
            results.append(AppendResult(head, False))
        if not rows:
            return results
        data = frame_rows(rows)
        if self._sync_thread is not None:
            await self._sync_thread.call(self._journal.write, data, head)
            if self._seen is not seen and self._seen is not None:
                self._seen.update(batch_ids)  # a build ended during the flush: not in it
        else:
            self._journal.write(data, head)
        if self._oldest > self._head:  # the log was empty
            self._oldest = self._head + 1
        self._head = head
        self._unfolded.extend(rows)
        self._unfolded_ids.update(batch_ids)
        self._note_seen(batch_ids)
        self._schedule_fold()
        return results

    def _note_seen(self, keys: dict[tuple[str, str], int]) -> None:
        building = self._seen_since is not None
        wanted = self._seen is None or self._seen.full  # a build failed, or outgrown
        if not building and wanted and time.monotonic() >= self._seen_retry_at:
            self._build_seen()
        if self._seen_since is not None:
            self._seen_since.extend(keys)

    def _build_seen(self) -> None:
        """Build the filter of the log's ids on a reader thread (the resend lookup asks
        SQLite for every id meanwhile), then add what was appended since it began."""
        self._seen_since = list(self._unfolded_ids)  # not in SQLite's snapshot, maybe
        capacity = 2 * (self._head - self._oldest + 1)
        building = asyncio.ensure_future(self._threads.read(self._seen_in_sqlite, capacity))
        building.add_done_callback(self._seen_built)

    def _seen_in_sqlite(self, capacity: int) -> SeenIds:
        """In pages by seq, each its own read: one long read would hold its snapshot,
        and the WAL could not start over, for as long as a big log takes to scan. What
        a fold adds meanwhile comes after the cursor (or is in ``_seen_since``)."""
        seen = SeenIds(capacity)
        conn, after = self._reader_conn(), 0
        page = "SELECT seq, publisher, id FROM events WHERE seq > ? ORDER BY seq LIMIT 10000"
        while rows := conn.execute(page, (after,)).fetchall():
            if self._closing:  # a big log's scan must not hold the close up
                raise RuntimeError("the log is closing")
            seen.update((publisher, event_id) for _, publisher, event_id in rows)
            after = rows[-1][0]
        return seen

    def _seen_built(self, done: asyncio.Future[SeenIds]) -> None:
        since, self._seen_since = self._seen_since or [], None
        if self._closing:
            return
        if done.cancelled() or done.exception() is not None:
            log.warning(
                "%s: no new filter of its ids (%s); tried again in %d s",
                self.path,
                None if done.cancelled() else done.exception(),
                SEEN_RETRY_SECONDS,
            )
            self._seen_retry_at = time.monotonic() + SEEN_RETRY_SECONDS
            return
        seen = done.result()
        seen.update(since)
        self._seen = seen

    def _schedule_fold(self) -> None:
        if self._folding is not None or self._closing:
            return  # its end schedules the next; a closing store folds in ``close``
        if len(self._unfolded) >= FOLD_EVENTS:
            self._start_fold()
        elif self._unfolded and self._fold_handle is None:
            self._fold_handle = asyncio.get_running_loop().call_later(
                FOLD_SECONDS, self._start_fold
            )

    def _start_fold(self) -> asyncio.Future[None]:
        """Fold everything unfolded into SQLite on the writer thread (one at a time)."""
        if self._fold_handle is not None:
            self._fold_handle.cancel()
            self._fold_handle = None
        if self._folding is not None:
            return self._folding
        rows = self._unfolded[:]
        folding: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._folding = folding
        writing = self._threads.write_soon(self._fold_rows, rows)
        writing.add_done_callback(lambda done: self._folded(done, rows, folding))
        return folding

    def _folded(
        self, done: asyncio.Future[Any], rows: list[tuple[Any, ...]], folding: asyncio.Future[None]
    ) -> None:
        self._folding = None
        try:
            self._book_fold(done, rows)
        finally:
            if done.cancelled():
                folding.cancel()
            elif (error := done.exception()) is not None:
                folding.set_exception(error)
                folding.exception()  # retrieved: whoever waits gets it; nobody may
            else:
                folding.set_result(None)

    def _book_fold(self, done: asyncio.Future[Any], rows: list[tuple[Any, ...]]) -> None:
        if done.cancelled() or done.exception() is not None:
            self._fold_failures += 1
            if self._fold_failures == 1 or self._fold_failures % 100 == 0:
                log.error(
                    "folding %d journaled events into %s failed (%d times; they are safe in"
                    " the journal, tried again in 1 s): %s",
                    len(rows),
                    self.path,
                    self._fold_failures,
                    None if done.cancelled() else done.exception(),
                )
            if not self._closing and self._fold_handle is None:
                self._fold_handle = asyncio.get_running_loop().call_later(1.0, self._start_fold)
            return
        self._fold_failures = 0
        self._stored = rows[-1][0] if rows else self._stored
        del self._unfolded[: len(rows)]
        for row in rows:
            key = (row[8], row[1])
            if self._unfolded_ids.get(key) == row[0]:
                del self._unfolded_ids[key]
        self._journal.release(self._stored)
        self._schedule_fold()

    async def _fold_upto(self, seq: int) -> None:
        """Return once SQLite holds every seq up to ``seq`` (a read, a trim, a close)."""
        while self._stored < seq:
            folding = self._start_fold()
            await asyncio.shield(folding)  # raises what failed it

    def _fold_rows(self, rows: list[tuple[Any, ...]]) -> None:
        """On the writer: the rows into SQLite, one transaction (the WAL copy, when due,
        after it: only folds wait for it)."""
        if not rows:
            return
        conn = self._conn()
        try:
            commit_events(conn, rows)  # ids checked by ``append``: none should be taken
        except sqlite3.IntegrityError:  # rolled back
            self._fold_one_by_one(conn, rows)
        self._stored_on_writer = rows[-1][0]
        self._finish_wal_copy(conn)

    def _fold_one_by_one(self, conn: sqlite3.Connection, rows: list[tuple[Any, ...]]) -> None:
        """A row whose (publisher, id) the log already holds: only a bug lets one into the
        journal, and it must not stop every fold after it (nor the log's next open). It
        is a resend the lookup missed: the first copy stays, this one is left out."""
        with transaction(conn):
            for row in rows:
                try:
                    insert_events(conn, [row])
                except sqlite3.IntegrityError:
                    first = conn.execute(
                        "SELECT seq FROM events WHERE id = ? AND publisher = ?", (row[1], row[8])
                    ).fetchone()
                    log.error(
                        "event seq %d (id %r of %r) repeats seq %s: left out of %s",
                        row[0],
                        row[1],
                        row[8],
                        first[0] if first else "?",
                        self.path,
                    )

    @staticmethod
    def _known_ids(conn: sqlite3.Connection, ids: list[str]) -> dict[tuple[str, str], int]:
        known: dict[tuple[str, str], int] = {}
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            for publisher, event_id, seq in conn.execute(
                f"SELECT publisher, id, seq FROM events WHERE id IN ({marks})", chunk
            ):
                known[(publisher, event_id)] = seq
        return known

    async def query(self, query: EventQuery) -> QueryPage:
        """A page up to the head as it is now: what the journal took last is folded
        first (a fold's wait at most, and only for a read that reaches that far)."""
        upto = self._head if query.until is None else min(query.until, self._head)
        await self._fold_upto(upto)
        page: QueryPage = await self._threads.read(self._query, query, upto)
        return page

    def _query(self, query: EventQuery, upto: int) -> QueryPage:
        return read_page(self._reader_conn(), query, upto)

    async def trim(self, now_ms: int) -> int:
        if self._retention.max_events is None and self._retention.max_age_seconds is None:
            return 0
        await self._fold_upto(self._head)
        removed: int = await self._on_writer(self._trim, now_ms)
        return removed

    def _trim(self, now_ms: int) -> int:
        conn = self._conn()
        removed = 0
        with transaction(conn):
            if self._retention.max_events is not None:
                cutoff_seq = self._head - self._retention.max_events
                removed += conn.execute("DELETE FROM events WHERE seq <= ?", (cutoff_seq,)).rowcount
            if self._retention.max_age_seconds is not None:
                cutoff_ts = now_ms - int(self._retention.max_age_seconds * 1000)
                removed += conn.execute("DELETE FROM events WHERE ts < ?", (cutoff_ts,)).rowcount
            if removed:
                # Seqs are never reused: should the trim take the newest events too, the
                # head stays known (``_open_writer`` takes the larger of this and the
                # newest seq). In the deletes' transaction: never one without the other.
                # What SQLite holds, not the journal's head: the journal's events past it
                # are taken back after a crash (``_open_writer``).
                conn.execute(
                    "INSERT OR REPLACE INTO meta(key, value) VALUES ('head', ?)",
                    (self._stored_on_writer,),
                )
        if removed:
            oldest = conn.execute("SELECT MIN(seq) FROM events").fetchone()[0]
            self._oldest = oldest if oldest is not None else self._stored_on_writer + 1
            self._finish_wal_copy(conn)
        return removed

    async def count_by_time(
        self, since_ms: int, until_ms: int, bucket_ms: int
    ) -> list[tuple[int, str, str, int]]:
        await self._fold_upto(self._head)
        rows: list[tuple[int, str, str, int]] = await self._threads.read(
            self._count_by_time, since_ms, until_ms, bucket_ms
        )
        return rows

    def _count_by_time(
        self, since_ms: int, until_ms: int, bucket_ms: int
    ) -> list[tuple[int, str, str, int]]:
        sql = (
            "SELECT (ts / ?) * ?, type, channel, COUNT(*) FROM events "
            "WHERE ts >= ? AND ts < ? GROUP BY 1, 2, 3"
        )
        params = (bucket_ms, bucket_ms, since_ms, until_ms)
        return [tuple(row) for row in self._reader_conn().execute(sql, params)]

    async def load_records(self, kind: str) -> dict[str, dict[str, Any]]:
        rows = await self._on_writer(self._load_records, kind)
        return {record_id: _decode_record(body) for record_id, body in rows}

    def _load_records(self, kind: str) -> list[tuple[str, bytes]]:
        return (
            self._conn().execute("SELECT id, body FROM records WHERE kind = ?", (kind,)).fetchall()
        )

    async def save_record(self, kind: str, record_id: str, record: dict[str, Any]) -> None:
        await self._on_writer(self._write_record, kind, record_id, _encode_record(record))

    async def delete_record(self, kind: str, record_id: str) -> None:
        await self._on_writer(self._write_record, kind, record_id, None)

    async def update_record(self, kind: str, record_id: str, change: RecordChange) -> None:
        await self._on_writer(self._update_record, kind, record_id, change)

    def _update_record(self, kind: str, record_id: str, change: RecordChange) -> None:
        # The one writer thread runs this start to end: nothing writes in between.
        row = (
            self._conn()
            .execute("SELECT body FROM records WHERE kind = ? AND id = ?", (kind, record_id))
            .fetchone()
        )
        updated = change(_decode_record(row[0]) if row else None)
        self._write_record(kind, record_id, None if updated is None else _encode_record(updated))

    def _write_record(self, kind: str, record_id: str, body: bytes | None) -> None:
        conn = self._conn()
        if body is None:
            conn.execute("DELETE FROM records WHERE kind = ? AND id = ?", (kind, record_id))
        else:
            conn.execute(
                "INSERT OR REPLACE INTO records(kind, id, body) VALUES (?, ?, ?)",
                (kind, record_id, body),
            )

    async def _on_writer(self, fn: Any, *args: Any) -> Any:
        return await self._threads.write(fn, *args)

    def _conn(self) -> sqlite3.Connection:
        assert self._write_conn is not None, "store is not open"
        return self._write_conn

    def _reader_conn(self) -> sqlite3.Connection:
        return self._threads.reader_conn()


def read_page(conn: sqlite3.Connection, query: EventQuery, upto: int) -> QueryPage:
    """The page ``query`` selects from an ``events`` table, up to seq ``upto``: the log's
    reads, and a cluster node's cache of the stream (``store/node_cache.py``)."""
    clauses = ["seq > ?", "seq <= ?"]
    params: list[Any] = [query.after, upto]
    if query.type is not None:
        clauses.append("type = ?")
        params.append(query.type)
    if query.pattern is not None:
        if is_literal(query.pattern):
            clauses.append("channel = ?")
            params.append(query.pattern)
        elif prefix := literal_prefix(query.pattern):
            # Tokens never hold '/' (the character after '.'), so this is the prefix range.
            clauses.append("channel >= ? AND channel < ?")
            params.extend([prefix, prefix[:-1] + "/"])
    if query.task_id is None:
        sql = f"SELECT {_COLUMNS} FROM events WHERE {' AND '.join(clauses)} ORDER BY seq"
    else:
        sql, params = _task_query(query.task_id, " AND ".join(clauses), params)
    if query.readable is None and (query.pattern is None or prefix_is_exact(query.pattern)):
        # The SQL selects exactly what the query does: SQLite stops at the page's end,
        # and no event is tested again here (half a replay's reading time, 2-KB events).
        rows = conn.execute(f"{sql} LIMIT ?", [*params, query.limit]).fetchall()
        found = [StoredEvent(*row) for row in rows]
        full = len(found) >= query.limit
        return QueryPage(found, found[-1].seq if full else max(query.after, upto))
    return select_page((StoredEvent(*row) for row in conn.execute(sql, params)), query, upto)


def _task_query(task_id: str, where: str, params: list[Any]) -> tuple[str, list[Any]]:
    """The events of task ``task_id`` that also meet ``where``, in seq order: its channel
    ``tasks.<id>`` (read in seq order from the channel index) merged with the channels
    under it (``tasks.<id>.…``: a range of that index, sorted). Without ``INDEXED BY`` the
    planner, lacking statistics, walks the whole log by seq instead."""
    channel = task_channel(task_id)
    select = f"SELECT {_COLUMNS} FROM events INDEXED BY events_channel WHERE"
    # task_id too: an id with a dot ("a.b") names no task, though "tasks.a.b" is a channel
    # under task a. The sub-channel range is sorted whole on every page (a task with very
    # many sub-channel events pages slower; its own channel is read in seq order).
    sql = (
        f"{select} channel = ? AND task_id = ? AND {where} UNION ALL "
        f"{select} channel >= ? AND channel < ? AND task_id = ? AND {where} ORDER BY seq"
    )
    # Nothing sorts between '.' and '/': the range holds exactly the names under channel.
    return sql, [channel, task_id, *params, f"{channel}.", f"{channel}/", task_id, *params]


def _log_identity(conn: sqlite3.Connection) -> str:
    """The file's log id, made at its first open by a taskcast that keeps one: a random
    id that travels with the file (a copy of the file is the same log, a new file is
    another)."""
    row = conn.execute("SELECT log_id FROM identity").fetchone()
    if row is not None:
        return str(row[0])
    log_id = f"sqlite-{random_id()}"
    conn.execute("INSERT INTO identity(log_id) VALUES (?)", (log_id,))
    return log_id


def _migrate(conn: sqlite3.Connection) -> None:
    """Bring a log written by an older taskcast to the current schema, in one transaction."""
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    exists = conn.execute("SELECT 1 FROM sqlite_master WHERE name='events'").fetchone()
    if not exists or version >= SCHEMA_VERSION:
        return
    with transaction(conn):
        if version < 2:
            conn.execute(_EVENTS.format(name="events_v2"))
            conn.execute(
                f"INSERT INTO events_v2({_V1_COLUMNS}) SELECT {_V1_COLUMNS} FROM events"
                " ORDER BY seq"
            )
            conn.execute("DROP TABLE events")
            conn.execute("ALTER TABLE events_v2 RENAME TO events")
        conn.execute("DROP INDEX IF EXISTS events_task")
        conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")


def _encode_record(record: dict[str, Any]) -> bytes:
    return json.dumps(record, separators=(",", ":")).encode()


def _decode_record(body: bytes) -> dict[str, Any]:
    value = json.loads(body)
    return value if isinstance(value, dict) else {}
