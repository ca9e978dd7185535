"""Monitoring and analytics over HTTP: task summaries, SSE, metrics, CSV (issue 4, tests 3-5)."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from pathlib import Path
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from taskcast.client import CommunicationService
from taskcast.summaries import TaskSummaries
from taskcast.task import ScriptedProvider, Task
from tests.helpers import publish_acked, seed, subscribe

DONE = {"name": "attempt_completion", "arguments": {"result": "all good"}}


async def run_task(url: str, tmp_path: Path, task_id: str, script: list[dict[str, Any]]) -> str:
    service = CommunicationService(url)
    task = Task(
        ScriptedProvider(script),
        communication_service=service,
        task_id=task_id,
        cwd=tmp_path,
        history_dir=tmp_path / ".h",
        approval="auto",
        retry_base_delay=0.01,
        max_retries=1,
    )
    running = asyncio.create_task(task.run("do it"))
    if task_id.startswith("aborted"):
        await asyncio.sleep(0.3)
        task.abort()
    result = await running
    assert await service.aflush(10)
    await service.aclose()
    return result.status


async def test_task_summaries_for_completed_failed_and_aborted(
    start_hub: Any, tmp_path: Path
) -> None:
    hub = start_hub()
    usage = {"input_tokens": 100, "output_tokens": 10, "cached_tokens": 5}
    statuses = await asyncio.gather(
        run_task(
            hub.url,
            tmp_path / "a",
            "completed-1",
            [
                {
                    "text": "listing",
                    "tool_calls": [{"name": "list_files", "arguments": {}}],
                    "usage": usage,
                },
                {
                    "text": "reading",
                    "tool_calls": [{"name": "read_file", "arguments": {"path": "nope"}}],
                    "usage": usage,
                },
                {"text": "done", "tool_calls": [DONE], "usage": usage},
            ],
        ),
        run_task(
            hub.url,
            tmp_path / "b",
            "failed-1",
            [
                {
                    "text": "trying",
                    "tool_calls": [{"name": "list_files", "arguments": {}}],
                    "usage": usage,
                },
                {"error": "boom", "transient": False},
            ],
        ),
        run_task(
            hub.url,
            tmp_path / "c",
            "aborted-1",
            [
                {
                    "text": "slow",
                    "tool_calls": [{"name": "list_files", "arguments": {}}],
                    "usage": usage,
                },
                {"text": "never", "tool_calls": [DONE], "delay": 10},
            ],
        ),
    )
    # typeshed types gather()'s result as a tuple; it is a list.
    assert statuses == ["completed", "failed", "aborted"]  # type: ignore[comparison-overlap]
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{hub.http}/api/tasks") as response:
            tasks = {t["taskId"]: t for t in await response.json()}
        completed, failed, aborted = tasks["completed-1"], tasks["failed-1"], tasks["aborted-1"]
        assert completed["status"] == "completed" and completed["result"] == "all good"
        assert completed["apiActions"] == 3 and completed["toolCalls"] == 3
        assert completed["toolFailures"] == 1
        assert (completed["inputTokens"], completed["outputTokens"]) == (300, 30)
        assert completed["durationMs"] >= 0 and completed["endedAt"] is not None
        assert completed["provider"] == "scripted"
        assert (
            failed["status"] == "failed" and "boom" in failed["error"] and failed["apiActions"] == 1
        )
        assert aborted["status"] == "aborted" and aborted["apiActions"] == 1
        async with session.get(f"{hub.http}/api/tasks", params={"status": "failed"}) as response:
            assert [t["taskId"] for t in await response.json()] == ["failed-1"]
        async with session.get(
            f"{hub.http}/api/tasks/completed-1", params={"limit": 3}
        ) as response:
            detail = await response.json()
        assert detail["task"]["taskId"] == "completed-1"
        assert [e["type"] for e in detail["events"]] == [
            "task_started",
            "history_appended",
            "api_action",
        ]
        async with session.get(
            f"{hub.http}/api/tasks/completed-1", params={"since": detail["nextSince"]}
        ) as response:
            rest = (await response.json())["events"]
        assert rest[-1]["type"] == "task_completed"
        assert len(rest) + 3 == completed["events"]
        async with session.get(f"{hub.http}/api/tasks/nobody") as response:
            assert response.status == 404 and (await response.json())["code"] == "not_found"

    # Summaries are rebuilt from the log after a restart.
    hub.terminate()
    hub.restart()
    async with aiohttp.ClientSession() as session, session.get(f"{hub.http}/api/tasks") as response:
        again = {t["taskId"]: t for t in await response.json()}
    assert again == tasks  # every task has ended, so even durationMs is fixed


def test_summaries_fold_events_in_order() -> None:
    summaries = TaskSummaries()

    def body(kind: str, **payload: Any) -> bytes:
        return json.dumps({"type": kind, "payload": {"taskId": "t", **payload}}).encode()

    summaries.observe(1, 1000, "task_started", "t", "agent", body("task_started", model="m"))
    summaries.observe(2, 1500, "api_action", "t", "agent", b"{}")
    summaries.observe(
        3, 1600, "llm_usage", "t", "agent", body("llm_usage", inputTokens=7, outputTokens=2)
    )
    summaries.observe(4, 1700, "tool_executed", "t", "agent", body("tool_executed", success=False))
    summaries.observe(5, 2500, "task_completed", "t", "agent", body("task_completed", result="ok"))
    summaries.observe(6, 2600, "note", None, None, b"{}")
    task = summaries.get("t")
    assert task is not None
    view = task.to_json(now_ms=9999)
    assert view["status"] == "completed" and view["durationMs"] == 1500
    assert (view["apiActions"], view["toolCalls"], view["toolFailures"]) == (1, 1, 1)
    assert (view["inputTokens"], view["outputTokens"], view["model"]) == (7, 2, "m")
    assert len(summaries.tasks) == 1
    # Running, the duration goes on with the clock; known only from other events, it
    # lasted until the last one (not until whenever someone asks).
    summaries.observe(7, 3000, "task_started", "r", "agent", body("task_started"))
    summaries.observe(8, 4000, "api_action", "seed", "agent", b"{}")
    summaries.observe(9, 4200, "api_action", "seed", "agent", b"{}")
    running, seed_only = summaries.get("r"), summaries.get("seed")
    assert running is not None and seed_only is not None
    assert running.to_json(now_ms=9000)["durationMs"] == 6000
    assert seed_only.to_json(now_ms=9000)["durationMs"] == 200
    assert seed_only.to_json(now_ms=99_000_000)["durationMs"] == 200


def test_a_lost_runner_makes_a_task_lost_until_something_runs_it_again() -> None:
    from taskcast.leases import Lapse, Lease, lapse_of, runner_lost_id

    summaries = TaskSummaries()
    started = json.dumps({"payload": {"taskId": "t", "model": "m"}}).encode()
    summaries.observe(1, 1000, "task_started", "t", "agent", started)
    summaries.observe(2, 1100, "runner_lost", "t", "taskcast-hub", b'{"payload":{}}')
    task = summaries.get("t")
    assert task is not None and task.to_json(0)["status"] == "lost"
    summaries.observe(3, 1200, "task_started", "t", "agent-b", started)
    summaries.observe(4, 1300, "task_resumed", "t", "agent-b", b'{"payload":{}}')
    assert task.status == "running"
    summaries.observe(5, 1400, "runner_lost", "t", "taskcast-hub", b'{"payload":{}}')
    summaries.observe(6, 1500, "api_action", "t", "agent-b", b"{}")  # it was only cut off
    assert task.status == "running"
    summaries.observe(7, 1600, "task_completed", "t", "agent-b", b'{"payload":{}}')
    summaries.observe(8, 1700, "runner_lost", "t", "taskcast-hub", b'{"payload":{}}')
    assert task.status == "completed"  # an ended task is never lost

    lease = Lease("t", "host:1:abc", expires_at=2000, acquired_at=1000)
    assert lapse_of(lease, 1999, task_ended=False) is Lapse.KEEP
    assert lapse_of(lease, 2000, task_ended=False) is Lapse.REPORT
    assert lapse_of(lease, 2000, task_ended=True) is Lapse.FORGET
    assert runner_lost_id(lease) == "runner-lost-t-1000"  # every hub node names it alike


async def read_sse(
    response: aiohttp.ClientResponse, count: int
) -> list[tuple[str | None, dict[str, Any]]]:
    """Parse SSE until ``count`` events with an id arrived; (id, data) pairs."""
    events: list[tuple[str | None, dict[str, Any]]] = []
    event_id: str | None = None
    data: list[str] = []
    async with asyncio.timeout(20):
        while len([e for e in events if e[0] is not None]) < count:
            line = (await response.content.readline()).decode().rstrip("\n")
            if line.startswith("id: "):
                event_id = line[4:]
            elif line.startswith("data: "):
                data.append(line[6:])
            elif line == "" and data:
                events.append((event_id, json.loads("\n".join(data))))
                event_id, data = None, []
    return events


async def test_sse_resumes_with_last_event_id(start_hub: Any) -> None:
    hub = start_hub()
    async with aiohttp.ClientSession() as session:
        publisher = await session.ws_connect(hub.url)
        await publish_acked(publisher, [seed("s1", f"m{i}") for i in range(5)])
        stream = f"{hub.http}/api/events/stream"
        async with session.get(stream, params={"channel": "tasks.>", "since": 0}) as response:
            assert response.headers["Content-Type"].startswith("text/event-stream")
            first = await read_sse(response, 5)
        assert first[0][1]["type"] == "subscribed"
        delivered = [(i, d["seq"]) for i, d in first if i is not None]
        assert delivered == [(str(n), n) for n in range(1, 6)]
        # Missed while disconnected:
        await publish_acked(publisher, [seed("s1", f"later{i}") for i in range(4)])
        await publish_acked(publisher, [{"type": "note", "payload": {}, "channel": "other.x"}])
        async with session.get(
            stream, params={"channel": "tasks.>"}, headers={"Last-Event-ID": "5"}
        ) as response:
            resumed = await read_sse(response, 4)
            await publish_acked(publisher, [seed("s1", "live")])
            live = await read_sse(response, 1)
        assert [d["payload"]["message"] for i, d in resumed if i] == [f"later{i}" for i in range(4)]
        assert [d["payload"]["message"] for i, d in live if i] == ["live"]
        assert [d["seq"] for i, d in live if i] == [11]


def metric_values(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    values = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            values[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return values


async def test_metrics_parse_and_move(start_hub: Any) -> None:
    hub = start_hub()
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{hub.http}/metrics") as response:
            assert response.status == 200
            before = metric_values(await response.text())
        listener = await session.ws_connect(hub.url)
        await subscribe(listener, "tasks.>", since=0)
        publisher = await session.ws_connect(hub.url)
        await publish_acked(publisher, [seed("m", str(i)) for i in range(7)])
        await publish_acked(publisher, [seed("m", "again", id="dup"), seed("m", "again", id="dup")])
        await publisher.send_str("not json")
        await asyncio.sleep(0.3)
        async with session.get(f"{hub.http}/metrics") as response:
            after = metric_values(await response.text())
    published = ("taskcast_events_published_total", (("type", "api_action"),))
    delivered = ("taskcast_events_delivered_total", (("type", "api_action"),))
    assert before.get(published, 0) == 0 and after[published] == 8
    assert after[delivered] == 8
    assert after[("taskcast_events_duplicate_total", ())] == 1
    assert after[("taskcast_frames_rejected_total", (("code", "bad_json"),))] == 1
    assert after[("taskcast_replays_total", ())] == 1
    assert after[("taskcast_connections", ())] == 2
    assert after[("taskcast_publishers", ())] == 1 and after[("taskcast_subscribers", ())] == 1
    assert after[("taskcast_store_commit_seconds_count", ())] >= 1
    assert after[("taskcast_log_head_seq", ())] == 8


async def test_csv_export(start_hub: Any) -> None:
    hub = start_hub()
    async with aiohttp.ClientSession() as session:
        publisher = await session.ws_connect(hub.url)
        await publish_acked(publisher, [seed("c", 'quote " and, comma'), seed("c", "two")])
        async with session.get(f"{hub.http}/api/events", params={"format": "csv"}) as response:
            assert response.content_type == "text/csv"
            rows = list(csv.DictReader(io.StringIO(await response.text())))
    assert [r["seq"] for r in rows] == ["1", "2"]
    assert json.loads(rows[0]["payload"])["message"] == 'quote " and, comma'
    assert rows[0]["taskId"] == "c" and rows[0]["type"] == "api_action"


def test_a_task_seen_only_through_api_action_is_active_then_idle() -> None:
    from taskcast.summaries import IDLE_AFTER_MS, TaskSummaries

    summaries = TaskSummaries()
    seed_body = b'{"type":"api_action","payload":{"taskId":"s","message":"m","timestamp":1}}'
    summaries.observe(1, 1_000, "api_action", "s", None, seed_body, "tasks.s")
    summary = summaries.get("s")
    assert summary is not None
    assert summary.to_json(2_000)["status"] == "active"  # not "running": nothing says so
    quiet = 1_000 + IDLE_AFTER_MS + 1
    assert summary.to_json(quiet)["status"] == "idle"
    assert [s.task_id for s in summaries.listing("idle", now_ms=quiet)] == ["s"]
    started = b'{"type":"task_started","payload":{"taskId":"s"}}'
    summaries.observe(2, quiet, "task_started", "s", None, started, "tasks.s")
    assert summary.to_json(quiet + IDLE_AFTER_MS * 2)["status"] == "running"


def test_run_says_when_its_tools_were_denied(tmp_path: Path) -> None:
    import subprocess
    import sys

    from tests.conftest import REPO

    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "taskcast",
            "run",
            "write hello.txt",
            "--cwd",
            str(tmp_path),
            "--history-dir",
            str(tmp_path / ".h"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert out.returncode == 3, out.stdout + out.stderr  # completed, but tools were denied
    assert "replays the demo script, not your prompt" in out.stderr
    assert "2 tool call(s) were denied and did not run: execute_command, write_to_file" in (
        " ".join(out.stdout.split())
    )
    assert not (tmp_path / "hello.py").exists()
