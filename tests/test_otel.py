"""``taskcast otel`` (issue 13): tasks on a real hub become OpenTelemetry traces — into
the SDK's in-memory exporter, and over OTLP/HTTP to a local receiver — resuming from
the cursor after a cancel or a kill -9, with no span lost or sent twice."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any, cast

from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from taskcast import CommunicationService, TaskRecorder
from taskcast.integrations.otel import Cursor, follow_into
from taskcast.integrations.otel_spans import TraceBuilder, root_span_id_of, trace_id_of
from tests.conftest import REPO
from tests.fake_llm import FakeLLM, Reply
from tests.helpers import wait_until


def record_task(service: CommunicationService, task_id: str) -> None:
    """Two model responses, a tool that works, one that fails, a hand-off."""
    with TaskRecorder(service, task_id, provider="openai", model="gpt-x") as rec:
        rec.api_action("", [("search", {"q": "otters"})])
        rec.usage(10, 4, latency_ms=120, finish_reason="tool_calls")
        rec.tool("search", {"q": "otters"}, "found", duration_ms=30)
        rec.tool("fetch", {"url": "x"}, "HTTP 500", success=False, duration_ms=5)
        rec.handoff("triage", "writer")
        rec.api_action("Otters hold hands.")
        rec.usage(20, 8, latency_ms=200, finish_reason="stop")


def test_a_task_is_a_root_span_with_a_child_per_response_and_tool() -> None:
    builder = TraceBuilder()
    events: list[tuple[str, dict[str, object]]] = [
        ("task_started", {"prompt": "hi", "provider": "openai", "model": "gpt-x"}),
        ("api_action", {"message": "search(q=1)"}),
        ("llm_usage", {"model": "gpt-x", "inputTokens": 10, "outputTokens": 4, "latencyMs": 5}),
        ("tool_executed", {"tool": "search", "success": False, "output": "boom", "durationMs": 3}),
        ("api_action", {"message": "done"}),  # no llm_usage after it: a span all the same
        ("task_failed", {"error": "gave up"}),
    ]
    spans = []
    for seq, (kind, payload) in enumerate(events, start=1):
        frame = {
            "type": kind,
            "seq": seq,
            "payload": {"taskId": "t", "timestamp": 1000 + seq, **payload},
        }
        spans += builder.feed(frame)
    assert [s.name for s in spans] == [
        "chat gpt-x",
        "execute_tool search",
        "chat gpt-x",
        "invoke_agent t",
    ]
    root = spans[-1]
    assert root.parent_id is None and root.error == "gave up"
    assert all(s.parent_id == root.span_id and s.trace_id == root.trace_id for s in spans[:-1])
    assert spans[0].attributes["gen_ai.usage.input_tokens"] == 10
    assert spans[1].error == "boom"
    assert "gen_ai.usage.input_tokens" not in spans[2].attributes
    assert builder.tasks == {}  # nothing kept for an ended task


def test_a_response_keeps_its_usage_when_other_events_come_between() -> None:
    """A Task publishes api_action → history_appended → llm_usage → tool_executed per
    turn: the usage is the response's, not lost to the history event before it."""
    builder = TraceBuilder()
    events: list[tuple[str, dict[str, object]]] = [
        ("task_started", {"provider": "openai", "model": "gpt-x"}),
        ("api_action", {"message": "write(path=a)"}),
        ("history_appended", {"index": 1, "message": {"role": "assistant"}}),
        ("approval_requested", {"requestId": "r1"}),
        ("llm_usage", {"inputTokens": 7, "outputTokens": 3, "responseModel": "gpt-x-1"}),
        ("tool_executed", {"tool": "write", "durationMs": 1}),
        ("history_appended", {"index": 2, "message": {"role": "tool"}}),
        ("api_action", {"message": "done"}),
        ("history_appended", {"index": 3, "message": {"role": "assistant"}}),
        ("llm_usage", {"inputTokens": 9, "outputTokens": 2}),
        ("task_completed", {"result": "done"}),
    ]
    spans = []
    for seq, (kind, payload) in enumerate(events, start=1):
        frame = {"type": kind, "seq": seq, "payload": {"taskId": "t", "timestamp": seq, **payload}}
        spans += builder.feed(frame)
    chats = [s for s in spans if s.name.startswith("chat")]
    assert [c.attributes["gen_ai.usage.input_tokens"] for c in chats] == [7, 9]
    assert [c.attributes["gen_ai.usage.output_tokens"] for c in chats] == [3, 2]
    assert chats[0].attributes["gen_ai.response.model"] == "gpt-x-1"
    assert [c.attributes["taskcast.seq"] for c in chats] == [2, 8]  # each its own response
    assert chats[1].start_ns == 7 * 1_000_000  # sent after the tool's history message


async def test_every_chat_span_of_a_real_task_run_carries_its_usage(
    start_hub: Any, tmp_path: Path, llm: FakeLLM
) -> None:
    """``taskcast run`` against the fake model server, exported as it really publishes."""
    hub = start_hub()
    write = {"id": "w1", "name": "write_to_file", "arguments": {"path": "a.txt", "content": "x"}}
    done = {"id": "d1", "name": "attempt_completion", "arguments": {"result": "wrote a.txt"}}
    llm.replies = [
        Reply(tool_calls=[write], input_tokens=100, output_tokens=20),
        Reply(text="Writing done.", tool_calls=[done], input_tokens=130, output_tokens=9),
    ]
    run = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "taskcast", "run", "write a.txt", *llm.cli_args(),
        "--hub", hub.url, "--approve", "auto", "--task-id", "otel-run",
        "--cwd", str(tmp_path / "work"), "--mkdir", "--history-dir", str(tmp_path / "h"),
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    assert await asyncio.wait_for(run.wait(), 60) == 0
    exporter = InMemorySpanExporter()
    follower = asyncio.create_task(
        follow_into(exporter, hub.url, "tasks.>", Cursor(tmp_path / "cursor.json"))
    )
    try:
        await wait_until(
            lambda: any(s.name.startswith("invoke_agent") for s in exporter.get_finished_spans()),
            20,
            "the task's root span",
        )
    finally:
        follower.cancel()
    chats = [s for s in exporter.get_finished_spans() if s.name.startswith("chat")]
    assert len(chats) == 2
    in_order = sorted(chats, key=lambda s: s.start_time or 0)
    for chat, tokens in zip(in_order, [(100, 20), (130, 9)], strict=True):
        assert chat.attributes is not None
        assert (
            chat.attributes["gen_ai.usage.input_tokens"],
            chat.attributes["gen_ai.usage.output_tokens"],
        ) == tokens
        assert chat.attributes["gen_ai.response.model"]
    (root,) = [s for s in exporter.get_finished_spans() if s.name.startswith("invoke_agent")]
    assert root.attributes is not None and root.attributes["gen_ai.usage.input_tokens"] == 230


async def test_tasks_become_traces_and_a_restart_resumes_from_the_cursor(
    start_hub: Any, tmp_path: Path
) -> None:
    hub = start_hub()
    exporter = InMemorySpanExporter()
    cursor = Cursor(tmp_path / "cursor.json")
    service = CommunicationService(hub.url)
    record_task(service, "otel-1")
    assert await service.aflush(10)
    follower = asyncio.create_task(follow_into(exporter, hub.url, "tasks.>", cursor))

    def names(task_id: str) -> list[str]:
        trace = trace_id_of(task_id)
        return sorted(s.name for s in exporter.get_finished_spans() if s.context.trace_id == trace)

    await wait_until(lambda: "invoke_agent writer" in names("otel-1"), 20, "the first trace")
    assert names("otel-1") == [
        "chat gpt-x",
        "chat gpt-x",
        "execute_tool fetch",
        "execute_tool search",
        "invoke_agent writer",
    ]
    spans = {s.name: s for s in exporter.get_finished_spans()}
    root = spans["invoke_agent writer"]
    assert root.parent is None and root.context.span_id == root_span_id_of("otel-1")
    assert root.attributes is not None and root.attributes["gen_ai.usage.output_tokens"] == 12
    assert [e.name for e in root.events] == ["agent_handoff"]
    failed = spans["execute_tool fetch"]
    assert failed.status.status_code is StatusCode.ERROR
    assert failed.parent is not None and failed.parent.span_id == root.context.span_id
    chat = [s for s in exporter.get_finished_spans() if s.name.startswith("chat")]
    assert {s.attributes["gen_ai.operation.name"] for s in chat if s.attributes} == {"chat"}
    assert sorted(
        cast(int, s.attributes["gen_ai.usage.input_tokens"]) for s in chat if s.attributes
    ) == [
        10,
        20,
    ]
    assert chat[0].end_time is not None and chat[0].start_time is not None
    assert chat[0].end_time - chat[0].start_time == 120 * 1_000_000  # from latencyMs

    # A second task: its first response is exported, then the follower stops mid-task.
    rec = TaskRecorder(service, "otel-2", model="gpt-y")
    rec.start("second")
    rec.api_action("thinking")
    rec.usage(1, 1)
    rec.tool("search", {"q": "x"}, "ok")
    assert await service.aflush(10)
    await wait_until(lambda: "execute_tool search" in names("otel-2"), 20, "otel-2's tool span")
    # 9 events of otel-1, then 4 of otel-2: the cursor is saved after their export.
    await wait_until(lambda: cursor.path.exists() and cursor.load()[0] == 13, 20, "the cursor")
    follower.cancel()
    rec.api_action("done")
    rec.usage(2, 2)
    rec.complete()
    assert await service.aflush(10)
    follower = asyncio.create_task(follow_into(exporter, hub.url, "tasks.>", cursor))
    await wait_until(lambda: "invoke_agent otel-2" in names("otel-2"), 20, "the second trace")
    follower.cancel()
    await service.aclose()
    ids = [s.context.span_id for s in exporter.get_finished_spans()]
    assert len(ids) == len(set(ids)) == 5 + 4  # nothing twice, nothing missing
    (root2,) = [s for s in exporter.get_finished_spans() if s.name == "invoke_agent otel-2"]
    assert root2.attributes is not None and root2.attributes["taskcast.prompt"] == "second"
    assert root2.attributes["gen_ai.usage.input_tokens"] == 3  # counted across the restart


class Receiver:
    """An OTLP/HTTP trace receiver (protobuf), failing its first request with 503."""

    def __init__(self) -> None:
        self.spans: list[Any] = []
        self.requests = 0
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def traces(self, request: web.Request) -> web.Response:
        self.requests += 1
        if self.requests == 1:
            return web.Response(status=503)  # the exporter must retry, not drop
        body = ExportTraceServiceRequest()
        body.ParseFromString(await request.read())
        for resource_spans in body.resource_spans:
            for scope_spans in resource_spans.scope_spans:
                self.spans.extend(scope_spans.spans)
        return web.Response(content_type="application/x-protobuf", body=b"")

    async def start(self) -> Receiver:
        app = web.Application()
        app.router.add_post("/v1/traces", self.traces)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self.runner.addresses[0][1]}"
        return self


async def test_the_cli_exports_over_otlp_http_and_survives_kill_9(
    start_hub: Any, tmp_path: Path
) -> None:
    hub = start_hub()
    receiver = await Receiver().start()
    command = [
        sys.executable,
        "-m",
        "taskcast",
        "otel",
        "--hub",
        hub.url,
        "--endpoint",
        receiver.url,
        "--cursor-file",
        str(tmp_path / "otel.json"),
        "--service-name",
        "agents-test",
    ]
    env = {**os.environ, "OTEL_EXPORTER_OTLP_TIMEOUT": "5"}
    exporter = subprocess.Popen(command, cwd=REPO, env=env, stderr=subprocess.DEVNULL)
    service = CommunicationService(hub.url)
    try:
        record_task(service, "cli-1")
        assert await service.aflush(10)
        await wait_until(lambda: len(receiver.spans) >= 5, 30, "the first trace over OTLP")
        await wait_until(lambda: (tmp_path / "otel.json").exists(), 10, "the cursor file")
        exporter.send_signal(signal.SIGKILL)
        exporter.wait(10)
        record_task(service, "cli-2")
        assert await service.aflush(10)
        exporter = subprocess.Popen(command, cwd=REPO, env=env, stderr=subprocess.DEVNULL)
        await wait_until(lambda: len(receiver.spans) >= 10, 30, "the second trace after kill -9")
    finally:
        exporter.kill()
        exporter.wait(10)
        await service.aclose()
        assert receiver.runner is not None
        await receiver.runner.cleanup()
    ids = [span.span_id for span in receiver.spans]
    assert len(ids) == len(set(ids)) == 10
    roots = [s for s in receiver.spans if not s.parent_span_id]
    assert sorted(s.name for s in roots) == ["invoke_agent writer", "invoke_agent writer"]
    for root in roots:
        children = [s for s in receiver.spans if s.parent_span_id == root.span_id]
        assert len(children) == 4 and all(c.trace_id == root.trace_id for c in children)
    assert receiver.requests >= 3  # the 503 was retried


def test_otel_says_when_the_hub_cannot_be_reached_and_gives_up(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "taskcast", "otel", "--hub", "ws://127.0.0.1:1/ws",
         "--endpoint", "http://127.0.0.1:2", "--cursor-file", str(tmp_path / "c.json"),
         "--connect-timeout", "1.5"],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.count("cannot reach the hub at ws://127.0.0.1:1/ws") == 1  # once
    assert "no connection to ws://127.0.0.1:1/ws within 1.5 s" in done.stderr
