"""Claude Code sessions as taskcast tasks (issue 27): the real Claude Code CLI (pinned in
tests/outside/package-lock.json), headless, HOME in a temporary directory, against the
fake Messages API these tests own; taskcast's hooks installed by ``taskcast
claude-code install`` into the project's settings, exactly as a user would."""

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
import pytest

from taskcast.integrations.claude_code.mapping import Response, Session, read_transcript
from taskcast.integrations.claude_code.settings import MARKER
from tests.agui_reader import read_run, run_input
from tests.conftest import REPO, HubProcess
from tests.fake_llm import FakeLLM, Reply

CLAUDE = (
    REPO
    / "tests"
    / "outside"
    / "node_modules"
    / "@anthropic-ai"
    / "claude-code-linux-x64"
    / "claude"
)
TASKCAST = Path(sys.executable).parent / "taskcast"


@pytest.fixture
def claude() -> Path:
    if not CLAUDE.exists():
        if os.environ.get("CI"):
            pytest.fail(
                "the Claude Code CLI is not installed (make test runs npm ci in tests/outside)"
            )
        pytest.skip("the Claude Code CLI is not installed: cd tests/outside && npm ci")
    return CLAUDE


class Machine:
    """One user's machine: a HOME, a project directory with taskcast's hooks installed."""

    def __init__(self, root: Path, llm: FakeLLM) -> None:
        self.home = root / "home"
        self.work = root / "work"
        self.home.mkdir()
        self.work.mkdir()
        self.llm = llm

    def taskcast(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(TASKCAST), *args],
            cwd=self.work,
            env={**os.environ, "HOME": str(self.home)},
            capture_output=True,
            text=True,
            timeout=60,
        )

    def env(self) -> dict[str, str]:
        return {
            "PATH": "/usr/bin:/bin",
            "HOME": str(self.home),
            "ANTHROPIC_API_KEY": "test",
            "ANTHROPIC_BASE_URL": self.llm.base,
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
            "DISABLE_AUTOUPDATER": "1",
            "DISABLE_TELEMETRY": "1",
            "DISABLE_ERROR_REPORTING": "1",
        }

    async def start(self, claude: Path, prompt: str, *args: str) -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(
            str(claude), "-p", prompt, "--output-format", "json", *args,
            cwd=self.work, env=self.env(), stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip

    async def run(self, claude: Path, prompt: str, *args: str) -> dict[str, Any]:
        process = await self.start(claude, prompt, *args)
        out, err = await asyncio.wait_for(process.communicate(), 120)
        assert process.returncode in (0, 1), err.decode()
        result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
        return result

    def hook_log(self) -> str:
        path = self.home / ".taskcast" / "claude-code" / "hook.log"
        return path.read_text() if path.exists() else ""


@pytest.fixture
async def machine(tmp_path: Path, llm: FakeLLM) -> Machine:
    llm.exhausted = Reply(text="(nothing more to do)")
    return Machine(tmp_path, llm)


def write(path: Path, content: str = "hello\n", call: str = "toolu_w") -> dict[str, Any]:
    return {"id": call, "name": "Write", "arguments": {"file_path": str(path), "content": content}}


def bash(command: str, call: str = "toolu_b") -> dict[str, Any]:
    return {"id": call, "name": "Bash", "arguments": {"command": command, "description": "run it"}}


async def events_of(hub: HubProcess, channel: str = ">") -> list[dict[str, Any]]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{hub.http}/api/events?channel={channel}&since=0&limit=10000") as reply,
    ):
        found: list[dict[str, Any]] = await reply.json()
        return found


def tool_results(llm: FakeLLM) -> list[dict[str, Any]]:
    """Every tool_result block the model was sent, in order."""
    blocks = []
    for request in llm.requests:
        for message in request.get("messages", []):
            content = message.get("content")
            for block in content if isinstance(content, list) else []:
                if isinstance(block, dict) and block.get("type") == "tool_result":
                    blocks.append(block)
    return blocks


def text_sent(llm: FakeLLM) -> str:
    return json.dumps([request.get("messages") for request in llm.requests])


# --- what a session publishes ---------------------------------------------------------


async def test_a_session_is_a_task_every_response_once_in_order(
    claude: Path, machine: Machine, start_hub: Any
) -> None:
    hub = start_hub()
    installed = machine.taskcast("claude-code", "install", "--hub", hub.url)
    assert installed.returncode == 0, installed.stderr
    machine.llm.replies = [
        Reply(
            text="I'll write the file.",
            tool_calls=[write(machine.work / "hello.txt")],
            input_tokens=100,
            output_tokens=10,
            cached_tokens=40,
        ),
        Reply(tool_calls=[bash("ls")], input_tokens=120, output_tokens=8, cached_tokens=0),
        Reply(text="Done: hello.txt is there.", input_tokens=130, output_tokens=6, cached_tokens=0),
    ]
    result = await machine.run(
        claude, "write hello.txt then run ls", "--permission-mode", "acceptEdits"
    )
    assert result["is_error"] is False
    session_id = result["session_id"]
    events = await events_of(hub, f"tasks.{session_id}")
    kinds = [e["type"] for e in events]
    assert kinds[0] == "task_started" and kinds[-1] == "task_completed"
    started = events[0]["payload"]
    assert (started["agent"], started["cwd"], started["prompt"]) == (
        "claude-code",
        str(machine.work),
        "write hello.txt then run ls",
    )
    actions = [e for e in events if e["type"] == "api_action"]
    assert [a["payload"]["message"] for a in actions] == [
        "I'll write the file.",
        'Bash(command="ls", description="run it")',
        "Done: hello.txt is there.",
    ]
    for action in actions:  # the seed contract, exactly
        assert sorted(action["payload"]) == ["message", "taskId", "timestamp"]
        assert (
            action["payload"]["taskId"] == session_id and action["channel"] == f"tasks.{session_id}"
        )
    usage = [e["payload"] for e in events if e["type"] == "llm_usage"]
    assert [(u["inputTokens"], u["outputTokens"], u["cachedTokens"]) for u in usage] == [
        (100, 10, 40),
        (120, 8, 0),
        (130, 6, 0),
    ]
    assert {u["provider"] for u in usage} == {"anthropic"} and all(
        u["model"] != "unknown" for u in usage
    )
    # Each api_action is followed by its own llm_usage before the next response.
    order = [k for k in kinds if k in ("api_action", "llm_usage")]
    assert order == ["api_action", "llm_usage"] * 3
    tools = [e["payload"] for e in events if e["type"] == "tool_executed"]
    assert [(t["tool"], t["success"]) for t in tools] == [("Write", True), ("Bash", True)]
    assert len({e["id"] for e in events}) == len(events)  # nothing twice
    # The conversation, rebuilt by the same code as a Task's.
    history = machine.taskcast("history", session_id, "--json", "--hub", hub.url)
    messages = [json.loads(line) for line in history.stdout.splitlines()]
    assert [m["role"] for m in messages] == [
        "user",
        "assistant",
        "tool",
        "assistant",
        "tool",
        "assistant",
    ]
    assert messages[1]["tool_calls"][0]["name"] == "Write" and messages[4]["content"] == "hello.txt"
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{hub.http}/api/tasks/{session_id}") as reply,
    ):
        summary = (await reply.json())["task"]
    assert (
        summary["status"],
        summary["apiActions"],
        summary["inputTokens"],
        summary["toolCalls"],
    ) == ("completed", 3, 350, 2)
    # The session through the AG-UI door: the same conversation, AG-UI's way.
    async with aiohttp.ClientSession() as session:
        run = await read_run(session, hub.http, session_id, run_input(session_id))
    assert [e["type"] for e in run] == [
        "RUN_STARTED",
        "MESSAGES_SNAPSHOT",
        "STATE_SNAPSHOT",
        "RUN_FINISHED",
    ]
    shown = run[1]["messages"]
    assert [m["role"] for m in shown] == [m["role"] for m in messages]
    assert shown[1]["toolCalls"][0]["function"]["name"] == "Write"
    assert shown[-1]["content"] == "Done: hello.txt is there."
    assert run[-1]["outcome"] == {"type": "success"}
    assert machine.hook_log() == ""  # nothing went wrong in any hook call


# --- remote approval -------------------------------------------------------------------


async def test_approve_writes_the_file_and_deny_tells_the_model_why(
    claude: Path, machine: Machine, start_hub: Any
) -> None:
    hub = start_hub()
    assert (
        machine.taskcast(
            "claude-code", "install", "--hub", hub.url, "--approve", "remote"
        ).returncode
        == 0
    )
    target = machine.work / "approved.txt"
    machine.llm.replies = [Reply(tool_calls=[write(target)]), Reply(text="written")]
    running = await machine.start(claude, "write approved.txt")
    request = await wait_for_approval(hub)
    assert request["payload"]["tool"] == "Write" and request["payload"]["arguments"][
        "file_path"
    ] == str(target)
    approved = machine.taskcast("approve", request["payload"]["taskId"], "--hub", hub.url)
    assert approved.returncode == 0, approved.stderr
    out, _ = await asyncio.wait_for(running.communicate(), 60)
    assert json.loads(out)["is_error"] is False
    assert target.read_text() == "hello\n"
    resolved = [e for e in await events_of(hub) if e["type"] == "approval_resolved"]
    assert [(r["payload"]["decision"], r["payload"]["by"]) for r in resolved] == [
        ("approve", "anonymous")
    ]

    # Denied, with a reason: not written, and the model is told.
    denied_target = machine.work / "denied.txt"
    machine.llm.replies = [
        Reply(tool_calls=[write(denied_target, call="toolu_d")]),
        Reply(text="ok, not written"),
    ]
    running = await machine.start(claude, "write denied.txt")
    request = await wait_for_approval(hub, after=request["seq"])
    denied = machine.taskcast(
        "deny", request["payload"]["taskId"], "--reason", "not in this repo", "--hub", hub.url
    )
    assert denied.returncode == 0, denied.stderr
    await asyncio.wait_for(running.communicate(), 60)
    assert not denied_target.exists()
    (result,) = [b for b in tool_results(machine.llm) if b.get("tool_use_id") == "toolu_d"]
    assert result.get("is_error") is True and "not in this repo" in json.dumps(result)
    denials = [
        e["payload"]
        for e in await events_of(hub)
        if e["type"] == "tool_executed" and not e["payload"]["approved"]
    ]
    assert [d["tool"] for d in denials] == ["Write"]


async def wait_for_approval(hub: HubProcess, after: int = 0) -> dict[str, Any]:
    async with asyncio.timeout(60):
        while True:
            found = [
                e
                for e in await events_of(hub)
                if e["type"] == "approval_requested" and e["seq"] > after
            ]
            if found:
                return found[0]
            await asyncio.sleep(0.1)


async def test_no_decision_in_time_denies_and_says_so(
    claude: Path, machine: Machine, start_hub: Any
) -> None:
    hub = start_hub()
    assert (
        machine.taskcast(
            "claude-code",
            "install",
            "--hub",
            hub.url,
            "--approve",
            "remote",
            "--approval-timeout",
            "2",
        ).returncode
        == 0
    )
    target = machine.work / "late.txt"
    machine.llm.replies = [Reply(tool_calls=[write(target, call="toolu_t")]), Reply(text="gave up")]
    started = time.monotonic()
    await machine.run(claude, "write late.txt")
    assert time.monotonic() - started < 30
    assert not target.exists()
    (result,) = [b for b in tool_results(machine.llm) if b.get("tool_use_id") == "toolu_t"]
    assert "no decision within 2 s" in json.dumps(result)
    resolved = [e["payload"] for e in await events_of(hub) if e["type"] == "approval_resolved"]
    assert [(r["decision"], r["by"], r["reason"]) for r in resolved] == [
        ("deny", "taskcast", "timeout")
    ]


# --- never in the way ----------------------------------------------------------------------


async def test_with_the_hub_down_the_session_runs_and_a_later_hook_sends_everything(
    claude: Path, machine: Machine, tmp_path: Path
) -> None:
    hub = HubProcess(f"sqlite:{tmp_path / 'late.db'}").start(tmp_path / "hub.log")
    hub.terminate()  # its port is known; nobody listens there now
    assert (
        machine.taskcast(
            "claude-code", "install", "--hub", hub.url, "--approve", "remote"
        ).returncode
        == 0
    )
    machine.llm.replies = [
        Reply(tool_calls=[bash("echo hi", call="toolu_1")]),
        Reply(tool_calls=[write(machine.work / "x.txt", call="toolu_2")]),
        Reply(text="finished"),
    ]
    started = time.monotonic()
    result = await machine.run(claude, "do two things", "--permission-mode", "acceptEdits")
    assert time.monotonic() - started < 30
    assert result["is_error"] is False
    # Asked for approvals it could not get: denied, saying why.
    results = tool_results(machine.llm)
    assert all("could not reach the hub" in json.dumps(block) for block in results)
    assert not (machine.work / "x.txt").exists()
    hub.restart()
    try:
        # The next hook call — any session's — sends what waited in the outbox.
        machine.llm.replies = [Reply(text="second session")]
        second = await machine.run(claude, "hello again")
        events = await events_of(hub)
    finally:
        hub.terminate()
    first = [e for e in events if e["payload"].get("taskId") == result["session_id"]]
    kinds = [e["type"] for e in first]
    assert kinds[0] == "task_started" and kinds[-1] == "task_completed"
    assert kinds.count("api_action") == 3 and kinds.count("llm_usage") == 3
    assert kinds.count("approval_requested") == 2 and kinds.count("approval_resolved") == 2
    assert len({e["id"] for e in events}) == len(events)
    assert any(e["payload"].get("taskId") == second["session_id"] for e in events)
    assert "unreachable" in machine.hook_log()  # said in taskcast's log, not to Claude


async def test_concurrent_hook_calls_take_each_response_once(
    machine: Machine, start_hub: Any
) -> None:
    """Hook calls of one session run at once (parallel tools): a transcript that grew is
    taken once, whichever call reads it first."""
    hub = start_hub()
    transcript = machine.work / "t.jsonl"
    lines = []
    for n in range(20):
        message = {
            "id": f"msg_{n}",
            "model": "claude-test",
            "content": [{"type": "text", "text": f"step {n}"}],
            "usage": {"input_tokens": n, "output_tokens": 1},
        }
        lines.append(json.dumps({"type": "assistant", "message": message}))
        lines.append(
            json.dumps(
                {
                    "type": "user",
                    "message": {
                        "role": "user",
                        "content": [
                            {"type": "tool_result", "tool_use_id": f"t{n}", "content": "ok"}
                        ],
                    },
                }
            )
        )
    transcript.write_text("\n".join(lines) + "\n")
    hook = {
        "session_id": "concurrent-1",
        "transcript_path": str(transcript),
        "cwd": str(machine.work),
        "hook_event_name": "PostToolUse",
        "tool_name": "Read",
        "tool_input": {},
        "tool_response": "x",
    }
    command = [str(TASKCAST), "claude-code", "hook", "--hub", hub.url]
    env = {**os.environ, "HOME": str(machine.home)}
    calls = [
        subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, text=True)
        for _ in range(8)
    ]
    for call in calls:
        assert call.stdin is not None
        call.stdin.write(json.dumps(hook))
        call.stdin.close()
    assert [call.wait(60) for call in calls] == [0] * 8
    assert all(call.stdout is not None and call.stdout.read() == "" for call in calls)
    events = await events_of(hub, "tasks.concurrent-1")
    assert [e["payload"]["message"] for e in events if e["type"] == "api_action"] == [
        f"step {n}" for n in range(20)
    ]
    assert [e["payload"]["inputTokens"] for e in events if e["type"] == "llm_usage"] == list(
        range(20)
    )
    assert sum(1 for e in events if e["type"] == "tool_executed") == 8


def test_the_transcript_is_taken_a_closed_message_at_a_time() -> None:
    one = {
        "type": "assistant",
        "message": {
            "id": "m1",
            "content": [{"type": "text", "text": "a"}],
            "usage": {"input_tokens": 5, "output_tokens": 1},
        },
    }
    one_tool = {
        "type": "assistant",
        "message": {
            "id": "m1",
            "content": [
                {"type": "tool_use", "id": "t1", "name": "Bash", "input": {"command": "ls"}}
            ],
            "usage": {"input_tokens": 5, "output_tokens": 1},
        },
    }
    data = (json.dumps(one) + "\n" + json.dumps(one_tool) + "\n").encode()
    items, offset = read_transcript(data, 0, final=False)
    assert items == [] and offset == 0  # still open: its lines may not all be there
    items, offset = read_transcript(data + b'{"type":"last-prompt"}\n{"type":"ass', 0, final=False)
    assert len(items) == 1 and offset == len(data) + len(b'{"type":"last-prompt"}\n')
    (response,) = items
    assert isinstance(response, Response)
    assert (
        response.text,
        [c.name for c in response.tool_calls],
        response.usage["input_tokens"],
    ) == ("a", ["Bash"], 5)
    items, offset = read_transcript(data, 0, final=True)  # Stop: the last one is whole
    assert len(items) == 1 and offset == len(data)
    session = Session.from_json(Session("s", offset=3).to_json())
    assert (session.session_id, session.offset, session.event_id()) == ("s", 3, "cc-s-1")


# --- steering and abort --------------------------------------------------------------------


async def test_say_reaches_the_model_at_the_next_stop(
    claude: Path, machine: Machine, start_hub: Any
) -> None:
    hub = start_hub()
    assert machine.taskcast("claude-code", "install", "--hub", hub.url).returncode == 0
    thinking = asyncio.Event()
    machine.llm.replies = [
        Reply(text="first answer", hold=thinking),
        Reply(text="the README too, as you asked"),
    ]
    running = await machine.start(claude, "write a script")
    started = await first_started(hub)
    session_id = started["payload"]["taskId"]
    said = machine.taskcast("say", session_id, "also add a README", "--hub", hub.url)
    assert said.returncode == 0, said.stderr
    thinking.set()
    out, _ = await asyncio.wait_for(running.communicate(), 60)
    assert json.loads(out)["is_error"] is False
    assert len(machine.llm.requests) == 2 and "also add a README" in json.dumps(
        machine.llm.requests[1]["messages"]
    )
    events = await events_of(hub, f"tasks.{session_id}")
    (message,) = [e["payload"] for e in events if e["type"] == "user_message"]
    assert (message["text"], message["by"]) == ("also add a README", "anonymous")
    assert [e["payload"]["message"] for e in events if e["type"] == "api_action"] == [
        "first answer",
        "the README too, as you asked",
    ]
    assert events[-1]["type"] == "task_completed"


async def first_started(hub: HubProcess) -> dict[str, Any]:
    async with asyncio.timeout(60):
        while True:
            found = [e for e in await events_of(hub) if e["type"] == "task_started"]
            if found:
                return found[-1]
            await asyncio.sleep(0.05)


async def test_abort_stops_the_session_at_its_next_hook(
    claude: Path, machine: Machine, start_hub: Any
) -> None:
    hub = start_hub()
    assert machine.taskcast("claude-code", "install", "--hub", hub.url).returncode == 0
    thinking = asyncio.Event()
    machine.llm.replies = [
        Reply(tool_calls=[bash("echo one", call="toolu_a")], hold=thinking),
        Reply(tool_calls=[bash("echo two", call="toolu_b")]),
        Reply(text="never said"),
    ]
    running = await machine.start(claude, "run two commands", "--permission-mode", "acceptEdits")
    session_id = (await first_started(hub))["payload"]["taskId"]
    aborted = machine.taskcast(
        "abort", session_id, "--reason", "wrong repository", "--hub", hub.url
    )
    assert aborted.returncode == 0, aborted.stderr
    thinking.set()
    await asyncio.wait_for(running.communicate(), 60)
    assert len(machine.llm.requests) == 1  # stopped at the first hook after the abort
    events = await events_of(hub, f"tasks.{session_id}")
    ended = [e for e in events if e["type"] in ("task_completed", "task_aborted")]
    assert [(e["type"], e["payload"]["reason"]) for e in ended] == [
        ("task_aborted", "wrong repository")
    ]
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{hub.http}/api/tasks/{session_id}") as reply,
    ):
        assert (await reply.json())["task"]["status"] == "aborted"


# --- install, uninstall, status ----------------------------------------------------------------


def test_install_twice_and_uninstall_keep_the_users_own_settings(machine: Machine) -> None:
    settings = machine.work / ".claude" / "settings.json"
    settings.parent.mkdir()
    mine: dict[str, Any] = {
        "model": "sonnet",
        "permissions": {"allow": ["Bash(ls:*)"]},
        "hooks": {
            "PostToolUse": [
                {"matcher": "Write", "hooks": [{"type": "command", "command": "prettier --write"}]}
            ],
            "Notification": [{"hooks": [{"type": "command", "command": "notify-send claude"}]}],
        },
    }
    settings.write_text(json.dumps(mine, indent=2))
    first = machine.taskcast(
        "claude-code", "install", "--hub", "ws://127.0.0.1:9/ws", "--approve", "remote"
    )
    assert first.returncode == 0 and "added PreToolUse" in first.stdout
    once = json.loads(settings.read_text())
    second = machine.taskcast(
        "claude-code", "install", "--hub", "ws://127.0.0.1:9/ws", "--approve", "remote"
    )
    assert second.returncode == 0 and "already up to date" in second.stdout
    assert json.loads(settings.read_text()) == once  # twice = once
    assert once["model"] == "sonnet" and once["permissions"] == mine["permissions"]
    post = once["hooks"]["PostToolUse"]
    assert post[0] == mine["hooks"]["PostToolUse"][0] and MARKER in post[1]["hooks"][0]["command"]
    pre = once["hooks"]["PreToolUse"][0]
    assert (
        pre["matcher"] == "Write|Edit|MultiEdit|NotebookEdit|Bash"
        and pre["hooks"][0]["timeout"] == 630
    )
    assert once["hooks"]["SessionEnd"][0]["hooks"][0]["timeout"] == 10
    # Changing the options replaces taskcast's entries; PreToolUse goes with approve off.
    third = machine.taskcast("claude-code", "install", "--hub", "ws://127.0.0.1:9/ws")
    assert "removed PreToolUse" in third.stdout
    status = machine.taskcast("claude-code", "status")
    assert "project" in status.stdout and "does not answer" in status.stdout
    removed = machine.taskcast("claude-code", "uninstall")
    assert removed.returncode == 0 and "removed" in removed.stdout
    assert json.loads(settings.read_text()) == mine  # exactly the user's again
    assert "no taskcast hooks" in machine.taskcast("claude-code", "uninstall").stdout
    settings.write_text("{not json")
    broken = machine.taskcast("claude-code", "install")
    assert broken.returncode == 1 and "Traceback" not in broken.stderr
    assert settings.read_text() == "{not json"  # never overwritten
