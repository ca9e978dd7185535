"""Remote orchestration (issue 10): approve, deny, answer, abort and steer a running Task
through a real hub process, with the model served by the fake OpenAI-compatible server."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp

from taskcast.client import CommunicationService
from taskcast.commands import CommandAction, Rejection, RequestKind
from taskcast.task import OpenAIChatProvider, Task, TaskResult
from taskcast.task.remote import Command, RemoteControl
from tests.conftest import REPO, HubProcess
from tests.fake_llm import FakeLLM, Reply
from tests.helpers import bearer, publish_acked, token, wait_for_event

JSON = {"Content-Type": "application/json"}
WRITE = {"id": "c1", "name": "write_to_file", "arguments": {"path": "out.txt", "content": "hi"}}
DONE = {"id": "c2", "name": "attempt_completion", "arguments": {"result": "finished"}}


def make_task(llm: FakeLLM, service: CommunicationService, tmp_path: Path, **options: Any) -> Task:
    provider = OpenAIChatProvider("gpt-test", base_url=f"{llm.base}/v1", api_key="k", stream=False)
    return Task(
        provider,
        communication_service=service,
        cwd=tmp_path,
        history_dir=tmp_path / ".h",
        **{"approval": "remote", **options},
    )


async def wait_pending(
    hub: HubProcess, task_id: str, headers: dict[str, str] | None = None, count: int = 1
) -> list[dict[str, Any]]:
    """Wait until the hub lists ``count`` open requests for the task."""
    async with aiohttp.ClientSession() as session, asyncio.timeout(20):
        while True:
            async with session.get(
                f"{hub.http}/api/pending?taskId={task_id}", headers=headers or {}
            ) as r:
                found: list[dict[str, Any]] = await r.json()
            if len(found) >= count:
                return found
            await asyncio.sleep(0.05)


async def command(
    hub: HubProcess, task_id: str, body: dict[str, Any], headers: dict[str, str] | None = None
) -> tuple[int, dict[str, Any]]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{hub.http}/api/tasks/{task_id}/commands",
            data=json.dumps(body),
            headers={**JSON, **(headers or {})},
        ) as r,
    ):
        return r.status, await r.json()


async def task_events(
    hub: HubProcess, task_id: str, headers: dict[str, str] | None = None
) -> list[dict[str, Any]]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{hub.http}/api/events?channel=tasks.{task_id}", headers=headers or {}) as r,
    ):
        events: list[dict[str, Any]] = await r.json()
        return events


def tool_messages(llm: FakeLLM, request: int) -> list[dict[str, Any]]:
    return [m for m in llm.requests[request]["messages"] if m["role"] == "tool"]


async def test_remote_approval_runs_the_tool_and_names_the_approver(
    secure_hub: Any, llm: FakeLLM, tmp_path: Path
) -> None:
    hub = secure_hub()
    llm.replies = [Reply(tool_calls=[WRITE]), Reply(tool_calls=[DONE])]
    agent = token(["tasks.>"], ["control.>"], subject="agent")
    approver = bearer(token(subscribe=["tasks.>"], control=["control.>"], subject="alice"))
    service = CommunicationService(hub.url, token=agent)
    task = make_task(llm, service, tmp_path, task_id="t-approve")
    running = asyncio.create_task(task.run("write out.txt"))
    (request,) = await wait_pending(hub, "t-approve", approver)
    assert request["kind"] == "approval" and request["tool"] == "write_to_file"
    assert request["arguments"] == WRITE["arguments"]  # the full arguments
    assert task.pending()[0]["requestId"] == request["requestId"]
    assert not (tmp_path / "out.txt").exists()
    # The CLI, as an approver would use it (no REQUEST_ID: the only pending one).
    env = {**os.environ, "TASKCAST_HUB": hub.url, "TASKCAST_TOKEN": approver["Authorization"][7:]}
    listing = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "taskcast", "pending", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert json.loads(listing.stdout)[0]["requestId"] == request["requestId"]
    approved = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "taskcast", "approve", "t-approve"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert approved.returncode == 0, approved.stderr
    result: TaskResult = await asyncio.wait_for(running, 20)
    assert result.status == "completed"
    assert (tmp_path / "out.txt").read_text() == "hi"
    assert await service.aflush(10)
    await service.aclose()
    events = await task_events(hub, "t-approve", approver)
    resolved = [e for e in events if e["type"] == "approval_resolved"]
    assert len(resolved) == 1
    assert resolved[0]["payload"] | {"timestamp": 0} == {
        "taskId": "t-approve",
        "requestId": request["requestId"],
        "decision": "approve",
        "by": "alice",  # the token's sub, recorded by the hub
        "reason": None,
        "timestamp": 0,
    }
    assert await wait_pending(hub, "t-approve", approver, count=0) == []


async def test_denial_timeout_and_forbidden_commands(
    secure_hub: Any, llm: FakeLLM, tmp_path: Path
) -> None:
    hub = secure_hub()
    agent = token(["tasks.>"], ["control.>"], subject="agent")
    approver = bearer(token(subscribe=["tasks.>"], control=["control.>"], subject="bob"))
    publisher_only = bearer(token(["control.>", "tasks.>"], ["tasks.>"], subject="mallory"))
    llm.replies = [Reply(tool_calls=[WRITE]), Reply(tool_calls=[WRITE]), Reply(tool_calls=[DONE])]
    service = CommunicationService(hub.url, token=agent)
    task = make_task(llm, service, tmp_path, task_id="t-deny", approval_timeout=3)
    running = asyncio.create_task(task.run("write out.txt twice"))
    (request,) = await wait_pending(hub, "t-deny", approver)
    # Publishing rights are not control rights: refused over HTTP and the websocket.
    status, body = await command(
        hub, "t-deny", {"action": "approve", "requestId": request["requestId"]}, publisher_only
    )
    assert status == 403 and body["code"] == "forbidden"
    async with aiohttp.ClientSession() as session:
        ws = await session.ws_connect(hub.url, headers=publisher_only)
        (refused,) = await publish_acked(
            ws,
            [
                {
                    "type": "task_command",
                    "payload": {"taskId": "t-deny", "action": "abort"},
                }
            ],
        )
        assert refused["code"] == "forbidden"
        # Malformed commands are refused before anything is stored.
        (bad,) = await publish_acked(
            ws, [{"type": "task_command", "payload": {"taskId": "t-deny", "action": "explode"}}]
        )
        assert bad["code"] == "invalid_event"
    status, _ = await command(
        hub,
        "t-deny",
        {"action": "deny", "requestId": request["requestId"], "reason": "not now"},
        approver,
    )
    assert status == 200
    # The second write request is left to time out (3 s): a denial with reason timeout.
    result = await asyncio.wait_for(running, 30)
    assert result.status == "completed"
    assert not (tmp_path / "out.txt").exists()
    first, second = tool_messages(llm, 1)[0], tool_messages(llm, 2)[-1]
    assert "denied by bob (not now)" in first["content"]
    assert "denied by taskcast (timeout)" in second["content"]
    assert await service.aflush(10)
    await service.aclose()
    events = await task_events(hub, "t-deny", approver)
    decisions = [
        (e["payload"]["decision"], e["payload"]["by"], e["payload"]["reason"])
        for e in events
        if e["type"] == "approval_resolved"
    ]
    assert decisions == [("deny", "bob", "not now"), ("deny", "taskcast", "timeout")]


async def test_two_approvers_one_decision_and_late_commands(
    start_hub: Any, llm: FakeLLM, tmp_path: Path
) -> None:
    hub = start_hub()
    # The model's next answer waits until the task has answered both commands: a task
    # that ended first would leave the second to the hub ("task_ended", tested below).
    both_answered = asyncio.Event()
    llm.replies = [Reply(tool_calls=[WRITE]), Reply(tool_calls=[DONE], hold=both_answered)]
    service = CommunicationService(hub.url)
    task = make_task(llm, service, tmp_path, task_id="t-race")
    running = asyncio.create_task(task.run("write"))
    (request,) = await wait_pending(hub, "t-race")
    approve = {"action": "approve", "requestId": request["requestId"]}
    deny = {"action": "deny", "requestId": request["requestId"]}
    answers = await asyncio.gather(command(hub, "t-race", approve), command(hub, "t-race", deny))
    assert all(status == 200 for status, _ in answers)
    await wait_for_event(hub, "t-race", lambda event: event["type"] == "command_rejected")
    both_answered.set()
    result = await asyncio.wait_for(running, 20)
    assert result.status == "completed"
    assert await service.aflush(10)
    await service.aclose()
    events = await task_events(hub, "t-race")
    resolved = [e for e in events if e["type"] == "approval_resolved"]
    rejected = [e for e in events if e["type"] == "command_rejected"]
    assert len(resolved) == 1 and len(rejected) == 1  # exactly one decision
    assert rejected[0]["payload"]["reason"] == "already_resolved"
    assert (tmp_path / "out.txt").exists() == (resolved[0]["payload"]["decision"] == "approve")
    # A command for a task that has ended: the hub answers for it.
    status, _ = await command(hub, "t-race", {"action": "message", "text": "too late"})
    assert status == 200
    await wait_for_event(
        hub, "t-race", lambda event: event["payload"].get("reason") == "task_ended", 10
    )
    events = await task_events(hub, "t-race")
    late = [e for e in events if e["payload"].get("reason") == "task_ended"]
    assert late[0]["type"] == "command_rejected" and late[0]["publisher"] == "taskcast-hub"


async def test_abort_during_a_slow_model_response_ends_the_task_at_once(
    start_hub: Any, llm: FakeLLM, tmp_path: Path
) -> None:
    hub = start_hub()
    llm.replies = [Reply(text="thinking for a long time", delay=120)]
    service = CommunicationService(hub.url)
    task = make_task(llm, service, tmp_path, task_id="t-abort")
    running = asyncio.create_task(task.run("think"))
    async with asyncio.timeout(10):
        while not llm.requests:
            await asyncio.sleep(0.02)
    status, _ = await command(hub, "t-abort", {"action": "abort", "reason": "wrong task"})
    assert status == 200
    sent = time.monotonic()
    result = await asyncio.wait_for(running, 10)
    took = time.monotonic() - sent
    assert result.status == "aborted"
    assert took < 5, took  # a failure bound: the model would have answered after 120 s
    assert await service.aflush(10)
    await service.aclose()
    (aborted,) = [e for e in await task_events(hub, "t-abort") if e["type"] == "task_aborted"]
    assert aborted["payload"]["by"] == "anonymous" and aborted["payload"]["reason"] == "wrong task"


async def test_abort_kills_a_running_command(start_hub: Any, llm: FakeLLM, tmp_path: Path) -> None:
    hub = start_hub()
    sleeper = {
        "id": "c1",
        "name": "execute_command",
        "arguments": {"command": "echo $$ > cmd.pid; exec sleep 120"},
    }
    llm.replies = [Reply(tool_calls=[sleeper])]
    service = CommunicationService(hub.url)
    task = make_task(llm, service, tmp_path, task_id="t-kill", approval="auto")
    running = asyncio.create_task(task.run("sleep"))
    async with asyncio.timeout(10):
        while not (tmp_path / "cmd.pid").exists() or not (tmp_path / "cmd.pid").read_text():
            await asyncio.sleep(0.02)
    await command(hub, "t-kill", {"action": "abort"})
    result = await asyncio.wait_for(running, 10)
    assert result.status == "aborted"
    pid = int((tmp_path / "cmd.pid").read_text())
    async with asyncio.timeout(5):
        while (
            Path(f"/proc/{pid}").exists()
            and "Z" not in Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1][:3]
        ):
            await asyncio.sleep(0.02)
    await service.aclose()


async def test_reply_answers_a_question_and_messages_steer(
    start_hub: Any, llm: FakeLLM, tmp_path: Path
) -> None:
    hub = start_hub()
    ask = {
        "id": "q1",
        "name": "ask_followup_question",
        "arguments": {"question": "Which colour?", "options": ["red", "blue"]},
    }
    llm.replies = [
        Reply(tool_calls=[ask]),
        Reply(text="noted", delay=1.0),
        Reply(tool_calls=[DONE]),
    ]
    llm.replies[1].tool_calls = [{"id": "l1", "name": "list_files", "arguments": {}}]
    service = CommunicationService(hub.url)
    task = make_task(llm, service, tmp_path, task_id="t-ask")
    running = asyncio.create_task(task.run("paint"))
    (question,) = await wait_pending(hub, "t-ask")
    assert question["kind"] == "question" and question["options"] == ["red", "blue"]
    status, _ = await command(
        hub, "t-ask", {"action": "reply", "requestId": question["requestId"], "text": "blue"}
    )
    assert status == 200
    # While the model works on its second (slow) answer, steer it.
    async with asyncio.timeout(10):
        while len(llm.requests) < 2:
            await asyncio.sleep(0.02)
    await command(hub, "t-ask", {"action": "message", "text": "use dark blue"})
    result = await asyncio.wait_for(running, 20)
    assert result.status == "completed"
    assert "the user answered: blue" in tool_messages(llm, 1)[-1]["content"]
    last = llm.requests[2]["messages"]
    assert last[-1] == {"role": "user", "content": "use dark blue"}  # before the next request
    assert await service.aflush(10)
    await service.aclose()
    kinds = [e["type"] for e in await task_events(hub, "t-ask")]
    assert kinds.count("question_asked") == 1 and kinds.count("question_answered") == 1
    assert kinds.count("user_message") == 1


async def test_a_command_sent_while_the_task_is_disconnected_is_applied_once(
    start_hub: Any, llm: FakeLLM, tmp_path: Path
) -> None:
    hub = start_hub()
    llm.replies = [Reply(tool_calls=[WRITE]), Reply(tool_calls=[DONE])]
    service = CommunicationService(hub.url)
    task = make_task(llm, service, tmp_path, task_id="t-offline")
    running = asyncio.create_task(task.run("write"))
    (request,) = await wait_pending(hub, "t-offline")
    hub.kill9()
    # The same log served on another port, which the task's client does not know: the
    # command is sent while the task cannot possibly be connected.
    elsewhere = HubProcess(hub.store, *hub.extra).start(tmp_path / "elsewhere.log")
    status, _ = await command(
        elsewhere, "t-offline", {"action": "approve", "requestId": request["requestId"]}
    )
    assert status == 200
    elsewhere.terminate()
    assert task.pending()  # still waiting: it has not seen the command yet
    hub.restart()
    result = await asyncio.wait_for(running, 30)
    assert result.status == "completed" and (tmp_path / "out.txt").exists()
    assert await service.aflush(10)
    await service.aclose()
    events = await task_events(hub, "t-offline")
    assert [e["type"] for e in events].count("approval_resolved") == 1


def test_first_decision_wins_and_each_command_applies_once() -> None:
    control = RemoteControl()
    control.open("r1", RequestKind.APPROVAL, {"tool": "write_to_file"})
    control.open("q1", RequestKind.QUESTION, {"question": "?"})

    def cmd(
        event_id: str, action: CommandAction, request: str | None = None, text: str | None = None
    ) -> Command:
        return Command(event_id, 1, action, "alice", request, text)

    first = control.apply(cmd("e1", CommandAction.APPROVE, "r1"))
    assert first is not None and first.approved is True and first.resolves == "r1"
    assert control.apply(cmd("e1", CommandAction.APPROVE, "r1")) is None  # same event again
    late = control.apply(cmd("e2", CommandAction.DENY, "r1"))
    assert late is not None and late.payload["reason"] == Rejection.ALREADY_RESOLVED
    wrong = control.apply(cmd("e3", CommandAction.APPROVE, "q1"))
    assert wrong is not None and wrong.payload["reason"] == Rejection.WRONG_KIND
    unknown = control.apply(cmd("e4", CommandAction.REPLY, "nope", "x"))
    assert unknown is not None and unknown.payload["reason"] == Rejection.UNKNOWN_REQUEST
    answer = control.apply(cmd("e5", CommandAction.REPLY, "q1", "yes"))
    assert answer is not None and answer.answer == "yes"
    control.ended = True
    ended = control.apply(cmd("e6", CommandAction.MESSAGE, text="hello"))
    assert ended is not None and ended.payload["reason"] == Rejection.TASK_ENDED


def cli(
    hub: HubProcess, *args: str, token_value: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TASKCAST_HUB": hub.url}
    if token_value:
        env["TASKCAST_TOKEN"] = token_value
    return subprocess.run(
        [sys.executable, "-m", "taskcast", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )


async def test_cli_and_python_commands_deny_reply_say_abort(
    start_hub: Any, llm: FakeLLM, tmp_path: Path
) -> None:
    hub = start_hub()
    ask = {"id": "q", "name": "ask_followup_question", "arguments": {"question": "Name?"}}
    llm.replies = [
        Reply(tool_calls=[WRITE]),
        Reply(tool_calls=[ask]),
        Reply(text="", tool_calls=[{"id": "l", "name": "list_files", "arguments": {}}], delay=2),
        Reply(text="still working", delay=120),
    ]
    service = CommunicationService(hub.url)
    task = make_task(llm, service, tmp_path, task_id="t-cli")
    running = asyncio.create_task(task.run("do things"))
    none_yet = await asyncio.to_thread(cli, hub, "approve", "nobody")
    assert none_yet.returncode != 0 and "0 open approval requests" in none_yet.stderr
    await wait_pending(hub, "t-cli")
    denied = await asyncio.to_thread(cli, hub, "deny", "t-cli", "--reason", "no writes")
    assert denied.returncode == 0, denied.stderr
    (question,) = await wait_pending(hub, "t-cli")
    assert question["kind"] == "question"
    assert task.pending()[0]["requestId"] == question["requestId"]
    replied = await asyncio.to_thread(cli, hub, "reply", "t-cli", "Ada")
    assert replied.returncode == 0, replied.stderr
    async with asyncio.timeout(10):
        while len(llm.requests) < 3:
            await asyncio.sleep(0.02)
    said = await asyncio.to_thread(cli, hub, "say", "t-cli", "be brief")
    assert said.returncode == 0, said.stderr
    async with asyncio.timeout(10):
        while len(llm.requests) < 4:
            await asyncio.sleep(0.02)
    # The Python API sends commands too (here through another connection).
    operator = CommunicationService(hub.url)
    operator.command("t-cli", "abort", reason="enough")
    result = await asyncio.wait_for(running, 10)
    assert result.status == "aborted"
    assert await operator.aflush(10)
    await operator.aclose()
    assert "denied by anonymous (no writes)" in tool_messages(llm, 1)[0]["content"]
    assert tool_messages(llm, 2)[-1]["content"] == "the user answered: Ada"
    assert llm.requests[3]["messages"][-1] == {"role": "user", "content": "be brief"}
    assert await service.aflush(10)
    await service.aclose()
    after = await asyncio.to_thread(cli, hub, "pending")
    assert after.stdout.strip() == "nothing is waiting for you"
    (aborted,) = [e for e in await task_events(hub, "t-cli") if e["type"] == "task_aborted"]
    assert aborted["payload"]["reason"] == "enough"


async def test_cli_run_with_remote_approval(start_hub: Any, llm: FakeLLM, tmp_path: Path) -> None:
    hub = start_hub()
    llm.replies = [Reply(tool_calls=[WRITE]), Reply(tool_calls=[DONE])]
    work = tmp_path / "work"
    work.mkdir()
    agent = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "taskcast",
        "run",
        "write out.txt",
        *llm.cli_args(),
        "--hub",
        hub.url,
        "--task-id",
        "t-run",
        "--cwd",
        str(work),
        "--history-dir",
        str(tmp_path / ".h"),
        "--approve",
        "remote",
        "--no-stream",
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=REPO,
    )
    (request,) = await wait_pending(hub, "t-run")
    assert request["tool"] == "write_to_file"
    status, _ = await command(
        hub, "t-run", {"action": "approve", "requestId": request["requestId"]}
    )
    assert status == 200
    out, err = await asyncio.wait_for(agent.communicate(), 60)
    assert agent.returncode == 0, err.decode()
    assert (work / "out.txt").read_text() == "hi"
    assert b"approval_requested" in out and b"approval_resolved" in out
    assert not any(request.get("stream") for request in llm.requests)  # --no-stream
