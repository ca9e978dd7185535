"""Follow and hand off a task (issue 11): rebuild its exact history from the hub's log,
continue it on another "machine" after kill -9, one runner at a time by a lease."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from taskcast.client import CommunicationService
from taskcast.hub.core import LEASE_KIND
from taskcast.leases import Lease
from taskcast.store.sqlite import SqliteStore
from taskcast.task import OpenAIChatProvider, Task
from taskcast.task.handoff import TaskLeaseHeld, fetch_history
from tests.conftest import REPO, HubProcess
from tests.fake_llm import FakeLLM, Reply
from tests.helpers import wait_for_event

JSON = {"Content-Type": "application/json"}
WRITE = {"id": "w", "name": "write_to_file", "arguments": {"path": "a.txt", "content": "A"}}
READ = {"id": "r", "name": "read_file", "arguments": {"path": "big.txt"}}
DONE = {"id": "d", "name": "attempt_completion", "arguments": {"result": "finished"}}


def provider(llm: FakeLLM) -> OpenAIChatProvider:
    return OpenAIChatProvider("gpt-test", base_url=f"{llm.base}/v1", api_key="k", stream=False)


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "taskcast", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        cwd=REPO,
        env={**os.environ, **(env or {})},
    )


async def test_a_follower_rebuilds_the_exact_history(
    start_hub: Any, llm: FakeLLM, tmp_path: Path
) -> None:
    hub = start_hub()
    (tmp_path / "big.txt").write_text("0123456789abcdef\n" * 20_000)  # chunked: > 256 KiB
    llm.replies = [
        Reply(text="Reading.", tool_calls=[READ]),
        Reply(tool_calls=[WRITE]),
        Reply(tool_calls=[DONE]),
    ]
    follower = cli("follow", "t-follow", "--json", env={"TASKCAST_HUB": hub.url})
    service = CommunicationService(hub.url)
    task = Task(
        provider(llm),
        communication_service=service,
        task_id="t-follow",
        cwd=tmp_path,
        history_dir=tmp_path / ".h",
        approval="auto",
    )
    assert (await task.run("read big.txt, then write a.txt")).status == "completed"
    assert await service.aflush(10)
    await service.aclose()
    fetched = await fetch_history(hub.url, "t-follow")
    assert fetched.messages == task.api_conversation_history
    assert len(fetched.messages[2]["content"]) > 256 * 1024  # came in chunks, not cut
    assert fetched.system_prompt == task.system_prompt
    out, err = await asyncio.to_thread(follower.communicate, timeout=60)
    assert follower.returncode == 0, err
    assert [json.loads(line) for line in out.splitlines()] == task.api_conversation_history
    # The same history, as the log holds it now, and for a task the hub never saw.
    history = cli("history", "t-follow", "--json", env={"TASKCAST_HUB": hub.url})
    out, err = await asyncio.to_thread(history.communicate, timeout=60)
    assert history.returncode == 0, err
    assert [json.loads(line) for line in out.splitlines()] == task.api_conversation_history
    unknown = cli("history", "t-nobody", env={"TASKCAST_HUB": hub.url})
    out, err = await asyncio.to_thread(unknown.communicate, timeout=60)
    assert unknown.returncode == 1 and out == ""
    assert "no events for task t-nobody" in err
    transcript = cli("follow", "t-follow", env={"TASKCAST_HUB": hub.url})
    text, _ = await asyncio.to_thread(transcript.communicate, timeout=60)
    assert "user: read big.txt, then write a.txt" in text
    assert "assistant: Reading. [calls read_file]" in text
    assert "task_completed" in text


async def test_resume_on_another_machine_after_kill_9_one_runner_at_a_time(
    start_hub: Any, llm: FakeLLM, tmp_path: Path
) -> None:
    hub = start_hub()
    first_home, second_home = tmp_path / "first", tmp_path / "second"
    first_home.mkdir()
    second_home.mkdir()
    llm.replies = [
        Reply(text="Writing.", tool_calls=[WRITE]),
        Reply(text="slow", delay=120),
        Reply(text="", tool_calls=[DONE]),
    ]
    common = [
        *llm.cli_args(),
        "--hub",
        hub.url,
        "--approve",
        "auto",
        "--lease-ttl",
        "3",
    ]
    runner = cli(
        "run",
        "write a.txt",
        "--task-id",
        "t-move",
        "--cwd",
        str(first_home),
        "--history-dir",
        str(first_home / ".h"),
        *common,
    )
    follower = cli("follow", "t-move", env={"TASKCAST_HUB": hub.url, "COLUMNS": "300"})
    as_json = cli("follow", "t-move", "--json", env={"TASKCAST_HUB": hub.url})
    async with asyncio.timeout(30):
        while len(llm.requests) < 2:  # it wrote a.txt and waits for the slow reply
            await asyncio.sleep(0.05)
    # The follower shows the conversation as it happens (not when the task ends).
    assert "assistant: Writing." in await follower_line(follower, "Writing.")
    line = await follower_line(as_json, "Writing.")  # one NDJSON line per message, as it comes
    assert json.loads(line)["role"] == "assistant"
    runner.send_signal(signal.SIGKILL)
    runner.wait(10)
    persisted = (first_home / ".h" / "t-move" / "api_conversation_history.jsonl").read_bytes()

    # The rebuilt history is byte for byte what the first runner had persisted.
    probe = await Task.from_hub(
        "t-move",
        hub=hub.url,
        provider=provider(llm),
        cwd=second_home,
        history_dir=tmp_path / "probe",
    )
    assert (
        tmp_path / "probe" / "t-move" / "api_conversation_history.jsonl"
    ).read_bytes() == persisted
    assert probe.resumed_from is not None and probe.resumed_from["lastSeq"] > 0

    # While the dead runner's lease lasts, a resume is refused, naming the holder.
    resume = [
        "run",
        "-",
        "--resume",
        "t-move",
        "--cwd",
        str(second_home),
        "--history-dir",
        str(second_home / ".h"),
        *common,
    ]
    refused = cli(*resume)
    _, err = await asyncio.to_thread(refused.communicate, timeout=60)
    assert refused.returncode != 0 and "t-move is running on" in err
    assert len(llm.requests) == 2  # nothing was sent to the model
    # Once it lapses (3 s without a heartbeat), the hub says the runner is lost, once.
    lost = await wait_for_event(hub, "t-move", lambda e: e["type"] == "runner_lost", 30)
    assert lost["payload"]["holder"].split(":")[1] == str(runner.pid)
    assert lost["payload"]["lastSeq"] == lost["seq"] - 1  # nothing came after the runner
    assert lost["payload"]["leaseExpiredAt"] <= lost["payload"]["timestamp"]
    assert (await task_summary(hub, "t-move"))["status"] == "lost"
    assert "taskcast run - --resume t-move" in (await follower_line(follower, "resume it"))
    # The resume goes on with the same task id; the follower keeps following it to its end.
    resumed = cli(*resume)
    out, err = await asyncio.to_thread(resumed.communicate, timeout=60)
    assert resumed.returncode == 0, err
    assert "completed" in out
    third = llm.requests[-1]["messages"]
    assert [m["role"] for m in third][:4] == ["system", "user", "assistant", "tool"]
    assert any(m.get("tool_calls") for m in third)  # the whole history reached the model
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{hub.http}/api/events?channel=tasks.t-move&type=task_resumed") as r,
    ):
        (event,) = await r.json()
    assert event["payload"]["lastSeq"] > 0
    assert event["payload"]["from"].split(":")[1] == str(runner.pid)  # the dead runner
    assert (await task_summary(hub, "t-move"))["status"] == "completed"
    transcript, _ = await asyncio.to_thread(follower.communicate, timeout=60)
    assert follower.returncode == 0
    assert "task_completed" in transcript  # what came after the resume, then its end
    rest, notices = await asyncio.to_thread(as_json.communicate, timeout=60)
    assert as_json.returncode == 0
    assert "resume it: taskcast run - --resume t-move" in notices  # on stderr: stdout is NDJSON
    assert json.loads(rest.splitlines()[-1])["role"] == "tool"  # attempt_completion's result
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{hub.http}/api/events?channel=tasks.t-move&type=runner_lost") as r,
    ):
        assert len(await r.json()) == 1  # reported once


async def task_summary(hub: HubProcess, task_id: str) -> dict[str, Any]:
    async with aiohttp.ClientSession() as session, session.get(f"{hub.http}/api/tasks") as r:
        (summary,) = [t for t in await r.json() if t["taskId"] == task_id]
        return dict(summary)


async def follower_line(process: subprocess.Popen[str], wanted: str) -> str:
    """The first line of a follower's output that holds ``wanted`` (read as it comes)."""
    assert process.stdout is not None
    while True:
        line = await asyncio.wait_for(asyncio.to_thread(process.stdout.readline), 30)
        assert line, "the follower ended"
        if wanted in line:
            return line


async def test_a_second_live_runner_is_refused_and_leases_survive_a_restart(
    start_hub: Any, llm: FakeLLM, tmp_path: Path
) -> None:
    hub: HubProcess = start_hub()
    llm.replies = [Reply(text="slow", delay=120)]
    service = CommunicationService(hub.url)
    first = Task(
        provider(llm),
        communication_service=service,
        task_id="t-live",
        cwd=tmp_path,
        history_dir=tmp_path / ".h1",
        approval="auto",
    )
    running = asyncio.create_task(first.run("think"))
    async with asyncio.timeout(10):
        while not llm.requests:
            await asyncio.sleep(0.02)
    second = Task(
        provider(llm),
        communication_service=service,
        task_id="t-live",
        cwd=tmp_path,
        history_dir=tmp_path / ".h2",
        approval="auto",
    )
    with pytest.raises(TaskLeaseHeld) as held:
        await second.run("also think")
    assert held.value.holder and str(os.getpid()) in held.value.holder
    assert not (tmp_path / ".h2" / "t-live").exists()  # refused before anything happened
    first.abort()
    assert (await running).status == "aborted"
    # Released at the end: a new runner may take it.
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{hub.http}/api/tasks/t-live/lease", json={"holder": "machine-b", "ttl": 60}
        ) as r,
    ):
        assert r.status == 200
    hub.terminate()
    hub.restart()
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{hub.http}/api/tasks/t-live/lease", json={"holder": "machine-c", "ttl": 60}
        ) as r,
    ):
        assert r.status == 409 and (await r.json())["holder"] == "machine-b"
    await service.aclose()


async def test_a_lease_names_a_task_and_a_bad_stored_one_holds_no_report_back(
    start_hub: Any, tmp_path: Path
) -> None:
    """A lease's task id is checked as an event's is (400 ``invalid_channel``: it could
    never be reported). A bad lease already in a log (taken before that check) is
    dropped when it lapses; every other lapsed lease is still reported ``runner_lost``."""
    log = SqliteStore(tmp_path / "events0.db")
    await log.open()
    taken_long_ago = Lease("bad id", "old-runner", expires_at=1_000, acquired_at=0)
    await log.update_record(
        LEASE_KIND, taken_long_ago.task_id, lambda _: taken_long_ago.to_record()
    )
    await log.close()
    hub: HubProcess = start_hub(store=f"sqlite:{tmp_path / 'events0.db'}")  # also on a NATS run
    async with aiohttp.ClientSession() as session:
        for task_id in ("bad%20id", "x.y", "%C3%A9"):
            lease = {"holder": "r", "ttl": 30}
            async with session.post(f"{hub.http}/api/tasks/{task_id}/lease", json=lease) as r:
                assert r.status == 400, task_id
                assert (await r.json())["code"] == "invalid_channel"
        started = {"type": "task_started", "payload": {"taskId": "t-ok", "prompt": "go"}}
        async with session.post(f"{hub.http}/api/events", json=started) as r:
            assert r.status == 200
        lease = {"holder": "box-a:1:gone", "ttl": 1}
        async with session.post(f"{hub.http}/api/tasks/t-ok/lease", json=lease) as r:
            assert r.status == 200
    lost = await wait_for_event(hub, "t-ok", lambda e: e["type"] == "runner_lost")
    assert lost["payload"]["holder"] == "box-a:1:gone"
    assert hub.log_path is not None
    logged = hub.log_path.read_text()
    assert "dropping the lease on 'bad id'" in logged and "lease sweep failed" not in logged
