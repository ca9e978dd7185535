"""The Task and the seed contract (issue 3, tests 1-5 and 9), with scripted providers."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from taskcast.task import ApprovalPolicy, AssistantTurn, ScriptedProvider, Task, ToolCall
from taskcast.task.tools import ToolContext, confine, run_tool

SCRIPT: list[dict[str, Any]] = [
    {
        "text": "Writing the file.",
        "tool_calls": [
            {"name": "write_to_file", "arguments": {"path": "out/a.txt", "content": "alpha\n"}}
        ],
        "usage": {"input_tokens": 10, "output_tokens": 3},
    },
    {
        "text": "",
        "tool_calls": [{"name": "execute_command", "arguments": {"command": "cat out/a.txt"}}],
        "usage": {"input_tokens": 20, "output_tokens": 4},
    },
    {
        "text": "Done.",
        "tool_calls": [{"name": "attempt_completion", "arguments": {"result": "wrote a.txt"}}],
    },
]


class RecordingService:
    """A fast service that declares itself non-blocking, so the Task calls it inline:
    what it sees of the history is exactly the history at the moment of the call."""

    nonblocking = True

    def __init__(self, task_ref: list[Task]) -> None:
        self.messages: list[dict[str, Any]] = []
        self.history_at_send: list[list[dict[str, Any]]] = []
        self.task_ref = task_ref

    def send_message(self, message: dict[str, Any]) -> None:
        self.messages.append(message)
        if message["type"] == "api_action":
            self.history_at_send.append(list(self.task_ref[0].api_conversation_history))


def make_task(tmp_path: Path, script: list[dict[str, Any]], **options: Any) -> Task:
    workdir = tmp_path / "work"
    workdir.mkdir(parents=True, exist_ok=True)
    return Task(
        ScriptedProvider(script),
        cwd=workdir,
        history_dir=tmp_path / "history",
        approval="auto",
        retry_base_delay=0.01,
        **options,
    )


async def wait_for(predicate: Any, timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def test_one_api_action_per_response_with_exact_keys(tmp_path: Path) -> None:
    ref: list[Task] = []
    service = RecordingService(ref)
    task = make_task(tmp_path, SCRIPT, communication_service=service)
    ref.append(task)
    result = await task.run("write a file")
    assert result.status == "completed" and result.result == "wrote a.txt"
    await wait_for(lambda: any(m["type"] == "task_completed" for m in service.messages))
    actions = [m for m in service.messages if m["type"] == "api_action"]
    assert len(actions) == 3
    for action, history in zip(actions, service.history_at_send, strict=True):
        assert set(action) == {"type", "payload"}
        payload = action["payload"]
        assert set(payload) == {"taskId", "message", "timestamp"}
        assert payload["taskId"] == task.task_id
        assert isinstance(payload["message"], str) and payload["message"]
        assert type(payload["timestamp"]) is int
        assert abs(payload["timestamp"] - time.time() * 1000) < 60_000
        # The assistant message is already in the history when send_message is called.
        assert history[-1]["role"] == "assistant"
    assert [h[-1]["content"] for h in service.history_at_send] == ["Writing the file.", "", "Done."]
    types = [m["type"] for m in service.messages]
    assert types[0] == "task_started" and types[-1] == "task_completed"
    assert types.count("tool_executed") == 3 and types.count("llm_usage") == 3
    # api_action comes right after its response, before the tools run; the history
    # message that lets followers rebuild the conversation comes after it.
    core = [t for t in types if t != "history_appended"]
    assert core[1:4] == ["api_action", "llm_usage", "tool_executed"]
    for index, kind in enumerate(types):
        if kind == "api_action":
            assert types[index + 1] == "history_appended"
    assert types[1] == "history_appended"  # the prompt, after task_started
    usage = next(m for m in service.messages if m["type"] == "llm_usage")["payload"]
    assert usage["inputTokens"] == 10 and usage["outputTokens"] == 3
    assert usage["provider"] == "scripted" and usage["finishReason"] == "tool_calls"


async def test_without_a_service_the_task_behaves_the_same(tmp_path: Path) -> None:
    ref: list[Task] = []
    with_service = make_task(tmp_path / "a", SCRIPT, communication_service=RecordingService(ref))
    ref.append(with_service)
    without = make_task(tmp_path / "b", SCRIPT, task_id=with_service.task_id)
    first, second = await with_service.run("go"), await without.run("go")
    assert (first.status, first.result, first.turns) == (second.status, second.result, second.turns)
    assert with_service.api_conversation_history == without.api_conversation_history
    assert (tmp_path / "a/work/out/a.txt").read_text() == (
        tmp_path / "b/work/out/a.txt"
    ).read_text()
    saved_file = tmp_path / "b/history" / without.task_id / "api_conversation_history.jsonl"
    saved = [json.loads(line) for line in saved_file.read_text().splitlines()]
    assert saved == without.api_conversation_history


class RaisingService:
    def __init__(self) -> None:
        self.calls = 0

    def send_message(self, message: dict[str, Any]) -> None:
        self.calls += 1
        raise ConnectionError("hub unreachable")


class BlockingService:
    def __init__(self) -> None:
        self.release = threading.Event()

    def send_message(self, message: dict[str, Any]) -> None:
        self.release.wait(30)


async def test_a_raising_service_never_breaks_the_task(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    service = RaisingService()
    task = make_task(tmp_path, SCRIPT, communication_service=service)
    with caplog.at_level(logging.WARNING, logger="taskcast.task"):
        result = await task.run("go")
        await wait_for(lambda: service.calls >= 3)
    assert result.status == "completed"
    assert "communication service failed to send" in caplog.text
    assert "hub unreachable" in caplog.text


async def test_a_blocking_service_never_slows_the_task(tmp_path: Path) -> None:
    service = BlockingService()
    task = make_task(tmp_path, SCRIPT, communication_service=service)
    started = time.monotonic()
    result = await task.run("go")
    elapsed = time.monotonic() - started
    service.release.set()
    assert result.status == "completed"
    assert elapsed < 5  # each send blocks up to 30 s; the task never waits for it


class AsyncBlockingService:
    async def send_message(self, message: dict[str, Any]) -> None:
        await asyncio.sleep(30)


async def test_an_async_service_that_never_returns_does_not_block(tmp_path: Path) -> None:
    task = make_task(tmp_path, SCRIPT, communication_service=AsyncBlockingService())
    result = await asyncio.wait_for(task.run("go"), 5)
    assert result.status == "completed"


async def test_failed_requests_send_no_api_action_then_fail(tmp_path: Path) -> None:
    ref: list[Task] = []
    service = RecordingService(ref)
    script = [
        SCRIPT[0],
        {"error": "503 overloaded", "transient": True, "times": 2},
        SCRIPT[1],
        {"error": "503 overloaded", "transient": True, "times": 10},
        SCRIPT[2],
    ]
    task = make_task(tmp_path, script, communication_service=service, max_retries=3)
    ref.append(task)
    result = await task.run("go")
    await wait_for(lambda: any(m["type"] == "task_failed" for m in service.messages))
    assert result.status == "failed" and "503 overloaded" in result.error
    types = [m["type"] for m in service.messages]
    assert types.count("api_action") == 2  # the two successful responses only
    assert types.count("api_retry") == 2 + 3
    failed = service.messages[-1]
    assert failed["type"] == "task_failed" and "503" in failed["payload"]["error"]


async def test_a_permanent_error_is_not_retried(tmp_path: Path) -> None:
    script = [{"error": "400 bad request", "transient": False, "times": 1}, SCRIPT[2]]
    result = await make_task(tmp_path, script).run("go")
    assert result.status == "failed" and result.turns == 0


async def test_tool_only_response_gets_a_readable_message(tmp_path: Path) -> None:
    ref: list[Task] = []
    service = RecordingService(ref)
    task = make_task(tmp_path, SCRIPT, communication_service=service)
    ref.append(task)
    await task.run("go")
    await wait_for(lambda: len([m for m in service.messages if m["type"] == "api_action"]) == 3)
    second = [m for m in service.messages if m["type"] == "api_action"][1]["payload"]["message"]
    assert second == 'execute_command(command="cat out/a.txt")'


async def test_payload_builder_reshapes_the_payload(tmp_path: Path) -> None:
    ref: list[Task] = []
    service = RecordingService(ref)

    def builder(payload: dict[str, Any], turn: AssistantTurn) -> dict[str, Any]:
        return {**payload, "tools": [call.name for call in turn.tool_calls], "team": "blue"}

    task = make_task(tmp_path, SCRIPT, communication_service=service, payload_builder=builder)
    ref.append(task)
    await task.run("go")
    await wait_for(lambda: len([m for m in service.messages if m["type"] == "api_action"]) == 3)
    first = next(m for m in service.messages if m["type"] == "api_action")["payload"]
    assert first["tools"] == ["write_to_file"] and first["team"] == "blue"
    assert {"taskId", "message", "timestamp"} <= set(first)


async def test_abort_stops_a_running_task(tmp_path: Path) -> None:
    ref: list[Task] = []
    service = RecordingService(ref)
    slow = [{**SCRIPT[0], "delay": 10}, SCRIPT[2]]
    task = make_task(tmp_path, slow, communication_service=service)
    ref.append(task)
    running = asyncio.create_task(task.run("go"))
    await asyncio.sleep(0.2)
    threading.Thread(target=task.abort).start()
    result = await asyncio.wait_for(running, 5)
    assert result.status == "aborted"
    await wait_for(lambda: service.messages[-1]["type"] == "task_aborted")
    assert not any(m["type"] == "api_action" for m in service.messages)


async def test_resume_continues_from_saved_history(tmp_path: Path) -> None:
    interrupted = make_task(tmp_path, SCRIPT[:1], max_turns=1)
    first = await interrupted.run("go")
    assert first.status == "failed"  # turn limit reached after one turn
    resumed = Task.resume(
        interrupted.task_id,
        ScriptedProvider(SCRIPT),
        history_dir=tmp_path / "history",
        cwd=tmp_path / "work",
        approval="auto",
    )
    assert len(resumed.api_conversation_history) == 3  # user, assistant, tool
    second = await resumed.run()
    assert second.status == "completed" and second.turns == 2


async def test_denied_tools_are_reported_to_the_model(tmp_path: Path) -> None:
    task = make_task(tmp_path, SCRIPT)
    task.approval = ApprovalPolicy("read-only")  # nobody to ask: writes are denied
    result = await task.run("go")
    assert result.status == "completed"
    tool_messages = [m for m in task.api_conversation_history if m["role"] == "tool"]
    assert tool_messages[0]["is_error"] and "denied" in tool_messages[0]["content"]
    assert not (tmp_path / "work/out/a.txt").exists()


def test_run_sync(tmp_path: Path) -> None:
    assert make_task(tmp_path, SCRIPT).run_sync("go").status == "completed"


@pytest.mark.parametrize(
    "escape", ["../outside.txt", "/etc/passwd", "sub/../../x", "link/x", "link"]
)
async def test_paths_are_confined_to_the_working_directory(tmp_path: Path, escape: str) -> None:
    workdir = tmp_path / "work"
    (workdir / "sub").mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "x").write_text("secret")
    os.symlink(outside, workdir / "link")
    ctx = ToolContext(workdir.resolve())
    for tool, args in [
        ("read_file", {"path": escape}),
        ("write_to_file", {"path": escape, "content": "pwned"}),
        ("replace_in_file", {"path": escape, "search": "secret", "replace": "pwned"}),
        ("list_files", {"path": escape}),
        ("search_files", {"path": escape, "regex": "secret"}),
    ]:
        result = await run_tool(ctx, tool, args)
        assert result.is_error, (tool, escape, result)
        assert "secret" not in result.content
    assert (outside / "x").read_text() == "secret"
    assert not (tmp_path / "outside.txt").exists()


def test_confine_accepts_paths_inside(tmp_path: Path) -> None:
    root = tmp_path.resolve()
    assert confine(root, "a/b/../c.txt") == root / "a" / "c.txt"
    assert confine(root, ".") == root


async def test_tools_do_their_jobs(tmp_path: Path) -> None:
    ctx = ToolContext(tmp_path.resolve(), command_timeout=1, max_output_bytes=100)
    assert not (
        await run_tool(ctx, "write_to_file", {"path": "d/f.py", "content": "x = 1\n"})
    ).is_error
    assert (await run_tool(ctx, "read_file", {"path": "d/f.py"})).content == "x = 1\n"
    replaced = await run_tool(
        ctx, "replace_in_file", {"path": "d/f.py", "search": "1", "replace": "2"}
    )
    assert not replaced.is_error and (tmp_path / "d/f.py").read_text() == "x = 2\n"
    assert "d/f.py" in (await run_tool(ctx, "list_files", {"recursive": True})).content
    assert "d/f.py:1: x = 2" in (await run_tool(ctx, "search_files", {"regex": r"x = \d"})).content
    ran = await run_tool(ctx, "execute_command", {"command": "echo hi; exit 3"})
    assert ran.is_error and "exit code 3" in ran.content and "hi" in ran.content
    slow = await run_tool(ctx, "execute_command", {"command": "sleep 5"})
    assert slow.is_error and "timed out" in slow.content
    loud = await run_tool(ctx, "execute_command", {"command": "yes | head -c 100000"})
    assert loud.truncated and len(loud.content) < 300
    assert (await run_tool(ctx, "nope", {})).is_error
    asked = await run_tool(ctx, "ask_followup_question", {"question": "which?"})
    assert "no user" in asked.content
    done = await run_tool(ctx, "attempt_completion", {"result": "ok"})
    assert done.completed


def test_approval_modes() -> None:
    write = ToolCall("1", "write_to_file", {})
    read = ToolCall("2", "read_file", {})
    finish = ToolCall("3", "attempt_completion", {})
    assert not ApprovalPolicy("auto").needs_confirmation(write)
    assert ApprovalPolicy("read-only").needs_confirmation(write)
    assert not ApprovalPolicy("read-only").needs_confirmation(read)
    assert ApprovalPolicy("ask").needs_confirmation(read)
    assert not ApprovalPolicy("ask").needs_confirmation(finish)
    with pytest.raises(ValueError):
        ApprovalPolicy("sometimes")


async def test_history_is_append_only_json_lines_and_old_json_is_read(tmp_path: Path) -> None:
    import os as _os
    import stat as _stat

    task = make_task(tmp_path, SCRIPT)
    await task.run("write a file")
    saved = tmp_path / "history" / task.task_id / "api_conversation_history.jsonl"
    lines = saved.read_text().splitlines()
    assert [json.loads(line) for line in lines] == task.api_conversation_history
    assert _stat.S_IMODE(_os.stat(saved).st_mode) == 0o600
    # A history saved by an older taskcast (one JSON document) is resumed and converted.
    old_dir = tmp_path / "history" / "old-task"
    old_dir.mkdir(parents=True)
    (old_dir / "api_conversation_history.json").write_text(
        json.dumps(task.api_conversation_history)
    )
    resumed = Task.resume(
        "old-task",
        ScriptedProvider([{"text": "Done.", "tool_calls": []}]),
        history_dir=tmp_path / "history",
        cwd=tmp_path,
        approval="auto",
    )
    assert resumed.api_conversation_history == task.api_conversation_history
    await resumed.run("one more thing")
    converted = (old_dir / "api_conversation_history.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in converted] == resumed.api_conversation_history
    assert not (old_dir / "api_conversation_history.json").exists()
