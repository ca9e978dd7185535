"""The AG-UI door (issue 28): ``POST /ag-ui/tasks/{taskId}`` against real hub processes,
for tasks a real ``taskcast run`` executes against the fake model server and for a
``TaskRecorder`` loop; every event read checked against the ``ag-ui-protocol`` package's
models (tests/agui_reader.py). The official TypeScript client runs against the same door
in tests/outside/agui.test.mjs."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from taskcast import CommunicationService, TaskRecorder
from tests.agui_reader import Read, messages_of, open_run, read_run, run_input
from tests.conftest import REPO, HubProcess
from tests.fake_llm import FakeLLM, Reply
from tests.helpers import bearer, token, wait_for_event

WRITE = {"id": "c1", "name": "write_to_file", "arguments": {"path": "a.txt", "content": "A"}}
MORE = {"id": "c2", "name": "write_to_file", "arguments": {"path": "b.txt", "content": "B"}}
DONE = {"id": "c9", "name": "attempt_completion", "arguments": {"result": "wrote a.txt"}}


async def log(hub: HubProcess, task_id: str) -> list[dict[str, Any]]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(
            f"{hub.http}/api/events", params={"channel": f"tasks.{task_id}", "limit": "10000"}
        ) as reply,
    ):
        events: list[dict[str, Any]] = await reply.json()
        return events


def history_as_agui(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The task's history (its ``history_appended``, whole messages) as AG-UI messages:
    what a client must end up holding. Written out here, not taken from the door."""
    out: list[dict[str, Any]] = []
    for index, event in enumerate(e for e in events if e["type"] == "history_appended"):
        m = event["payload"]["message"]
        shaped: dict[str, Any] = {"id": f"h{index}", "role": m["role"]}
        if m["role"] == "tool":
            shaped.update(content=m["content"], toolCallId=m["tool_call_id"])
        elif m["role"] == "assistant":
            if m.get("content"):
                shaped["content"] = m["content"]
            if m.get("tool_calls"):
                shaped["toolCalls"] = [
                    {
                        "id": c["id"],
                        "type": "function",
                        "function": {
                            "name": c["name"],
                            "arguments": json.dumps(c["arguments"], separators=(",", ":")),
                        },
                    }
                    for c in m["tool_calls"]
                ]
        else:
            shaped["content"] = m["content"]
        out.append(shaped)
    return out


async def start_run(
    hub: HubProcess, llm: FakeLLM, tmp_path: Path, task_id: str, approve: str = "remote"
) -> asyncio.subprocess.Process:
    work = tmp_path / f"work-{task_id}"
    work.mkdir()
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "taskcast",
        "run",
        "write a.txt",
        *llm.cli_args(),
        "--no-stream",
        "--hub",
        hub.url,
        "--task-id",
        task_id,
        "--cwd",
        str(work),
        "--history-dir",
        str(tmp_path / f".h-{task_id}"),
        "--approve",
        approve,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        cwd=REPO,
    )


async def post(
    hub: HubProcess, task_id: str, body: Any, headers: dict[str, str] | None = None
) -> tuple[int, str, Any]:
    """A POST whose answer is not a stream: (status, content type, JSON body)."""
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{hub.http}/ag-ui/tasks/{task_id}",
            data=body if isinstance(body, bytes) else json.dumps(body),
            headers={"Content-Type": "application/json", **(headers or {})},
        ) as reply,
    ):
        text = await reply.text()
        kind = reply.headers.get("Content-Type", "")
        return reply.status, kind, (json.loads(text) if text else None)


def interrupts(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    outcome = events[-1]["outcome"]
    assert events[-1]["type"] == "RUN_FINISHED" and outcome["type"] == "interrupt", events[-1]
    found: list[dict[str, Any]] = outcome["interrupts"]
    return found


async def test_a_task_run_as_ag_ui_runs_its_approval_answered_by_resume(
    start_hub: Any, llm: FakeLLM, tmp_path: Path
) -> None:
    hub = start_hub()
    llm.replies = [Reply(text="I will write a.txt.", tool_calls=[WRITE]), Reply(tool_calls=[DONE])]
    agent = await start_run(hub, llm, tmp_path, "ag-1")
    await wait_for_event(hub, "ag-1", lambda e: e["type"] == "approval_requested")
    async with aiohttp.ClientSession() as session:
        first = await read_run(session, hub.http, "ag-1")
        kinds = [e["type"] for e in first]
        assert kinds[:3] == ["RUN_STARTED", "MESSAGES_SNAPSHOT", "STATE_SNAPSHOT"]
        assert first[0] == {
            "type": "RUN_STARTED",
            "threadId": "ag-1",
            "runId": "run-1",
            "protocolVersion": "1.0",
        }
        assert [m["role"] for m in first[1]["messages"]] == ["user", "assistant"]
        assert first[1]["messages"][1]["toolCalls"][0]["id"] == "c1"
        assert first[2]["snapshot"]["status"] == "running"
        assert first[2]["snapshot"]["pending"] == 1
        (asked,) = interrupts(first)
        assert asked["reason"] == "tool_call"
        assert asked["toolCallId"] == "c1"
        assert asked["responseSchema"]["properties"]["approved"] == {"type": "boolean"}
        assert "write_to_file" in asked["message"]

        resume = [{"interruptId": asked["id"], "status": "resolved", "payload": {"approved": True}}]
        second = await read_run(
            session, hub.http, "ag-1", run_input("ag-1", "run-2", resume=resume)
        )
        assert second[-1]["type"] == "RUN_FINISHED"
        assert second[-1]["outcome"] == {"type": "success"}
        assert second[-1]["result"] == "wrote a.txt"
        # What the client holds is not streamed again: history only as the snapshot.
        assert first[1] == second[1]
        assert not any(
            e.get("toolCallId") == "c1" for e in second if e["type"] == "TOOL_CALL_START"
        )
        (result,) = [
            e for e in second if e["type"] == "TOOL_CALL_RESULT" and e["toolCallId"] == "c1"
        ]
        assert result["content"].startswith("wrote 1 bytes")
        steps = [(e["type"], e["stepName"]) for e in second if e["type"].startswith("STEP_")]
        assert steps == [
            ("STEP_STARTED", "turn 1"),  # the turn the approval stopped, under way again
            ("STEP_FINISHED", "turn 1"),
            ("STEP_STARTED", "turn 2"),
            ("STEP_FINISHED", "turn 2"),
        ]
        customs = [e["name"] for e in second if e["type"] == "CUSTOM"]
        assert "approval_resolved" in customs and "task_completed" in customs
        assert "api_action" not in customs and "history_appended" not in customs
        _, err = await asyncio.wait_for(agent.communicate(), 60)
        assert agent.returncode == 0, err.decode()
        events = await log(hub, "ag-1")
        assert second[1]["messages"] + [
            m for m in history_as_agui(events) if m not in second[1]["messages"]
        ] == history_as_agui(events)
        (resolved,) = [e for e in events if e["type"] == "approval_resolved"]
        assert (resolved["payload"]["decision"], resolved["payload"]["by"]) == (
            "approve",
            "anonymous",
        )

        # A viewer who comes later: the whole conversation as the snapshot, then the end.
        later = await read_run(session, hub.http, "ag-1", run_input("ag-1", "run-3"))
        assert [e["type"] for e in later] == [
            "RUN_STARTED",
            "MESSAGES_SNAPSHOT",
            "STATE_SNAPSHOT",
            "RUN_FINISHED",
        ]
        assert later[1]["messages"] == history_as_agui(events)
        assert later[2]["snapshot"]["status"] == "completed"
    # The same answer again: refused (409), not a second decision.
    status, kind, error = await post(hub, "ag-1", run_input("ag-1", "run-4", resume=resume))
    assert (status, error["code"]) == (409, "already_resolved")
    assert kind.startswith("application/json")
    assert len([e for e in await log(hub, "ag-1") if e["type"] == "approval_resolved"]) == 1


async def test_a_reconnect_with_last_event_id_gets_every_event_once_across_a_hub_kill(
    start_hub: Any, llm: FakeLLM, tmp_path: Path
) -> None:
    """Two readers of one run: both are cut (one between the events of one taskcast event,
    one after a whole one), the hub is killed -9 and restarted, both reconnect with
    ``Last-Event-ID``; both end with the same events, each exactly once, in order."""
    hub = start_hub()
    second_turn, third_turn = asyncio.Event(), asyncio.Event()
    llm.replies = [
        Reply(text="First a.", tool_calls=[WRITE]),
        Reply(text="Then b, a longer answer.", tool_calls=[MORE], hold=second_turn),
        Reply(text="Done.", tool_calls=[DONE], hold=third_turn),
    ]
    agent = await start_run(hub, llm, tmp_path, "ag-r", approve="auto")
    await wait_for_event(hub, "ag-r", lambda e: e["type"] == "tool_executed")
    while len(llm.requests) < 2:  # the task waits for the model's second answer
        llm.arrived.clear()
        await asyncio.wait_for(llm.arrived.wait(), 30)
    body = run_input("ag-r", "run-r")
    async with aiohttp.ClientSession() as session:
        a = await open_run(session, hub.http, "ag-r", body)
        b = await open_run(session, hub.http, "ag-r", body)
        opening_a = await a.until(lambda e: e["type"] == "STEP_STARTED")
        opening_b = await b.until(lambda e: e["type"] == "STEP_STARTED")
        assert opening_a == opening_b  # one run, two readers: the same events, the same ids
        second_turn.set()
        # b is cut inside the second response (its text arrived, its tool call not yet);
        # a after the whole first tool result of the turn.
        await b.until(lambda e: e["type"] == "TEXT_MESSAGE_CONTENT")
        b.close()
        await a.until(lambda e: e["type"] == "TOOL_CALL_RESULT" and e["toolCallId"] == "c2")
        a_last = a.events[-1][0]
        a.close()
        b_last = b.events[-1][0]
        assert "." in b_last, b_last  # inside one taskcast event's events
        assert "." not in a_last, a_last  # after a whole one
        hub.kill9()
        hub.restart()
        third_turn.set()
        a2 = await open_run(session, hub.http, "ag-r", body, {"Last-Event-ID": a_last})
        b2 = await open_run(session, hub.http, "ag-r", body, {"Last-Event-ID": b_last})
        rest_a = await a2.rest()
        rest_b = await b2.rest()
    _, err = await asyncio.wait_for(agent.communicate(), 60)
    assert agent.returncode == 0, err.decode()
    whole_a: list[Read] = a.events + rest_a
    whole_b: list[Read] = b.events + rest_b
    assert whole_a == whole_b
    ids = [read_id for read_id, _ in whole_a]
    assert len(ids) == len(set(ids)), "an event twice"
    events = [event for _, event in whole_a]
    assert events[0]["type"] == "RUN_STARTED" and events[-1]["type"] == "RUN_FINISHED"
    assert [e["type"] for e in events].count("RUN_STARTED") == 1
    starts = [e["messageId"] for e in events if e["type"] == "TEXT_MESSAGE_START"]
    assert len(starts) == len(set(starts)) == 2  # the second and third responses
    calls = [e["toolCallId"] for e in events if e["type"] == "TOOL_CALL_START"]
    assert calls == ["c2", "c9"]
    assert messages_of(events) == history_as_agui(await log(hub, "ag-r"))
    # After the end, a reconnect has nothing more to get.
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{hub.http}/ag-ui/tasks/ag-r", json=body, headers={"Last-Event-ID": ids[-1]}
        ) as reply,
    ):
        assert reply.status == 204


async def recorder_asking(hub: HubProcess, task_id: str) -> tuple[Any, Any, TaskRecorder]:
    """A ``TaskRecorder`` loop (no history: only api_action) that asks a question."""
    service = CommunicationService(hub.url)
    recorder = TaskRecorder(service, task_id)
    recorder.start("pick a colour")
    recorder.api_action("Which colour?")
    asked = asyncio.ensure_future(recorder.ask("Which colour?", ["red", "blue"], timeout=60))
    await wait_for_event(hub, task_id, lambda e: e["type"] == "question_asked")
    return service, asked, recorder


async def test_bad_input_gets_a_clear_4xx_no_stream_and_the_hub_keeps_serving(
    start_hub: Any,
) -> None:
    hub = start_hub()
    service, asked, recorder = await recorder_asking(hub, "ag-q")
    ok = run_input("ag-q")
    cases: list[tuple[Any, dict[str, str], int, str]] = [
        (b"{not json", {}, 400, "bad_json"),
        ([1, 2], {}, 400, "invalid_frame"),  # as every HTTP door answers it
        ({"runId": "r"}, {}, 400, "invalid_input"),
        ({**ok, "threadId": "another"}, {}, 400, "invalid_input"),
        ({**ok, "runId": 7}, {}, 400, "invalid_input"),
        ({**ok, "messages": {"id": "m"}}, {}, 400, "invalid_input"),
        ({**ok, "messages": [{"role": "user", "content": "no id"}]}, {}, 400, "invalid_input"),
        ({**ok, "resume": [{"interruptId": "q-x", "status": "maybe"}]}, {}, 400, "invalid_input"),
        ({**ok, "resume": [{"interruptId": "q-x", "status": "resolved"}]}, {}, 404, "not_found"),
        ({**ok, "resume": "yes"}, {}, 400, "invalid_input"),
        (ok, {"Last-Event-ID": "seven"}, 400, "invalid_input"),
        (ok, {"Last-Event-ID": "3.x1"}, 400, "invalid_input"),
        (ok, {"Last-Event-ID": "99999999"}, 400, "invalid_input"),
    ]
    for body, headers, want_status, want_code in cases:
        status, kind, error = await post(hub, "ag-q", body, headers)
        assert (status, error["code"]) == (want_status, want_code), (body, headers, error)
        assert kind.startswith("application/json") and error["message"]
    status, _, error = await post(hub, "nobody", run_input("nobody"))
    assert (status, error["code"]) == (404, "not_found")

    async with aiohttp.ClientSession() as session:
        first = await read_run(session, hub.http, "ag-q")
        (question,) = interrupts(first)
        assert question["reason"] == "input_required"
        assert question["message"] == "Which colour?"
        assert question["responseSchema"]["properties"]["answer"]["enum"] == ["red", "blue"]
        # No history: each api_action is an assistant message.
        assert [(m["role"], m["content"]) for m in first[1]["messages"]] == [
            ("assistant", "Which colour?")
        ]
        answer_wrongly = [
            {"interruptId": question["id"], "status": "resolved", "payload": {"approved": True}}
        ]
        status, _, error = await post(hub, "ag-q", {**ok, "resume": answer_wrongly})
        assert (status, error["code"]) == (400, "invalid_input")
        assert not asked.done()  # nothing was sent to the task
        answer = [
            {"interruptId": question["id"], "status": "resolved", "payload": {"answer": "blue"}}
        ]
        stream = await open_run(session, hub.http, "ag-q", {**ok, "resume": answer})
        assert await asyncio.wait_for(asked, 20) == "blue"
        recorder.api_action("Blue it is.")
        recorder.complete()
        rest = [event for _, event in await stream.rest()]
        assert rest[-1]["type"] == "RUN_FINISHED" and rest[-1]["outcome"]["type"] == "success"
        said = [e["delta"] for e in rest if e["type"] == "TEXT_MESSAGE_CONTENT"]
        assert said == ["Blue it is."]
    await service.aclose()
    status, _, error = await post(hub, "ag-q", {**ok, "resume": answer})
    assert (status, error["code"]) == (409, "already_resolved")
    async with aiohttp.ClientSession() as session, session.get(f"{hub.http}/healthz") as reply:
        assert reply.status == 200


async def test_access_read_to_stream_control_to_answer(secure_hub: Any) -> None:
    hub = secure_hub()
    agent_token = token(publish=["tasks.ag-s"], subscribe=["control.ag-s"], subject="agent")
    service = CommunicationService(hub.url, token=agent_token)
    recorder = TaskRecorder(service, "ag-s")
    recorder.api_action("May I?")
    approval = asyncio.ensure_future(recorder.request_approval("write_to_file", {"path": "x"}))
    viewer = token(subscribe=["tasks.ag-s"], subject="viewer")
    await wait_for_event(hub, "ag-s", lambda e: e["type"] == "approval_requested", token=viewer)
    reader = bearer(viewer)
    elsewhere = bearer(token(subscribe=["tasks.other"], subject="nosy"))
    approver = bearer(token(subscribe=["tasks.>"], control=["control.>"], subject="carol"))
    async with aiohttp.ClientSession() as session:
        stream = await open_run(session, hub.http, "ag-s", headers=reader)
        (request,) = interrupts([event for _, event in await stream.rest()])
    status, _, error = await post(hub, "ag-s", run_input("ag-s"))
    assert (status, error["code"]) == (401, "unauthorized")
    status, _, error = await post(hub, "ag-s", run_input("ag-s"), elsewhere)
    assert (status, error["code"]) == (403, "forbidden")
    yes = [{"interruptId": request["id"], "status": "resolved", "payload": {"approved": True}}]
    status, _, error = await post(hub, "ag-s", run_input("ag-s", resume=yes), reader)
    assert (status, error["code"]) == (403, "forbidden")  # reading is not answering
    steer = [{"id": "u1", "role": "user", "content": "hello"}]
    status, _, error = await post(hub, "ag-s", run_input("ag-s", messages=steer), reader)
    assert (status, error["code"]) == (403, "forbidden")
    assert not approval.done()
    async with aiohttp.ClientSession() as session:
        stream = await open_run(session, hub.http, "ag-s", run_input("ag-s", resume=yes), approver)
        outcome = await asyncio.wait_for(approval, 20)
        assert outcome.approved and outcome.by == "carol"
        recorder.complete("done")
        rest = [event for _, event in await stream.rest()]
    assert rest[-1]["outcome"] == {"type": "success"}
    assert rest[-1]["result"] == "done"
    await service.aclose()


@pytest.mark.parametrize("status", ["resolved", "cancelled"])
async def test_a_denial_or_a_cancel_reaches_the_task_with_its_reason(
    start_hub: Any, llm: FakeLLM, tmp_path: Path, status: str
) -> None:
    hub = start_hub()
    llm.replies = [Reply(tool_calls=[WRITE]), Reply(tool_calls=[DONE])]
    agent = await start_run(hub, llm, tmp_path, "ag-d")
    await wait_for_event(hub, "ag-d", lambda e: e["type"] == "approval_requested")
    async with aiohttp.ClientSession() as session:
        (asked,) = interrupts(await read_run(session, hub.http, "ag-d"))
        payload = {"approved": False, "reason": "not here"} if status == "resolved" else {}
        resume = [{"interruptId": asked["id"], "status": status, "payload": payload}]
        said = [{"id": "typed-1", "role": "user", "content": "write nothing"}]
        body = run_input("ag-d", "run-2", resume=resume, messages=said)
        second = await read_run(session, hub.http, "ag-d", body)
        # The client sends every message again on its next run: not said twice.
        await read_run(session, hub.http, "ag-d", run_input("ag-d", "run-3", messages=said))
    assert second[-1]["outcome"] == {"type": "success"}
    await asyncio.wait_for(agent.communicate(), 60)
    assert agent.returncode == 3  # completed, a tool call denied
    events = await log(hub, "ag-d")
    (resolved,) = [e["payload"] for e in events if e["type"] == "approval_resolved"]
    assert resolved["decision"] == "deny"
    assert resolved["reason"] == ("not here" if status == "resolved" else "cancelled")
    assert [e["payload"]["text"] for e in events if e["type"] == "user_message"] == [
        "write nothing"
    ]


FRONT_END = """<!doctype html><title>front-end</title><script>
window.result = "pending";
fetch("HUB/ag-ui/tasks/ag-b", {
  method: "POST",
  headers: {"Content-Type": "application/json", "Accept": "text/event-stream"},
  body: JSON.stringify({threadId: "ag-b", runId: "r", messages: [], tools: [], context: [],
                        state: {}, forwardedProps: {}}),
}).then((r) => r.text()).then((t) => { window.result = t; },
                              (e) => { window.result = "refused: " + e; });
</script>"""


async def test_a_front_end_on_an_allowed_origin_reads_the_door_and_no_other_page_can(
    start_hub: Any, browser: Any
) -> None:
    """Chromium, for real CORS: a page on an ``--allowed-origin`` runs a task's run through
    the door (preflight and all); the same page on another origin is refused."""

    async def front_end(_: web.Request) -> web.Response:
        return web.Response(text=page, content_type="text/html")

    pages = web.Application()
    pages.router.add_get("/", front_end)
    runners = []
    origins = []
    for address in ("127.0.0.2", "127.0.0.3"):
        runner = web.AppRunner(pages)
        await runner.setup()
        await web.TCPSite(runner, address, 0).start()
        runners.append(runner)
        origins.append(f"http://{address}:{runner.addresses[0][1]}")
    hub = start_hub("--allowed-origin", origins[0])
    page = FRONT_END.replace("HUB", hub.http)
    service = CommunicationService(hub.url)
    with TaskRecorder(service, "ag-b") as recorder:
        recorder.api_action("Hello, front-end.")
    assert await service.aflush(10)
    await service.aclose()
    try:
        results = []
        for origin in origins:
            tab = await browser.new_page()
            await tab.goto(origin + "/")
            await tab.wait_for_function("window.result !== 'pending'")
            results.append(await tab.evaluate("window.result"))
            await tab.close()
    finally:
        for runner in runners:
            await runner.cleanup()
    allowed, other = results
    assert '"type":"RUN_STARTED"' in allowed and "Hello, front-end." in allowed
    assert '"type":"RUN_FINISHED"' in allowed and '"outcome":{"type":"success"}' in allowed
    assert other.startswith("refused: ")


async def test_a_failed_task_ends_the_run_with_run_error_an_aborted_one_cancelled(
    start_hub: Any,
) -> None:
    hub = start_hub()
    service = CommunicationService(hub.url)
    with pytest.raises(RuntimeError), TaskRecorder(service, "ag-f") as failing:
        failing.api_action("Trying.")
        raise RuntimeError("the loop broke")
    live = TaskRecorder(service, "ag-x")
    live.api_action("Working.")
    assert await service.aflush(10)
    async with aiohttp.ClientSession() as session:
        failed = await read_run(session, hub.http, "ag-f")
        assert failed[-1] == {"type": "RUN_ERROR", "message": "RuntimeError: the loop broke"}
        assert failed[-2]["snapshot"]["status"] == "failed"
        stream = await open_run(session, hub.http, "ag-x")
        opening = await stream.until(lambda e: e["type"] == "STEP_STARTED")
        assert opening[-1][1] == {"type": "STEP_STARTED", "stepName": "turn 1"}
        # What a Task publishes when someone aborts it.
        service.send_message("task_aborted", {"taskId": "ag-x", "reason": "enough", "by": "bob"})
        rest = [event for _, event in await stream.rest()]
    assert [e["type"] for e in rest][-3:] == ["STEP_FINISHED", "STATE_SNAPSHOT", "RUN_FINISHED"]
    assert rest[-1]["outcome"] == {"type": "cancelled"}
    await service.aclose()
