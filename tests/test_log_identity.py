"""Every log has an identity (issue 25, 2): a seq means something only in the log that
numbered it, so everything that keeps a ``since`` outside the hub keeps ``(logId, seq)``
and notices, never silently, when it resumes against another log — or past the head of
a log that holds less than it saw."""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import nats
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from taskcast import CommunicationService, TaskRecorder
from taskcast.client import subscribe
from taskcast.client.resume import LogMismatch, ResumePoint, Resumption
from taskcast.client.service import LOG_CHANGED
from taskcast.integrations.otel import Cursor, follow_into
from tests.conftest import REPO, HubProcess
from tests.helpers import publish_acked, seed, wait_until
from tests.helpers import subscribe as raw_subscribe
from tests.nats_servers import NatsServer, unique_stream
from tests.test_webhooks import Receiver, add_hook, hooks


async def health(hub: HubProcess) -> dict[str, Any]:
    async with aiohttp.ClientSession() as session, session.get(f"{hub.http}/healthz") as r:
        answer: dict[str, Any] = await r.json()
        return answer


async def publish_seeds(hub: HubProcess, task: str, count: int) -> None:
    async with aiohttp.ClientSession() as session, session.ws_connect(hub.url) as ws:
        await publish_acked(ws, [seed(task, str(i)) for i in range(count)])


async def take(
    hub_url: str | list[str], point: ResumePoint, count: int, **options: Any
) -> list[dict[str, Any]]:
    got: list[dict[str, Any]] = []
    async with asyncio.timeout(30):
        async for frame in subscribe(hub_url, "tasks.>", point, **options):
            got.append(frame)
            if len(got) == count:
                break
    return got


def test_a_resume_point_fits_itself_to_the_log_it_meets() -> None:
    point = ResumePoint(19, "log-a")
    assert point.subscribed({"logId": "log-a", "head": 25}) is Resumption.CONTINUE
    assert (point.last, point.problem) == (19, None)
    assert point.subscribed({"logId": "log-b", "head": 3}) is Resumption.RESTART
    assert (point.last, point.log_id) == (0, "log-b")
    assert "log-b" in str(point.problem) and "log-a" in str(point.problem)
    assert not point.accept(1)  # what the old request still brings is not of this log
    assert point.subscribed({"logId": "log-b", "head": 3}) is Resumption.CONTINUE
    assert point.accept(1) and not point.accept(1)
    behind = ResumePoint(19, "log-b")
    assert behind.subscribed({"logId": "log-b", "head": 5, "ahead": True}) is Resumption.CONTINUE
    assert behind.last == 5 and "ends at seq 5" in str(behind.problem)
    strict = ResumePoint(19, "log-a", strict=True)
    assert strict.subscribed({"logId": "log-b", "head": 3}) is Resumption.REFUSE
    assert isinstance(strict.mismatch(), LogMismatch) and strict.mismatch().found == "log-b"
    unknown = ResumePoint(7)  # a bare seq (an older cursor, --since 7): adopts the log
    assert unknown.subscribed({"logId": "log-c", "head": 9}) is Resumption.CONTINUE
    assert unknown.log_id == "log-c"
    assert ResumePoint.parse("log-c:7") == ResumePoint(7, "log-c")
    assert ResumePoint.parse("TASKCAST@2026-12-01T20:27:17.123456+00:00:7").log_id == (
        "TASKCAST@2026-12-01T20:27:17.123456+00:00"
    )
    with pytest.raises(ValueError):
        ResumePoint.parse("log-c:x")
    assert ResumePoint.from_json(ResumePoint(4, "log-c").to_json()) == ResumePoint(4, "log-c")


async def test_a_sqlite_log_keeps_its_identity_and_a_new_file_is_another_log(
    start_hub: Any, tmp_path: Path
) -> None:
    first = start_hub(store=f"sqlite:{tmp_path / 'a.db'}")
    log_a = (await health(first))["logId"]
    assert log_a.startswith("sqlite-")
    await publish_seeds(first, "t", 3)
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{first.http}/api/events?since=0") as r:
            assert r.headers["X-Taskcast-Log-Id"] == log_a
        async with session.get(f"{first.http}/api/tasks/t") as r:
            assert (await r.json())["logId"] == log_a
        async with session.ws_connect(first.url) as ws:
            reply = await raw_subscribe(ws, "tasks.>", since=10)
            assert reply["logId"] == log_a and reply["ahead"] is True and reply["head"] == 3
            reply = await raw_subscribe(ws, "tasks.>", since=1)
            assert "ahead" not in reply
    first.terminate()
    first.restart()
    assert (await health(first))["logId"] == log_a  # kept with the file
    other = start_hub(store=f"sqlite:{tmp_path / 'b.db'}")
    assert (await health(other))["logId"] not in (log_a, "")


async def test_the_sdk_resumes_on_a_replaced_hub_from_the_new_logs_beginning(
    start_hub: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The hub behind one URL is replaced by a fresh one (another log file) while a
    subscriber follows it: it reconnects, says so, and takes the new log from seq 1."""
    old = start_hub(store=f"sqlite:{tmp_path / 'old.db'}")
    await publish_seeds(old, "a", 19)
    point = ResumePoint()
    got: list[dict[str, Any]] = []

    async def follow() -> None:
        async for frame in subscribe(old.url, "tasks.>", point):
            got.append(frame)

    following = asyncio.create_task(follow())
    try:
        await wait_until(lambda: point.log_id is not None, 20, "the first subscribed")
        log_a = point.log_id
        await publish_seeds(old, "a", 1)
        await wait_until(lambda: len(got) == 1, 20, "the live event")
        assert (point.log_id, point.last) == (log_a, 20)
        old.kill9()
        fresh = HubProcess(f"sqlite:{tmp_path / 'fresh.db'}", port=old.port)
        fresh.start(tmp_path / "fresh.log")
        try:
            with caplog.at_level(logging.WARNING, logger="taskcast.client"):
                await publish_seeds(fresh, "b", 5)
                await wait_until(lambda: len(got) == 6, 30, "the new log's events")
            assert [e["seq"] for e in got[1:]] == [1, 2, 3, 4, 5]  # none skipped
            assert {e["payload"]["taskId"] for e in got[1:]} == {"b"}
            assert point.log_id == (await health(fresh))["logId"] != log_a
            warning = " ".join(r.getMessage() for r in caplog.records)
            assert str(log_a) in warning and str(point.log_id) in warning
        finally:
            fresh.terminate()
    finally:
        following.cancel()


async def test_strict_refuses_another_log_and_a_seq_past_the_head(
    start_hub: Any, tmp_path: Path
) -> None:
    hub = start_hub()
    await publish_seeds(hub, "s", 3)
    with pytest.raises(LogMismatch) as refused:
        await take(hub.url, ResumePoint(19, "sqlite-not-this-one"), 1, strict=True)
    assert refused.value.expected == "sqlite-not-this-one"
    assert refused.value.found == (await health(hub))["logId"]
    with pytest.raises(LogMismatch):
        await take(hub.url, ResumePoint(19), 1, strict=True)  # past the head of a log
    # Not strict: a seq past the head goes on from the head, with what comes next.
    point = ResumePoint(19)
    taking = asyncio.create_task(take(hub.url, point, 1))
    await wait_until(lambda: point.log_id is not None, 20, "subscribed")
    await publish_seeds(hub, "s", 1)
    (event,) = await taking
    assert event["seq"] == 4 and point.last == 4


def listen(hub: HubProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "taskcast", "listen", "--hub", hub.url, "--json", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_listen_since_logid_seq_on_another_log(start_hub: Any) -> None:
    hub = start_hub()
    await publish_seeds(hub, "l", 5)
    log_id = (await health(hub))["logId"]
    done = await asyncio.to_thread(listen, hub, "--since", "sqlite-earlier:19", "--count", "5")
    assert done.returncode == 0, done.stderr
    assert [json.loads(line)["seq"] for line in done.stdout.splitlines()] == [1, 2, 3, 4, 5]
    assert "sqlite-earlier" in done.stderr and log_id in done.stderr
    resumed = await asyncio.to_thread(listen, hub, "--since", f"{log_id}:3", "--count", "2")
    assert [json.loads(line)["seq"] for line in resumed.stdout.splitlines()] == [4, 5]
    assert f"tasks.> on log {log_id}" in resumed.stderr  # what to resume with next time
    strict = await asyncio.to_thread(listen, hub, "--since", "sqlite-earlier:19", "--strict")
    assert strict.returncode == 1 and strict.stdout == ""
    assert "sqlite-earlier" in strict.stderr and "Traceback" not in strict.stderr
    bad = await asyncio.to_thread(listen, hub, "--since", "nineteen")
    assert bad.returncode == 2 and "LOGID:SEQ" in bad.stderr


def record(hub: HubProcess, task_id: str) -> None:
    with CommunicationService(hub.url) as service, TaskRecorder(service, task_id) as rec:
        rec.api_action("thinking")
        rec.usage(3, 2)


async def test_otel_keeps_a_cursor_per_log_and_exports_a_fresh_hub_whole(
    start_hub: Any, tmp_path: Path
) -> None:
    """The reported case: a cursor taken on hub A, then the same directory against a
    fresh hub B — B's events are exported, not taken as done; back on A, only A's new."""
    hub_a = start_hub(store=f"sqlite:{tmp_path / 'a.db'}")
    hub_b = start_hub(store=f"sqlite:{tmp_path / 'b.db'}")
    for n in range(4):
        await asyncio.to_thread(record, hub_a, f"a{n}")
    await asyncio.to_thread(record, hub_b, "b0")
    cursor = Cursor(tmp_path / "otel-cursor.json")
    exporter = InMemorySpanExporter()

    def roots() -> list[str]:
        return sorted(s.name for s in exporter.get_finished_spans() if s.parent is None)

    async def export_until(hub: HubProcess, wanted: list[str]) -> None:
        running = asyncio.create_task(follow_into(exporter, hub.url, "tasks.>", cursor))
        try:
            await wait_until(lambda: roots() == wanted, 20, f"roots {wanted}")
            await wait_until(
                lambda: (
                    cursor.load(current_log_id := cursor.read()[0])[0] is not None
                    and current_log_id is not None
                ),
                10,
                "the cursor",
            )
        finally:
            running.cancel()

    a_roots = [f"invoke_agent a{n}" for n in range(4)]
    await export_until(hub_a, a_roots)
    await wait_until(lambda: cursor.load()[0] == 16, 10, "A's cursor at its head")
    await export_until(hub_b, sorted([*a_roots, "invoke_agent b0"]))
    _, logs = cursor.read()
    log_a, log_b = (await health(hub_a))["logId"], (await health(hub_b))["logId"]
    assert set(logs) == {log_a, log_b}
    await wait_until(lambda: cursor.load(log_b)[0] == 4, 10, "B's cursor")
    assert cursor.load(log_a)[0] == 16  # A's own cursor is kept
    await asyncio.to_thread(record, hub_a, "a4")
    await export_until(hub_a, sorted([*a_roots, "invoke_agent a4", "invoke_agent b0"]))
    ids = [s.context.span_id for s in exporter.get_finished_spans()]
    assert len(ids) == len(set(ids))  # nothing exported twice


async def test_a_follow_of_the_communication_service_starts_over_on_another_log(
    start_hub: Any,
) -> None:
    hub = start_hub()
    await publish_seeds(hub, "f", 3)
    seen: list[dict[str, Any]] = []
    service = CommunicationService(hub.url)
    try:
        service.on(LOG_CHANGED, seen.append)
        service.on("api_action", seen.append)
        service.follow("tasks.f", ResumePoint(50, "sqlite-gone"))
        await wait_until(lambda: len(seen) == 4, 20, "log_changed and three events")
        changed, *events = seen
        assert changed["type"] == LOG_CHANGED and changed["logId"] == (await health(hub))["logId"]
        assert [e["seq"] for e in events] == [1, 2, 3]
        point = service.follow_point("tasks.f")
        assert point is not None and (point.log_id, point.last) == (changed["logId"], 3)
    finally:
        await service.aclose()


async def test_a_webhook_cursor_on_a_stream_made_again_starts_at_its_beginning(
    start_hub: Any, nats_server: NatsServer
) -> None:
    """NATS: the webhook registry (KV) outlives a stream deleted and made again; its
    cursor, a seq of the old stream, must not skip the new one's first events."""
    stream = unique_stream("whlog")
    receiver = await Receiver().start()
    try:
        hub = start_hub("--nats-stream", stream, store=nats_server.url)
        first_log = (await health(hub))["logId"]
        status, created = await add_hook(hub, {"url": receiver.url, "channel": "tasks.>"})
        assert status == 201
        receiver.secret = created["secret"]
        await publish_seeds(hub, "w", 6)
        await receiver.wait_for(6)
        hub.terminate()
        client = await nats.connect(nats_server.url)
        await client.jetstream().delete_stream(stream)  # the KV bucket of records stays
        await client.close()
        hub.restart()
        assert (await health(hub))["logId"] != first_log
        await publish_seeds(hub, "w2", 2)
        await wait_until(lambda: len(receiver.received) == 8, 30, "the new stream's events")
        assert [(r["seq"], r["payload"]["taskId"]) for r in receiver.received[6:]] == [
            (1, "w2"),
            (2, "w2"),
        ]
        (hook,) = await hooks(hub)
        assert hook["logId"] == (await health(hub))["logId"] and hook["cursor"] == 2
        assert "starting from the new log's beginning" in Path(str(hub.log_path)).read_text()
    finally:
        await receiver.stop()


async def test_cluster_nodes_name_one_log_and_a_trailing_node_is_not_ahead(
    start_hub: Any, nats_server: NatsServer
) -> None:
    """Two nodes of one stream: one log id; a subscriber that moves to a node whose feed
    has not yet brought the newest events is not told its seq is ahead of the log."""
    stream = unique_stream("ahead")
    node_a = start_hub("--nats-stream", stream, store=nats_server.url)
    node_b = start_hub("--nats-stream", stream, store=nats_server.url)
    assert (await health(node_a))["logId"] == (await health(node_b))["logId"]
    assert (await health(node_a))["logId"].startswith(f"{stream}@")
    async with aiohttp.ClientSession() as session:
        publisher = await session.ws_connect(node_a.url)
        listener = await session.ws_connect(node_b.url)
        for round_number in range(5):
            acks = await publish_acked(publisher, [seed("c", str(i)) for i in range(200)])
            last = acks[-1]["seq"]
            reply = await raw_subscribe(listener, f"tasks.c{round_number}", since=last)
            assert "ahead" not in reply, (last, reply)
            assert reply["head"] >= last
        # Written to the stream by someone else: node B's feed brings them a little later.
        client = await nats.connect(nats_server.url)
        js = client.jetstream()
        for _ in range(3):
            pub_acks = await asyncio.gather(
                *(js.publish(f"{stream.lower()}.tasks.raw", b"not an envelope") for _ in range(300))
            )
            last = max(ack.seq for ack in pub_acks)
            reply = await raw_subscribe(listener, "tasks.raw", since=last)
            assert "ahead" not in reply, (last, reply)
        await client.close()
        reply = await raw_subscribe(listener, "tasks.c", since=last + 1000)
        assert reply["ahead"] is True  # truly beyond the log
