"""CommunicationService and subscribe against a real hub (issue 3, tests 7-8)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from taskcast.client import CommunicationService, Outbox, subscribe
from taskcast.task import ScriptedProvider, Task
from tests.conftest import REPO, HubProcess
from tests.helpers import scripted_run, wait_until
from tests.test_hub_crash import read_whole_log


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def event(n: int) -> dict[str, Any]:
    return {"type": "api_action", "payload": {"taskId": "c1", "message": f"m{n}", "timestamp": n}}


async def test_publish_flush_and_order(start_hub: Any) -> None:
    hub = start_hub()
    with CommunicationService(hub.url, source="agent-a") as service:
        ids = [service.send_message(event(n)) for n in range(500)]
        ids.append(service.send_message("tool_executed", {"taskId": "c1", "tool": "x"}))
        ids.append(service.send_message("note", {"text": "elsewhere"}, channel="notes.a"))
        assert await service.aflush(10)
        assert service.pending == 0
    log = await read_whole_log(hub.http)
    assert [e["id"] for e in log] == ids
    assert [e["payload"]["message"] for e in log[:500]] == [f"m{n}" for n in range(500)]
    assert {e["source"] for e in log} == {"agent-a"}
    assert log[500]["channel"] == "tasks.c1" and log[501]["channel"] == "notes.a"


async def test_send_from_many_threads(start_hub: Any) -> None:
    hub = start_hub()
    service = CommunicationService(hub.url)

    def sender(k: int) -> None:
        for n in range(200):
            service.send_message("note", {"thread": k, "n": n})

    await asyncio.gather(*(asyncio.to_thread(sender, k) for k in range(4)))
    assert service.close(timeout=10)
    log = await read_whole_log(hub.http)
    assert len(log) == 800
    for k in range(4):
        assert [e["payload"]["n"] for e in log if e["payload"]["thread"] == k] == list(range(200))


async def test_hub_down_at_start_then_restarted_mid_task(start_hub: Any, tmp_path: Path) -> None:
    port = free_port()
    service = CommunicationService(f"ws://127.0.0.1:{port}/ws")
    script = [
        {
            "text": f"step {n}",
            "tool_calls": [{"name": "list_files", "arguments": {}}],
            "delay": 0.15,
        }
        for n in range(12)
    ] + [
        {
            "text": "done",
            "tool_calls": [{"name": "attempt_completion", "arguments": {"result": "ok"}}],
        }
    ]
    task = Task(
        ScriptedProvider(script),
        communication_service=service,
        cwd=tmp_path,
        history_dir=tmp_path / ".h",
        approval="auto",
    )
    running = asyncio.create_task(task.run("go"))
    await wait_until(lambda: service.pending > 0)  # events pile up while no hub exists
    assert not service.connected
    hub = HubProcess(f"sqlite:{tmp_path / 'events.db'}", port=port).start(tmp_path / "hub.log")
    try:
        await wait_until(lambda: service.connected)
        hub.kill9()  # the hub dies in the middle of the task ...
        await wait_until(lambda: not service.connected)
        hub.restart()  # ... and comes back
        result = await running
        assert result.status == "completed"
        assert await service.aflush(15)
        service.close()
        log = await read_whole_log(hub.http)
    finally:
        if hub.proc is not None and hub.proc.poll() is None:
            hub.proc.kill()
    types = [e["type"] for e in log]
    assert types[0] == "task_started" and types[-1] == "task_completed"
    assert types.count("api_action") == 13
    assert [e["payload"]["message"] for e in log if e["type"] == "api_action"] == [
        f"step {n}" for n in range(12)
    ] + ["done"]
    assert len({e["id"] for e in log}) == len(log)


AGENT = textwrap.dedent(
    """
    import os, signal, sys
    from taskcast.client import CommunicationService
    url, outbox, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    service = CommunicationService(url, outbox_path=outbox)
    for n in range(count):
        service.send_message({"type": "note", "id": f"evt-{n:05d}", "payload": {"n": n}})
    os.kill(os.getpid(), signal.SIGKILL)  # die holding whatever is not acknowledged
    """
)


async def test_kill_9_agent_with_file_outbox_resends_each_event_once(
    start_hub: Any, tmp_path: Path
) -> None:
    hub = start_hub()
    outbox = tmp_path / "outbox.log"
    agent = subprocess.run(
        [sys.executable, "-c", AGENT, hub.url, str(outbox), "3000"],
        cwd=REPO,
        capture_output=True,
        timeout=60,
    )
    assert agent.returncode == -signal.SIGKILL
    left = len(Outbox(path=outbox))
    before = len(await read_whole_log(hub.http))
    assert left > 0 and before < 3000  # it really died with events unacknowledged
    service = CommunicationService(hub.url, outbox_path=outbox)
    assert await service.aflush(15)
    service.close()
    log = await read_whole_log(hub.http)
    assert [e["id"] for e in log] == [f"evt-{n:05d}" for n in range(3000)]
    assert len(Outbox(path=outbox)) == 0
    assert outbox.stat().st_size == 0  # compacted on reopen


async def test_outbox_is_bounded_and_survives_torn_writes(tmp_path: Path) -> None:
    path = tmp_path / "o.log"
    outbox = Outbox(max_events=3, path=path)
    for n in range(5):
        outbox.add(f"e{n}", json.dumps({"id": f"e{n}"}).encode())
    assert outbox.dropped == 2 and len(outbox) == 3
    outbox.ack(["e3"])
    outbox.close()
    with open(path, "ab") as journal:
        journal.write(b'+{"id":"e9"')  # a write cut short by a crash
    reopened = Outbox(max_events=3, path=path)
    assert [json.loads(f)["id"] for f in reopened.frames()] == ["e2", "e4"]


async def test_subscribe_resumes_across_a_hub_restart(start_hub: Any) -> None:
    hub = start_hub()
    received: list[int] = []

    async def consume() -> None:
        async for frame in subscribe(hub.url, "tasks.>", since=0):
            received.append(frame["seq"])
            if len(received) == 40:
                return

    consumer = asyncio.create_task(consume())
    with CommunicationService(hub.url) as service:
        for n in range(20):
            service.send_message(event(n))
        assert await service.aflush(10)
        await wait_until(lambda: len(received) >= 20)  # the subscriber has them all
        hub.terminate()
        hub.restart()
        for n in range(20, 40):
            service.send_message(event(n))
        assert await service.aflush(15)
    await asyncio.wait_for(consumer, 20)
    assert received == list(range(1, 41))


async def test_follow_and_on_deliver_other_agents_events(start_hub: Any) -> None:
    hub = start_hub()
    seen: list[dict[str, Any]] = []
    acks: list[dict[str, Any]] = []
    with (
        CommunicationService(hub.url, source="b") as listener,
        CommunicationService(hub.url, source="a") as publisher,
    ):
        listener.on("api_action", seen.append)
        publisher.on("ack", acks.append)
        listener.follow("tasks.>", since=0)
        publisher.send_message(event(1))
        publisher.send_message(event(2))
        deadline = time.monotonic() + 10
        while (len(seen) < 2 or len(acks) < 2) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
    assert [f["payload"]["message"] for f in seen] == ["m1", "m2"]
    assert [a["seq"] for a in acks] == [1, 2]


async def test_invalid_events_are_dropped_not_resent_forever(start_hub: Any) -> None:
    hub = start_hub()
    with CommunicationService(hub.url) as service:
        service.send_message({"type": "api_action", "payload": {"taskId": "x"}})
        service.send_message(event(1))
        assert await service.aflush(10)
    log = await read_whole_log(hub.http)
    assert [e["payload"]["message"] for e in log] == ["m1"]


async def test_cli_run_and_listen_end_to_end(start_hub: Any, tmp_path: Path) -> None:
    hub = start_hub()
    env = {**os.environ, "TASKCAST_HUB": hub.url, "COLUMNS": "200"}
    listener = subprocess.Popen(
        # --since 0: the listener gets every event, however late it subscribes.
        [
            sys.executable,
            "-m",
            "taskcast",
            "listen",
            "tasks.>",
            "--json",
            "--count",
            "23",
            "--since",
            "0",
        ],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    run = await asyncio.to_thread(
        subprocess.run,
        scripted_run(tmp_path, "cli-task"),
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "completed" in run.stdout and "all events acknowledged" in run.stdout
    out, _ = await asyncio.to_thread(listener.communicate, timeout=30)
    frames = [json.loads(line) for line in out.splitlines()]
    assert [f["seq"] for f in frames] == list(range(1, 24))  # 14 events + 9 history messages
    assert {f["channel"] for f in frames} == {"tasks.cli-task"}
    assert frames[0]["type"] == "task_started" and frames[-1]["type"] == "task_completed"
    assert [f["type"] for f in frames].count("api_action") == 4
    assert (tmp_path / "work" / "hello.py").exists()


async def test_demo_runs_on_the_embedded_default(tmp_path: Path) -> None:
    demo = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "taskcast", "demo", "--port", "0"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert demo.returncode == 0, demo.stdout + demo.stderr
    assert "task completed" in demo.stdout and "23 events delivered live" in demo.stdout
    assert (tmp_path / ".taskcast" / "events.db").exists()


def test_run_refuses_a_missing_cwd_and_a_missing_api_key_at_once(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.endswith("API_KEY")}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "taskcast", "run", "do it", *args],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    typo = run("--cwd", str(tmp_path / "wrok"))
    assert typo.returncode == 2 and "does not exist (pass --mkdir" in typo.stderr
    assert not (tmp_path / "wrok").exists()  # nothing was created
    for provider, variable in (("openai", "OPENAI_API_KEY"), ("anthropic", "ANTHROPIC_API_KEY")):
        keyless = run("--provider", provider, "--model", "m", "--cwd", str(tmp_path))
        assert keyless.returncode == 2 and variable in keyless.stderr


def test_a_hub_that_is_no_url_is_refused_by_every_command_at_once() -> None:
    """``--hub notaurl`` (or one bad node of several): a usage error naming it, exit 2,
    before anything is tried ("cannot reach the hub at notaurl/api/…" before)."""
    for command, hubs, bad in (
        (["say", "t", "hi"], "notaurl", "notaurl"),
        (["listen", "tasks.>"], "ws://127.0.0.1:1/ws,bogus", "bogus"),
        (["run", "do it"], "ftp://x/ws", "ftp://x/ws"),
    ):
        done = subprocess.run(
            [sys.executable, "-m", "taskcast", *command, "--hub", hubs],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 2, (command, hubs, done.stderr)
        assert f"{bad!r} is not a hub URL" in done.stderr, done.stderr


def test_listen_says_it_cannot_reach_the_hub_and_gives_up() -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "taskcast",
            "listen",
            "--hub",
            "ws://127.0.0.1:1/ws",
            "--connect-timeout",
            "1.5",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 1
    assert "cannot reach the hub at ws://127.0.0.1:1/ws" in out.stderr  # said while retrying
    assert "no connection to ws://127.0.0.1:1/ws within 1.5 s" in out.stderr


@given(st.lists(st.integers(min_value=1, max_value=50), max_size=60), st.none() | st.integers(0, 5))
def test_resume_point_yields_each_seq_once_in_order(seqs: list[int], since: int | None) -> None:
    from taskcast.client.resume import ResumePoint

    point = ResumePoint(since)
    accepted = [seq for seq in seqs if point.accept(seq)]
    assert accepted == sorted(set(accepted))  # strictly increasing: no repeat, no reorder
    floor = since or 0
    expected = []
    for seq in seqs:
        if seq > floor:
            expected.append(seq)
            floor = seq
    assert accepted == expected
    assert json.loads(point.request("tasks.>")) == (
        {"type": "subscribe", "channel": "tasks.>", "since": point.last}
        if point.last is not None
        else {"type": "subscribe", "channel": "tasks.>"}
    )


def test_resume_without_saved_history_says_what_is_missing(tmp_path: Path) -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "taskcast",
            "run",
            "-",
            "--resume",
            "nosuch",
            "--cwd",
            str(tmp_path),
            "--history-dir",
            str(tmp_path / "h"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert "no saved history for task nosuch" in out.stderr and str(tmp_path / "h") in out.stderr
