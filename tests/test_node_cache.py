"""A cluster node's copy of the stream on its own disk (``--nats-cache``, issue 29):
the file alone (real SQLite files), then nodes on a real NATS server — replays older
than the window read the file and not JetStream, a node killed with -9 fills the gap
it left, and the stream's own limits bound the file too."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp
import nats
import pytest

from taskcast.cli.options import parse_size
from taskcast.store import EventQuery, StoredEvent
from taskcast.store.node_cache import ROW_OVERHEAD, NodeCache, default_start
from tests.conftest import HubProcess
from tests.helpers import collect_events, publish_acked, seed, wait_until
from tests.nats_servers import NatsServer, unique_stream


def stored(seq: int, channel: str = "tasks.a", size: int = 100) -> StoredEvent:
    task = channel.split(".")[1] if channel.startswith("tasks.") else None
    body = json.dumps({"type": "note", "channel": channel, "payload": {"m": "x" * size}})
    return StoredEvent(seq, f"e{seq}", channel, "note", task, None, 1000 + seq, body.encode())


async def seqs_of(cache: NodeCache, **query: Any) -> list[int]:
    page = await cache.query(EventQuery(**query))
    assert page is not None, "the file does not hold what comes after"
    return [event.seq for event in page.events]


async def test_the_cache_holds_a_range_and_reads_like_the_log(tmp_path: Path) -> None:
    cache = NodeCache(tmp_path, 10**9)
    await cache.open("log-1", start=5)
    assert (cache.first, cache.last) == (5, 4) and not cache.covers(4)
    # seq 7 is not a taskcast event (the stream skips it): the range still covers it
    events = [stored(5), stored(6, "tasks.b"), stored(8, "tasks.a.tools"), stored(9, "other.x")]
    await cache.add(events, through=10)
    assert (cache.first, cache.last) == (5, 10)
    assert cache.covers(4) and cache.covers(9) and not cache.covers(10) and not cache.covers(3)
    assert await seqs_of(cache, after=4) == [5, 6, 8, 9]
    assert await seqs_of(cache, after=4, task_id="a") == [5, 8]
    assert await seqs_of(cache, after=4, pattern="tasks.>") == [5, 6, 8]
    await cache.add([stored(6)], through=9)  # already held: nothing changes
    assert cache.last == 10 and await seqs_of(cache, after=5, until=6) == [6]
    await cache.close()

    again = NodeCache(tmp_path, 10**9)
    await again.open("log-1", start=1)  # the same stream: it goes on where it was
    assert (again.first, again.last) == (5, 10) and await seqs_of(again, after=4) == [5, 6, 8, 9]
    await again.close()
    other = NodeCache(tmp_path, 10**9)
    await other.open("log-2", start=3)  # another stream's copy is worth nothing
    assert (other.first, other.last, other.bytes) == (3, 2, 0)
    assert await other.query(EventQuery(after=0)) is None  # it covers nothing
    await other.close()


async def test_the_cache_keeps_to_its_budget_and_to_the_streams_limits(tmp_path: Path) -> None:
    size = len(stored(1).body) + ROW_OVERHEAD
    cache = NodeCache(tmp_path, 50 * size)
    await cache.open("log", start=1)
    for start in range(1, 200, 10):
        await cache.add([stored(seq) for seq in range(start, start + 10)], through=start + 9)
        assert cache.bytes <= cache.max_bytes
    assert cache.last == 200 and 150 < cache.first <= 160
    assert await seqs_of(cache, after=cache.first - 1) == list(range(cache.first, 201))
    await cache.drop_before(190)  # JetStream's limits removed everything below 190
    assert cache.first == 190 and await seqs_of(cache, after=189) == list(range(190, 201))
    await cache.drop_before(500)  # ... and everything: the range is empty after 499
    assert (cache.first, cache.last) == (500, 499)
    assert await cache.query(EventQuery(after=0)) is None
    await cache.add([stored(500), stored(501)], through=501)
    await cache.close()
    assert cache.path is not None
    with sqlite3.connect(cache.path) as conn:
        assert [row[0] for row in conn.execute("SELECT seq FROM events")] == [500, 501]
        meta = dict(conn.execute("SELECT key, value FROM meta"))
    assert (meta["first"], meta["last"]) == (500, 501) and meta["bytes"] == 2 * size


async def test_a_read_the_file_no_longer_holds_is_not_answered_from_it(tmp_path: Path) -> None:
    """The caller checks ``covers`` on the event loop and the read runs later on a
    thread: a trim in between must not turn into a page that starts above the seqs it
    removed (they would be skipped; JetStream still has them). The read checks the range
    in its own snapshot and answers None."""
    cache = NodeCache(tmp_path, 10**9)
    await cache.open("log", start=1)
    await cache.add([stored(seq) for seq in range(1, 21)], through=20)
    assert cache.covers(0)
    await cache.drop_before(16)  # what a trim does after covers() said yes
    assert await cache.query(EventQuery(after=0)) is None
    assert await cache.query(EventQuery(after=14)) is None
    assert await seqs_of(cache, after=15) == [16, 17, 18, 19, 20]
    assert await seqs_of(cache, after=15, until=17) == [16, 17]
    await cache.close()


async def test_each_process_takes_a_file_of_its_own_and_a_broken_one_starts_over(
    tmp_path: Path,
) -> None:
    one, two = NodeCache(tmp_path, 10**6), NodeCache(tmp_path, 10**6)
    await one.open("log", 1)
    await two.open("log", 1)
    assert (one.path, two.path) == (tmp_path / "cache-0.db", tmp_path / "cache-1.db")
    await one.add([stored(1)], 1)
    await one.close()
    await two.close()
    (tmp_path / "cache-1.db").write_bytes(b"not a database at all" * 100)
    (tmp_path / "cache-1.db-wal").unlink(missing_ok=True)
    three, four = NodeCache(tmp_path, 10**6), NodeCache(tmp_path, 10**6)
    await three.open("log", 1)
    await four.open("log", 7)
    assert three.last == 1 and (four.first, four.last) == (7, 6)
    await three.close()
    await four.close()
    (tmp_path / "a-file").write_text("")
    nowhere = NodeCache(tmp_path / "a-file" / "cache", 10**6)
    with pytest.raises(OSError, match=r"--nats-cache .*a-file/cache"):
        await nowhere.open("log", 1)
    await nowhere.close()


def test_a_new_copy_begins_as_far_back_as_its_budget_reaches() -> None:
    # 1,000,000 messages of 2,000 bytes; a 1 GB budget holds ~417,000 of them
    start = default_start(1, 1_000_000, 2_000 * 1_000_000, 1_000_000, 10**9)
    assert start == 1_000_001 - int(10**9 * 0.9 / (2_000 + ROW_OVERHEAD))
    assert default_start(1, 10, 20_000, 10, 10**9) == 1  # all of it fits
    assert default_start(40, 10, 0, 0, 10**9) == 40  # an empty stream: from its next seq
    assert parse_size("4GiB") == 4 * 2**30 and parse_size("500MB") == 500 * 10**6
    assert parse_size("2g") == 2 * 10**9 and parse_size("1234") == 1234
    assert parse_size("100B") == 100 and parse_size("1.5KiB") == 1536
    for wrong in ("0", "-5MB", "lots", "4 parsecs", "", "inf", "1e400GB"):
        with pytest.raises(Exception, match="use bytes"):
            parse_size(wrong)


def health(hub: HubProcess) -> dict[str, Any]:
    with urllib.request.urlopen(f"{hub.http}/healthz", timeout=10) as response:
        answer: dict[str, Any] = json.load(response)
    return answer


async def publish_many(session: aiohttp.ClientSession, hub: HubProcess, ids: range) -> None:
    ws = await session.ws_connect(hub.url)
    for start in range(ids.start, ids.stop, 1000):
        chunk = range(start, min(start + 1000, ids.stop))
        acks = await publish_acked(ws, [seed(f"t{n % 5}", str(n), id=f"c{n}") for n in chunk])
        assert all(ack["type"] == "ack" for ack in acks)
    await ws.close()


async def replayed(session: aiohttp.ClientSession, hub: HubProcess, count: int) -> list[int]:
    ws = await session.ws_connect(hub.url, max_msg_size=0)
    await ws.send_json({"type": "subscribe", "channel": "tasks.>", "since": 0})
    got = await collect_events(ws, count, timeout=120)
    await ws.close()
    return [event["seq"] for event in got]


async def test_a_node_replays_the_past_from_its_cache_and_fills_what_it_missed(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    """30,000 events (more than the 20,000 the window keeps) through a node with a
    cache: a replay from 0 and task queries read the file — JetStream creates no read
    consumer meanwhile — and equal the stream. Killed with -9 while another node takes
    5,000 more, the node restarts on its file, fills the gap from JetStream, and serves
    all 35,000 again."""
    stream = unique_stream("cache")
    cache_dir = tmp_path / "cache"
    args = ("--nats-stream", stream, "--nats-cache", str(cache_dir))
    node = HubProcess(nats_server.url, *args).start(tmp_path / "a.log")
    plain = HubProcess(nats_server.url, "--nats-stream", stream).start(tmp_path / "b.log")
    watcher = await nats.connect(nats_server.url)
    created: list[str] = []

    async def on_created(msg: Any) -> None:
        created.append(msg.subject.rsplit(".", 1)[-1])

    await watcher.subscribe(f"$JS.EVENT.ADVISORY.CONSUMER.CREATED.{stream}.>", cb=on_created)
    try:
        async with aiohttp.ClientSession() as session:
            await publish_many(session, node, range(30_000))
            await wait_until(lambda: health(node)["cache"]["last"] >= 30_000, 60, "the cache")
            assert health(node)["cache"]["first"] == 1
            await watcher.flush()
            created.clear()
            assert await replayed(session, node, 30_000) == list(range(1, 30_001))
            async with session.get(
                f"{node.http}/api/events", params={"taskId": "t3", "since": 0, "limit": 1000}
            ) as response:
                page = await response.json()
            assert [e["payload"]["message"] for e in page] == [str(n) for n in range(3, 5000, 5)]
            await watcher.flush()
            assert [name for name in created if name.startswith("taskcast-read")] == []

            node.kill9()
            await publish_many(session, plain, range(30_000, 35_000))
            node = HubProcess(nats_server.url, *args).start(tmp_path / "a2.log")
            assert health(node)["cache"]["path"] == str(cache_dir / "cache-0.db")
            await wait_until(lambda: health(node)["cache"]["last"] >= 35_000, 60, "the gap")
            assert health(node)["cache"]["first"] == 1
            assert await replayed(session, node, 35_000) == list(range(1, 35_001))
    finally:
        await watcher.close()
        node.terminate()
        plain.terminate()


async def test_the_cache_never_keeps_what_the_stream_removed(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    """``--retain-events``: JetStream removes the oldest, and the node's file follows it
    (never a replay of events the log no longer has)."""
    stream = unique_stream("cachetrim")
    args = ("--nats-stream", stream, "--retain-events", "25000", "--trim-interval", "0.2")
    node = HubProcess(nats_server.url, *args, "--nats-cache", str(tmp_path / "c")).start(
        tmp_path / "a.log"
    )
    try:
        async with aiohttp.ClientSession() as session:
            # 35,000: the stream keeps 10,001.., the window (20,000) 15,001.., so a replay
            # from 0 reads 10,001..15,000 from the file
            await publish_many(session, node, range(35_000))

            def followed() -> bool:
                shown = health(node)
                cache = shown["cache"]
                return bool(cache["first"] == 10_001 == shown["oldest"] and cache["last"] == 35_000)

            await wait_until(followed, 30, "the cache to follow the stream and its limit")
            assert await replayed(session, node, 25_000) == list(range(10_001, 35_001))
    finally:
        node.terminate()


def test_a_wrong_cache_flag_is_refused_before_anything_starts(tmp_path: Path) -> None:
    cache = ["--nats-cache", str(tmp_path), "--nats-cache-bytes", "a lot"]
    done = subprocess.run(
        [sys.executable, "-m", "taskcast", "hub", "--store", "nats://127.0.0.1:1", *cache],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and "--nats-cache-bytes" in done.stderr
    sqlite = ["--store", f"sqlite:{tmp_path}/log.db", "--nats-cache", str(tmp_path)]
    done = subprocess.run(
        [sys.executable, "-m", "taskcast", "hub", *sqlite],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and "needs --store nats://" in done.stderr
