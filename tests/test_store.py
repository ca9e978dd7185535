from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sqlite3
import stat
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import taskcast.store.sqlite
from taskcast.frames import Publish, parse_client_frame
from taskcast.store import (
    EventQuery,
    EventStore,
    MemoryStore,
    NotALog,
    Retention,
    SqliteStore,
    StoreLocked,
    open_store,
)
from taskcast.store.sqlite import PAGE_SIZE, ROWS_PER_INSERT, _task_query, transaction
from tests.helpers import wait_until


def event(task: str, n: int, *, id: str | None = None, type: str = "api_action") -> Publish:
    frame: dict[str, object] = {
        "type": type,
        "payload": {"taskId": task, "message": f"m{n}", "timestamp": n},
    }
    if id is not None:
        frame["id"] = id
    parsed = parse_client_frame(json.dumps(frame))
    assert isinstance(parsed, Publish)
    return parsed


@pytest.fixture(params=["memory", "sqlite"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[EventStore]:
    opened: EventStore = (
        MemoryStore() if request.param == "memory" else SqliteStore(tmp_path / "log.db")
    )
    await opened.open()
    yield opened
    await opened.close()


async def test_append_numbers_in_order_and_dedups(store: EventStore) -> None:
    results = await store.append([event("a", 1, id="x"), event("a", 2, id="y")], 1000)
    assert [(r.seq, r.duplicate) for r in results] == [(1, False), (2, False)]
    again = await store.append([event("a", 3, id="z"), event("a", 1, id="x")], 1000)
    assert [(r.seq, r.duplicate) for r in again] == [(3, False), (1, True)]
    same_batch = await store.append([event("a", 4, id="w"), event("a", 4, id="w")], 1000)
    assert [(r.seq, r.duplicate) for r in same_batch] == [(4, False), (4, True)]
    assert store.head == 4 and store.oldest == 1


@pytest.mark.parametrize("size", [1, 3, 4, 63, 64, 87, 150])
async def test_a_batch_of_any_size_is_stored_whole_in_order(store: EventStore, size: int) -> None:
    """The SQLite log inserts a batch up to 64 rows to a statement (a batch that fits is
    one statement, its own transaction): every size, and a repeat in the middle of a big
    batch, come out the same as one by one."""
    results = await store.append([event(f"t{n % 7}", n, id=f"e{n}") for n in range(size)], 5)
    assert [r.seq for r in results] == list(range(1, size + 1))
    page = await store.query(EventQuery(limit=1000))
    assert [(e.seq, e.id, e.channel, e.ts) for e in page.events] == [
        (n + 1, f"e{n}", f"tasks.t{n % 7}", 5) for n in range(size)
    ]
    # A resend after the first 64-row statement went in: the whole batch is rolled back
    # and stored again with the resend looked up — no row twice, none lost.
    mixed = [event("t0", 1000 + n, id=f"f{n}") for n in range(70)]
    mixed.insert(66, event("t0", 0, id="e0"))  # already stored: a duplicate, not a row
    again = await store.append(mixed, 6)
    assert again[66].duplicate and again[66].seq == 1
    fresh = [r.seq for i, r in enumerate(again) if i != 66]
    assert fresh == list(range(size + 1, size + 71))
    assert store.head == size + 70
    stored = (await store.query(EventQuery(limit=1000))).events
    assert [e.seq for e in stored] == list(range(1, size + 71))
    assert len({e.id for e in stored}) == size + 70


async def _trace_writes(store: SqliteStore, trace: Callable[[str], None] | None) -> None:
    """Trace what the store's writing connection (the writer thread's) runs."""
    conn = store._write_conn
    assert conn is not None
    await store._on_writer(conn.set_trace_callback, trace)


async def test_sqlite_folds_a_small_batch_as_one_statement(tmp_path: Path) -> None:
    """Each statement the writer steps is a GIL handoff against the busy event loop: a
    fold that fits one INSERT is that statement alone (no BEGIN, no COMMIT), a bigger
    one goes in one transaction."""
    store = SqliteStore(tmp_path / "log.db")
    await store.open()
    statements: list[str] = []
    await _trace_writes(store, statements.append)
    try:
        await store.append([event("a", n, id=f"s{n}") for n in range(ROWS_PER_INSERT)], 1)
        await store._fold_upto(store.head)
        assert [sql.split(" ", 2)[:2] for sql in statements] == [["INSERT", "INTO"]]
        statements.clear()
        await store.append([event("a", n, id=f"b{n}") for n in range(ROWS_PER_INSERT + 1)], 1)
        await store._fold_upto(store.head)
        assert [sql.split(" ", 1)[0] for sql in statements] == [
            "BEGIN",
            "INSERT",
            "INSERT",
            "COMMIT",
        ]
    finally:
        await _trace_writes(store, None)
        await store.close()
    assert not list(tmp_path.glob("log.db.journal-*"))  # closed cleanly: SQLite has all
    reopened = SqliteStore(tmp_path / "log.db")  # both batches committed
    await reopened.open()
    try:
        page = await reopened.query(EventQuery(limit=1000))
        assert [e.seq for e in page.events] == list(range(1, 2 * ROWS_PER_INSERT + 2))
    finally:
        await reopened.close()


async def test_sqlite_acks_from_the_journal_while_sqlite_is_busy(tmp_path: Path) -> None:
    """A commit is the journal's write: it is answered while the writer thread is busy
    (a WAL copy's device flushes, say), and its resend is known before SQLite has it. A
    read that reaches it waits for the fold, so it is never missed."""
    store = SqliteStore(tmp_path / "log.db")
    await store.open()
    try:
        gate = threading.Event()
        blocker = store._threads.write_soon(gate.wait)  # the writer thread busy
        (first,) = await store.append([event("a", 0, id="early")], 1)
        (again,) = await store.append([event("a", 0, id="early")], 1)
        assert (first.seq, first.duplicate, again.seq, again.duplicate) == (1, False, 1, True)
        read = asyncio.ensure_future(store.query(EventQuery()))
        for _ in range(5):
            await asyncio.sleep(0.01)
        assert not read.done()  # waits for the fold, behind the writer's work
        gate.set()
        await blocker
        assert [(e.seq, e.id) for e in (await read).events] == [(1, "early")]
        (later,) = await store.append([event("a", 1, id="early")], 1)  # found in SQLite
        assert (later.seq, later.duplicate) == (1, True)
    finally:
        await store.close()
    durable = SqliteStore(tmp_path / "fsync.db", fsync=True)
    await durable.open()
    try:
        (flushed,) = await durable.append([event("a", 0, id="flushed")], 1)
        assert flushed.seq == 1
        assert [e.id for e in (await durable.query(EventQuery())).events] == ["flushed"]
    finally:
        await durable.close()


async def test_a_foreign_write_lock_holds_no_ack(tmp_path: Path) -> None:
    """Another process (a maintenance script, the sqlite3 shell) holds the log's write
    lock. Commits go on being acknowledged from the journal, the event loop keeps
    turning, and SQLite takes them once the lock is let go — none lost, none refused."""
    store = SqliteStore(tmp_path / "log.db")
    await store.open()
    holder = sqlite3.connect(tmp_path / "log.db", isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")  # the write lock, held
        (result,) = await asyncio.wait_for(store.append([event("a", 0, id="waits")], 1), 2)
        assert (result.seq, result.error) == (1, None)
        read = asyncio.ensure_future(store.query(EventQuery()))
        for _ in range(20):
            await asyncio.sleep(0.01)
        assert not read.done()  # the loop turned 20 times while the fold waited
        holder.execute("ROLLBACK")
        assert [e.id for e in (await read).events] == ["waits"]
        (after,) = await store.append([event("a", 1, id="after")], 1)
        assert after.seq == 2
    finally:
        holder.close()
        await store.close()


_CRASHING_WRITER = """
import asyncio, json, os, signal, sys
import taskcast.store.sqlite as sqlite
from taskcast.frames import parse_client_frame
sqlite.FOLD_SECONDS = 3600  # nothing reaches SQLite on its own: only the journal has it

async def main():
    store = sqlite.SqliteStore(sys.argv[1])
    await store.open()
    for n in range(int(sys.argv[2])):
        frame = {"type": "api_action", "id": f"e{n}", "payload": {"taskId": "t", "message": f"m{n}", "timestamp": n}}
        (result,) = await store.append([parse_client_frame(json.dumps(frame))], 1)
        print(result.seq, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)

asyncio.run(main())
"""


async def test_sqlite_journal_survives_kill_9(tmp_path: Path) -> None:
    """Acked events that only the journal held when the process was killed are in the
    log after it opens again, once each, resends still known; a write the kill cut short
    (never acknowledged) is cut off, not read as events."""
    path = tmp_path / "log.db"
    done = subprocess.run(
        [sys.executable, "-c", _CRASHING_WRITER, str(path), "30"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == -9, done.stderr
    assert done.stdout.split() == [str(n) for n in range(1, 31)]
    (segment,) = path.parent.glob("log.db.journal-*")
    with sqlite3.connect(path) as conn:  # SQLite never got them
        assert conn.execute("SELECT COUNT(*) FROM events").fetchone() == (0,)
    with open(segment, "ab") as torn:
        torn.write(b"\x40\x00\x00\x00half a frame")
    store = SqliteStore(path)
    await store.open()
    try:
        page = await store.query(EventQuery(limit=100))
        assert [(e.seq, e.id) for e in page.events] == [(n + 1, f"e{n}") for n in range(30)]
        (resent,) = await store.append([event("t", 7, id="e7")], 1)
        (new,) = await store.append([event("t", 30, id="e30")], 1)
        assert (resent.seq, resent.duplicate, new.seq) == (8, True, 31)
        assert [p.name for p in path.parent.glob("log.db.journal-*")] != [segment.name]
    finally:
        await store.close()


async def test_a_log_made_anew_beside_an_old_journal_takes_none_of_it(tmp_path: Path) -> None:
    """The operator deletes the log (not its journal) to start over: the old events stay
    gone, and the new log's seqs start at 1."""
    path = tmp_path / "log.db"
    subprocess.run(
        [sys.executable, "-c", _CRASHING_WRITER, str(path), "3"], timeout=60, check=False
    )
    assert list(tmp_path.glob("log.db.journal-*"))
    for name in ("log.db", "log.db-wal", "log.db-shm"):
        (tmp_path / name).unlink(missing_ok=True)
    store = SqliteStore(path)
    await store.open()
    try:
        assert (await store.query(EventQuery())).events == []
        (first,) = await store.append([event("t", 0, id="e0")], 1)
        assert (first.seq, first.duplicate) == (1, False)
    finally:
        await store.close()


@pytest.mark.timeout(20)
async def test_a_read_that_comes_as_a_fold_ends_waits_for_it_and_never_spins(
    tmp_path: Path,
) -> None:
    """The writer has finished a fold whose outcome the loop has not booked yet, and a
    read needs that fold: it waits for the booking (the loop spun at 100% CPU, the hub
    frozen, when it was handed the writer's finished future)."""
    store = SqliteStore(tmp_path / "log.db")
    await store.open()
    loop = asyncio.get_running_loop()
    reads: list[asyncio.Task[object]] = []
    fold_rows = store._fold_rows

    def fold_then_read(rows: list[tuple[object, ...]]) -> None:
        fold_rows(rows)  # the read is queued ahead of the fold's outcome
        loop.call_soon_threadsafe(lambda: reads.append(loop.create_task(store.query(EventQuery()))))

    try:
        await store.append([event("a", 0, id="e0")], 1)
        store._fold_rows = fold_then_read  # type: ignore[method-assign]
        await store._start_fold()
        store._fold_rows = fold_rows  # type: ignore[method-assign]
        await wait_until(lambda: bool(reads), what="the read")
        page = await reads[0]
        assert [e.id for e in page.events] == ["e0"]  # type: ignore[attr-defined]
    finally:
        await store.close()


async def test_ids_flushed_while_the_filter_was_built_are_in_it(tmp_path: Path) -> None:
    """With ``--fsync`` a batch waits for its flush; should the filter's build end
    meanwhile, the batch's ids still go in it, so a later resend is found (it was
    stored again, and every fold after failed on the duplicate)."""
    store = SqliteStore(tmp_path / "log.db", fsync=True)
    await store.open()
    write = store._journal.write

    def write_once_the_filter_is_built(*args: object) -> None:
        while store._seen is None:  # the flush outlasts the build
            time.sleep(0.01)
        write(*args)  # type: ignore[arg-type]

    try:
        assert store._seen is None
        store._journal.write = write_once_the_filter_is_built  # type: ignore[method-assign, assignment]
        (first,) = await store.append([event("a", 0, id="e0")], 1)
        store._journal.write = write  # type: ignore[method-assign]
        await store._fold_upto(store.head)  # e0 leaves the unfolded ids
        (again,) = await store.append([event("a", 0, id="e0")], 2)
        assert (again.seq, again.duplicate) == (first.seq, True)
    finally:
        await store.close()


async def test_a_repeated_id_in_the_journal_never_stops_the_folds(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Should a resend ever slip past the lookup into the journal (a bug), the fold
    leaves that copy out, says so, and goes on: it used to fail every fold after it and
    the log's next open."""
    store = SqliteStore(tmp_path / "log.db")
    await store.open()
    try:
        (first,) = await store.append([event("a", 0, id="e0")], 1)
        await store._fold_upto(store.head)
        copy = (2, "e0", "tasks.a", "api_action", "a", None, 1, b"{}", "anonymous")
        store._unfolded.append(copy)  # the slip, by hand
        store._head = 2
        (after,) = await store.append([event("a", 1, id="e1")], 1)
        await store._fold_upto(store.head)
        assert [(e.seq, e.id) for e in (await store.query(EventQuery())).events] == [
            (first.seq, "e0"),
            (after.seq, "e1"),
        ]
        assert "event seq 2 (id 'e0' of 'anonymous') repeats seq 1" in caplog.text
    finally:
        await store.close()


async def test_query_filters_and_pages(store: EventStore) -> None:
    await store.append(
        [event("a", i) for i in range(5)] + [event("b", i, type="tool_executed") for i in range(5)],
        1000,
    )
    page = await store.query(EventQuery(pattern="tasks.b"))
    assert [e.seq for e in page.events] == [6, 7, 8, 9, 10]
    page = await store.query(EventQuery(pattern="tasks.*", type="api_action", limit=3))
    assert [e.seq for e in page.events] == [1, 2, 3] and page.scanned_to == 3
    page = await store.query(
        EventQuery(after=page.scanned_to, pattern="tasks.*", type="api_action")
    )
    assert [e.seq for e in page.events] == [4, 5] and page.scanned_to == 10
    page = await store.query(EventQuery(task_id="b", after=7, until=9))
    assert [e.seq for e in page.events] == [8, 9]
    page = await store.query(EventQuery(pattern="other.>"))
    assert page.events == [] and page.scanned_to == 10


def on_channel(channel: str, n: int) -> Publish:
    frame = {"type": "note", "channel": channel, "payload": {"message": f"m{n}"}}
    parsed = parse_client_frame(json.dumps(frame))
    assert isinstance(parsed, Publish)
    return parsed


async def test_task_query_takes_its_channel_and_those_under_it(store: EventStore) -> None:
    """A task's events: ``tasks.<id>`` and ``tasks.<id>.…``, in seq order, page by page;
    never a task whose id merely starts the same (``tasks.ab``) or another namespace."""
    channels = ["tasks.a", "tasks.a.tools", "tasks.ab", "tasks.a", "control.a"]
    channels += ["tasks.a.tools.x", "tasks.b", "tasks.a", "tasks.ab.c", "tasks.a.z"]
    await store.append([on_channel(c, n) for n, c in enumerate(channels)], 1000)
    want = [seq for seq, c in enumerate(channels, 1) if c == "tasks.a" or c.startswith("tasks.a.")]
    assert want == [1, 2, 4, 6, 8, 10]
    page = await store.query(EventQuery(task_id="a"))
    assert [e.seq for e in page.events] == want
    assert all(e.task_id == "a" for e in page.events)
    got, after = [], 0
    while True:
        page = await store.query(EventQuery(task_id="a", after=after, limit=2))
        got += [e.seq for e in page.events]
        if not page.events:
            break
        after = page.scanned_to
    assert got == want
    page = await store.query(EventQuery(task_id="a", pattern="tasks.a.>", after=2, until=8))
    assert [e.seq for e in page.events] == [6]


CHANNELS = ["tasks.a", "tasks.a.x", "tasks.b", "tasks.ab", "control.a", "other.a.b", "x"]
PATTERNS = [None, ">", "tasks.>", "tasks.a", "tasks.a.>", "tasks.*", "*.a", "other.*.b", "x"]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    channels=st.lists(st.sampled_from(CHANNELS), min_size=1, max_size=40),
    pattern=st.sampled_from(PATTERNS),
    task=st.sampled_from([None, "a", "b", "a.x"]),
    kind=st.sampled_from([None, "note", "api_action"]),
    limit=st.integers(1, 7),
    readable=st.sampled_from([None, ("tasks.>",)]),
)
@example(["tasks.a", "tasks.a.x", "tasks.a.x"], None, "a.x", None, 5, None)  # a dotted id
def test_sqlite_pages_are_the_reference_pages(
    tmp_path_factory: pytest.TempPathFactory,
    channels: list[str],
    pattern: str | None,
    task: str | None,
    kind: str | None,
    limit: int,
    readable: tuple[str, ...] | None,
) -> None:
    """Page after page, the SQLite log (its SQL chooses, and stops at the page's end
    when it chooses exactly) answers as the in-memory reference does (every event
    tested in Python), for literal, prefix and ``*`` patterns, tasks (``a.x`` names
    none, though ``tasks.a.x`` is a channel under task ``a``), types and scopes."""

    async def pages(store: EventStore) -> list[tuple[list[int], int]]:
        await store.open()
        await store.append([on_channel(c, n) for n, c in enumerate(channels)], 1000)
        seen, after = [], 0
        while True:
            query = EventQuery(
                after=after,
                pattern=pattern,
                task_id=task,
                type=kind,
                limit=limit,
                readable=readable,
            )
            page = await store.query(query)
            seen.append(([e.seq for e in page.events], page.scanned_to))
            if page.scanned_to >= len(channels):
                break
            after = page.scanned_to
        await store.close()
        return seen

    path = tmp_path_factory.mktemp("pages") / "log.db"
    assert asyncio.run(pages(SqliteStore(path))) == asyncio.run(pages(MemoryStore()))


async def test_sqlite_task_queries_read_the_channel_index(tmp_path: Path) -> None:
    """A log made before schema 3 loses its task index (a leaf page less per event in
    every commit), and a task query is two ranges of the channel index, not a walk of
    the whole log by seq."""
    path = tmp_path / "v2.db"
    store = SqliteStore(path)
    await store.open()
    await store.append([event("a", 1), event("b", 2), on_channel("tasks.a.tools", 3)], 1000)
    await store.close()
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE INDEX events_task ON events(task_id, seq) WHERE task_id IS NOT NULL")
        conn.execute("PRAGMA user_version=2")
    store = SqliteStore(path)
    await store.open()
    try:
        page = await store.query(EventQuery(task_id="a"))
        assert [e.seq for e in page.events] == [1, 3]
    finally:
        await store.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 3
        names = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
        assert "events_task" not in names and "events_channel" in names
        sql, params = _task_query("a", "seq > ? AND seq <= ?", [0, 10])
        plan = [row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}", params)]
    searches = [step for step in plan if step.startswith(("SEARCH", "SCAN"))]
    assert len(searches) == 2, plan
    assert all("USING INDEX events_channel (channel" in step for step in searches), plan


async def test_retention_by_count_and_age(tmp_path: Path) -> None:
    for store in (
        MemoryStore(Retention(max_events=3)),
        SqliteStore(tmp_path / "r.db", Retention(max_events=3)),
    ):
        await store.open()
        await store.append([event("a", i) for i in range(10)], 1000)
        assert await store.trim(1000) == 7
        assert store.oldest == 8 and store.head == 10
        await store.close()
    aged = MemoryStore(Retention(max_age_seconds=1))
    await aged.append([event("a", 1)], 1000)
    await aged.append([event("a", 2)], 5000)
    assert await aged.trim(5500) == 1 and aged.oldest == 2


async def test_a_retention_that_would_empty_the_log_is_refused(tmp_path: Path) -> None:
    """``--retain-events 0`` (or a negative count or age) trimmed the whole log on the
    first pass — every event acked and then gone — where JetStream reads 0 as "no
    limit". Refused now, before the log is touched; so are other values that leave a
    hub unusable (a frame limit of 0, a port past 65535, …)."""
    bad_ages = [{"max_age_seconds": age} for age in (-5.0, 0.0, float("inf"), float("nan"))]
    for bad in [{"max_events": 0}, {"max_events": -1}, *bad_ages]:
        with pytest.raises(ValueError):
            Retention(**bad)  # type: ignore[arg-type]
    path = tmp_path / "log.db"
    store = SqliteStore(path)
    await store.open()
    await store.append([event("a", n, id=f"k{n}") for n in range(3)], 1)
    await store.close()
    for flags in (
        ["--retain-events", "0"],
        ["--retain-events", "-1"],
        ["--retain-seconds", "-5"],
        ["--retain-seconds", "0"],
        ["--retain-seconds", "inf"],
        ["--port", "99999"],
        ["--max-frame-bytes", "0"],
        ["--max-subscriber-buffer", "-1"],
        ["--max-connections", "0"],
        ["--publish-rate", "-1"],
        ["--idle-timeout", "-1"],
        ["--trim-interval", "0"],
    ):
        hub = [sys.executable, "-m", "taskcast", "hub", "--port", "0", "--store", f"sqlite:{path}"]
        done = subprocess.run(
            [*hub, *flags],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 2 and flags[0] in done.stderr, (flags, done.stderr)
        assert "Traceback" not in done.stderr
    reopened = SqliteStore(path)
    await reopened.open()
    try:
        page = await reopened.query(EventQuery(limit=10))
        assert [e.id for e in page.events] == ["k0", "k1", "k2"]
    finally:
        await reopened.close()


def test_a_file_where_the_store_wants_a_directory_is_named(tmp_path: Path) -> None:
    """``--store sqlite:FILE/x.db`` with FILE a file: the error says FILE is a file, not
    makedirs' bare "File exists"."""
    (tmp_path / "FILE").write_text("mine\n")
    done = subprocess.run(
        [sys.executable, "-m", "taskcast", "hub", "--port", "0", "--store", "sqlite:FILE/x.db"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert done.returncode == 1, done.stderr
    assert f"cannot create the directory FILE: {tmp_path}/FILE is a file" in done.stderr
    assert "Traceback" not in done.stderr
    assert (tmp_path / "FILE").read_text() == "mine\n"
    # A place where no file can be made (as root too): the log is named, not only its lock.
    done = subprocess.run(
        [sys.executable, "-m", "taskcast", "hub", "--port", "0", "--store", "sqlite:/proc/x.db"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1 and "cannot use /proc/x.db: no lock file" in done.stderr


async def test_a_file_that_is_no_log_is_refused_by_name(tmp_path: Path) -> None:
    """``--store sqlite:FILE`` where FILE is something else: a one-line error naming it,
    not a traceback, and the file left as it was."""
    path = tmp_path / "notes.db"
    path.write_bytes(b"garbage, not SQLite\n" * 10)
    with pytest.raises(NotALog, match=r"notes\.db is not a taskcast log"):
        await SqliteStore(path).open()
    done = subprocess.run(
        [sys.executable, "-m", "taskcast", "hub", "--port", "0", "--store", f"sqlite:{path}"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1 and "notes.db is not a taskcast log" in done.stderr
    assert "Traceback" not in done.stderr
    assert path.read_bytes() == b"garbage, not SQLite\n" * 10
    # Left as it was means its mode too, and no lock file beside it: the check comes
    # before the store touches anything (it once made /dev/null 0600).
    path.chmod(0o644)
    with pytest.raises(NotALog, match=r"not an SQLite database"):
        await SqliteStore(path).open()
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert not Path(f"{path}.lock").exists()
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo, 0o644)
    with pytest.raises(NotALog, match=r"pipe is not a regular file"):
        await SqliteStore(fifo).open()
    assert stat.S_IMODE(fifo.stat().st_mode) == 0o644 and not Path(f"{fifo}.lock").exists()
    # Another program's SQLite database is not taken over (tables added to it), not
    # even one with an events table of its own; nothing is made beside it.
    for name, schema in (("app.db", "users (name TEXT)"), ("cal.db", "events (id, title)")):
        other = tmp_path / name
        with contextlib.closing(sqlite3.connect(other)) as conn:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"CREATE TABLE {schema}")
            conn.commit()
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        Path(f"{other}-wal").unlink(missing_ok=True)
        Path(f"{other}-shm").unlink(missing_ok=True)
        other.chmod(0o644)
        table = schema.split()[0]
        with pytest.raises(NotALog, match=rf"{name} is not a taskcast log: .*tables \({table}\)"):
            await SqliteStore(other).open()
        assert sorted(p.name for p in tmp_path.glob(f"{name}*")) == [name]
        assert stat.S_IMODE(other.stat().st_mode) == 0o644
        with contextlib.closing(sqlite3.connect(other)) as conn:
            assert conn.execute("SELECT name FROM sqlite_master").fetchall() == [(table,)]
    # A real log whose write lock another process holds past the busy timeout is not
    # called "not a log" (an operator might delete it): it is held.
    log = tmp_path / "log.db"
    store = SqliteStore(log)
    await store.open()
    await store.close()
    holder = sqlite3.connect(log, isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")
        with pytest.raises(StoreLocked, match="held by another process"):
            await SqliteStore(log).open()
    finally:
        holder.close()


async def test_sqlite_survives_reopen_and_never_reuses_seqs(tmp_path: Path) -> None:
    path = tmp_path / "log.db"
    store = SqliteStore(path, Retention(max_age_seconds=1))
    await store.open()
    await store.append([event("a", 1, id="one"), event("a", 2)], 1000)
    assert await store.trim(10_000) == 2  # the log is now empty
    await store.close()
    store = SqliteStore(path)
    await store.open()
    assert store.head == 2 and store.oldest == 3
    (result,) = await store.append([event("a", 3)], 20_000)
    assert result.seq == 3
    await store.close()


async def test_sqlite_refuses_a_second_owner(tmp_path: Path) -> None:
    first = SqliteStore(tmp_path / "log.db")
    await first.open()
    with pytest.raises(StoreLocked):
        await SqliteStore(tmp_path / "log.db").open()
    (tmp_path / "log.db.lock").unlink()  # an operator tidying up while it runs
    with pytest.raises(StoreLocked):  # the log file is held too
        await SqliteStore(tmp_path / "log.db").open()
    await first.close()
    second = SqliteStore(tmp_path / "log.db")  # given up: another hub may take it
    await second.open()
    await second.close()


def test_open_store_urls(tmp_path: Path) -> None:
    assert isinstance(open_store("memory"), MemoryStore)
    assert isinstance(open_store(f"sqlite:{tmp_path}/x.db"), SqliteStore)
    with pytest.raises(ValueError):
        open_store("mongodb://nope")


def wal_generation(wal: Path) -> int:
    """The WAL header's checkpoint sequence number: one more each time it starts over."""
    with wal.open("rb") as file:
        return int.from_bytes(file.read(16)[12:16], "big")


async def test_sqlite_wal_stays_bounded_under_steady_writes(tmp_path: Path) -> None:
    """The WAL must start over while commits keep coming (and a reader keeps reading):
    a checkpoint thread alone never catches a busy writer, and the WAL grew without
    end (790 MB in 45 s of bench/soak.py)."""
    path = tmp_path / "log.db"
    limit = 512 * 1024
    store = SqliteStore(
        path, Retention(max_events=2_000), checkpoint_seconds=0.02, wal_limit_bytes=limit
    )
    await store.open()
    wal = Path(f"{path}-wal")
    sizes: list[int] = []
    starts: set[int] = set()
    padding = "x" * 500
    for batch in range(1_500):
        frames = [
            {
                "type": "api_action",
                "payload": {"taskId": f"t{batch % 7}", "message": padding, "timestamp": batch},
            }
            for _ in range(5)
        ]
        events = [parse_client_frame(json.dumps(frame)) for frame in frames]
        await store.append([e for e in events if isinstance(e, Publish)], 1000 + batch)
        if batch % 50 == 0:
            await store.trim(1000 + batch)
            page = await store.query(EventQuery(after=max(0, store.head - 100), limit=100))
            assert len(page.events) == min(100, store.head)
        sizes.append(wal.stat().st_size)
        starts.add(wal_generation(wal))
    assert store.head == 7_500
    # Unbounded, it only grows (78 MB here); started over, it stays near the limit —
    # the limit plus what comes between two checkpoints at most.
    assert len(starts) >= 4, f"the WAL never started over: {sizes[-1]:,} bytes"
    assert max(sizes) < 32 * 1024 * 1024, f"WAL reached {max(sizes):,} bytes"
    await store.close()


async def test_sqlite_new_log_small_pages_and_old_log_keeps_its_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """New logs take 1 KiB pages (less WAL per small commit); a log made with another
    page size opens, takes appends and reads as before (SQLite cannot change it in WAL)."""
    fresh = SqliteStore(tmp_path / "new.db")
    await fresh.open()
    await fresh.close()
    with sqlite3.connect(tmp_path / "new.db") as conn:
        assert conn.execute("PRAGMA page_size").fetchone()[0] == PAGE_SIZE == 1024

    old_path = tmp_path / "old.db"
    with monkeypatch.context() as patched:  # a log made when taskcast used 4 KiB pages
        patched.setattr(taskcast.store.sqlite, "PAGE_SIZE", 4096)
        made = SqliteStore(old_path)
        await made.open()
        await made.close()
    old = SqliteStore(old_path)
    await old.open()
    (result,) = await old.append([event("t", 1, id="e1")], 1000)
    assert result.seq == 1 and result.error is None
    page = await old.query(EventQuery(after=0, limit=10))
    assert [e.id for e in page.events] == ["e1"]
    await old.close()
    with sqlite3.connect(old_path) as conn:
        assert conn.execute("PRAGMA page_size").fetchone()[0] == 4096


def test_a_failed_transaction_reports_what_failed_not_its_rollback(tmp_path: Path) -> None:
    """SQLite rolls back by itself on some failures (a full disk): the hub said "cannot
    rollback - no transaction is active" instead of what went wrong."""
    conn = sqlite3.connect(tmp_path / "x.db", isolation_level=None)
    try:
        with pytest.raises(ValueError, match="the real failure"), transaction(conn):
            conn.execute("ROLLBACK")  # as SQLite does itself
            raise ValueError("the real failure")
    finally:
        conn.close()
