"""Security round two (issue 9): each test performs one attack from the probe against a
real hub process (or a real Task) and checks the defence. See docs/security.md."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from hypothesis import given, settings
from hypothesis import strategies as st
from playwright.async_api import Browser

from taskcast.client import CommunicationService
from taskcast.frames import Publish, parse_client_frame
from taskcast.store import SqliteStore
from taskcast.task import ScriptedProvider, Task
from tests.conftest import REPO, HubProcess
from tests.helpers import bearer, metric, publish_acked, recv, seed, send, subscribe, token

JSON = {"Content-Type": "application/json"}


def rss_mib(hub: HubProcess) -> float:
    assert hub.proc is not None
    for line in Path(f"/proc/{hub.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


async def hub_serves(hub: HubProcess) -> None:
    """The hub still answers a publish and a query (it survived the attack)."""
    async with aiohttp.ClientSession() as session:
        ws = await session.ws_connect(hub.url, headers=bearer(token(["tasks.>"])))
        (ack,) = await publish_acked(ws, [seed("alive", "still here")])
        assert ack["type"] == "ack"
        await ws.close()


# --- 1. memory exhaustion by ping flood ----------------------------------------


async def test_ping_flood_cannot_grow_the_hub(secure_hub: Any) -> None:
    hub = secure_hub("--max-subscriber-buffer", str(256 * 1024))
    no_scopes = bearer(token())
    before = rss_mib(hub)
    async with aiohttp.ClientSession() as session:
        # 300 pings whose id is 1 MB, never reading: once each echoed a megabyte.
        ws = await session.ws_connect(hub.url, headers=no_scopes, max_msg_size=0)
        big = json.dumps({"type": "ping", "id": "x" * (1024 * 1024 - 64)})
        for _ in range(300):
            await ws.send_str(big)
        # Many small pings, still not reading: replies count toward the buffer limit.
        # (Enough pongs, 46 MB, to fill the kernel's socket buffers many times over.)
        flood = ws.closed
        small = json.dumps({"type": "ping", "id": "p" * 200})
        with contextlib.suppress(ConnectionError, aiohttp.ClientError):
            for _ in range(200_000):
                await ws.send_str(small)
        codes = []
        while True:
            message = await ws.receive(timeout=30)
            if message.type == aiohttp.WSMsgType.TEXT:
                codes.append(json.loads(message.data).get("code"))
                continue
            break
        assert not flood
        # Closed as a slow consumer: 4008 when the close frame still fits, else the
        # socket is dropped (1006) — a client that reads nothing cannot take a close.
        assert ws.close_code in (4008, 1006), ws.close_code
        assert "invalid_frame" in codes  # the megabyte ids were refused, not echoed
        async with session.get(f"{hub.http}/metrics", headers=bearer(token(metrics=True))) as r:
            assert "taskcast_slow_consumer_disconnects_total 1.0" in await r.text()
    grown = rss_mib(hub) - before
    assert grown < 150, f"hub grew by {grown:.0f} MiB"
    await hub_serves(hub)


# --- 2. squatting ids ---------------------------------------------------------------


async def test_hub_ids_are_unguessable_and_ids_are_scoped_to_the_publisher(
    secure_hub: Any,
) -> None:
    hub = secure_hub()
    victim = bearer(token(["tasks.>"], ["tasks.>"], subject="victim"))
    evil = bearer(token(["evil.>"], ["evil.>"], subject="evil"))
    async with aiohttp.ClientSession() as session:
        victim_ws = await session.ws_connect(hub.url, headers=victim)
        evil_ws = await session.ws_connect(hub.url, headers=evil)
        first, second = await publish_acked(victim_ws, [seed("v", "1"), seed("v", "2")])
        for ack in (first, second):
            assert len(ack["id"]) == 44 and int(ack["id"], 16) >= 0  # ms + random 128-bit
        assert first["id"][12:] != second["id"][12:]  # nothing to count up from
        # The attacker takes the ids the victim is about to use...
        squatted = await publish_acked(
            evil_ws,
            [
                {"type": "note", "channel": "evil.x", "id": f"victim-{n}", "payload": {}}
                for n in range(50)
            ],
        )
        assert all(r["type"] == "ack" and not r.get("duplicate") for r in squatted)
        # ...and the victim's events are still stored and delivered, not "duplicates".
        listener = await session.ws_connect(hub.url, headers=victim)
        await subscribe(listener, "tasks.v")
        mine = await publish_acked(
            victim_ws, [seed("v", f"m{n}", id=f"victim-{n}") for n in (1, 2)]
        )
        assert all(r["type"] == "ack" and "duplicate" not in r for r in mine)
        delivered = [json.loads((await listener.receive(timeout=10)).data) for _ in range(2)]
        assert [d["payload"]["message"] for d in delivered] == ["m1", "m2"]
        assert {d["publisher"] for d in delivered} == {"victim"}
        # Probing an id says nothing about other principals: the attacker's own event.
        (probe,) = await publish_acked(
            evil_ws, [{"type": "note", "channel": "evil.x", "id": "victim-1", "payload": {}}]
        )
        assert probe["duplicate"] is True and probe["seq"] == squatted[1]["seq"]
        assert probe["seq"] != mine[0]["seq"]
        # The victim's own resend is still idempotent.
        (again,) = await publish_acked(victim_ws, [seed("v", "m1", id="victim-1")])
        assert again["duplicate"] is True and again["seq"] == mine[0]["seq"]


async def test_one_colliding_event_never_fails_its_batch(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "log.db")
    await store.open()
    try:
        first = parse_client_frame(json.dumps(seed("a", "x", id="taken")))
        assert isinstance(first, Publish)
        await store.append([first], 1)
        innocent = [parse_client_frame(json.dumps(seed("a", f"ok{n}"))) for n in range(3)]
        # A hub-made id that its publisher had used already (a collision):
        colliding = parse_client_frame(json.dumps(seed("a", "clash")))
        assert isinstance(colliding, Publish)
        colliding.id, colliding.client_id = "taken", False
        batch = [*innocent[:2], colliding, innocent[2]]
        results = await store.append(batch, 2)  # type: ignore[arg-type]
        assert [r.error is None for r in results] == [True, True, False, True]
        assert [r.seq for r in results if r.error is None] == [2, 3, 4]
        assert store.head == 4
    finally:
        await store.close()


async def test_old_logs_are_migrated_to_per_publisher_ids(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    conn.executescript(
        "CREATE TABLE events (seq INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, channel TEXT NOT"
        " NULL, type TEXT NOT NULL, task_id TEXT, source TEXT, ts INTEGER NOT NULL, body BLOB NOT"
        " NULL); CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);"
        "INSERT INTO events VALUES (1, 'e1', 'tasks.a', 'note', 'a', NULL, 5, '{\"type\":\"note\"}');"
        "INSERT INTO meta VALUES ('head', 1);"
    )
    conn.commit()
    conn.close()
    store = SqliteStore(path)
    await store.open()
    try:
        again = parse_client_frame(json.dumps({"type": "note", "id": "e1", "payload": {}}))
        (result,) = await store.append([again], 6)  # type: ignore[list-item]
        assert result.duplicate and result.seq == 1  # the old row now belongs to "anonymous"
        other = parse_client_frame(json.dumps({"type": "note", "id": "e1", "payload": {}}), "bob")
        (fresh,) = await store.append([other], 7)  # type: ignore[list-item]
        assert not fresh.duplicate and fresh.seq == 2
    finally:
        await store.close()


# --- 3. a hub without a secret and the web pages of its user's browser ---------------


async def test_no_auth_hub_refuses_foreign_origins_hosts_and_content_types(
    start_hub: Any,
) -> None:
    hub = start_hub("--allowed-origin", "http://dash.example", "--allowed-host", "hub.internal")
    own = f"http://127.0.0.1:{hub.port}"
    cases = [
        # (headers, websocket upgrade status)
        ({}, 101),  # not a browser
        ({"Origin": own}, 101),  # the dashboard itself
        ({"Origin": "http://dash.example"}, 101),  # --allowed-origin
        ({"Origin": "http://evil.example"}, 403),
        ({"Origin": "null"}, 403),  # sandboxed iframes, file:// pages
        ({"Origin": f"http://localhost:{hub.port}"}, 403),  # another origin, same machine
        ({"Host": "evil.example"}, 421),  # DNS rebinding
        ({"Host": f"evil.example:{hub.port}", "Origin": f"http://evil.example:{hub.port}"}, 421),
        ({"Host": f"localhost:{hub.port}"}, 101),
        ({"Host": f"hub.internal:{hub.port}"}, 101),  # --allowed-host
        ({"Host": "[::1]"}, 101),
    ]
    async with aiohttp.ClientSession() as session:
        for headers, expected in cases:
            try:
                ws = await session.ws_connect(hub.url, headers=headers)
            except aiohttp.WSServerHandshakeError as exc:
                assert exc.status == expected, (headers, exc.status)
            else:
                assert expected == 101, headers
                await ws.close()
        async with session.get(f"{hub.http}/api/events", headers={"Host": "evil.example"}) as r:
            assert r.status == 421 and (await r.json())["code"] == "bad_host"
        # A no-cors POST can only be text/plain, form or multipart: all refused.
        for content_type in ("text/plain", "application/x-www-form-urlencoded", None):
            body = json.dumps(seed("injected", "from a web page"))
            headers = {"Content-Type": content_type} if content_type else {}
            async with session.post(
                f"{hub.http}/api/events", data=body.encode(), headers=headers
            ) as r:
                assert r.status == 415, content_type
        async with session.post(
            f"{hub.http}/api/events",
            data=json.dumps(seed("injected", "x")),
            headers={**JSON, "Origin": "http://evil.example"},
        ) as r:
            assert r.status == 403
        async with session.get(f"{hub.http}/api/events?since=0") as r:
            assert await r.json() == []  # nothing was injected
        async with session.post(
            f"{hub.http}/api/events", data=json.dumps(seed("ok", "x")), headers=JSON
        ) as r:
            assert r.status == 200


ATTACKER_PAGE = """<!doctype html><title>innocent</title><script>
window.results = {ws: "pending", post: "pending"};
const ws = new WebSocket("ws://127.0.0.1:HUB_PORT/ws");
ws.onopen = () => { ws.send(JSON.stringify({type: "subscribe", channel: ">", since: 0})); };
ws.onmessage = (m) => { window.results.ws = "read: " + m.data; };
ws.onerror = () => { window.results.ws = "refused"; };
ws.onclose = () => { if (window.results.ws === "pending") window.results.ws = "refused"; };
fetch("http://127.0.0.1:HUB_PORT/api/events", {method: "POST", mode: "no-cors",
  headers: {"Content-Type": "text/plain"},
  body: JSON.stringify({type: "api_action", payload: {taskId: "injected",
    message: "from a web page", timestamp: 1}})})
  .then(() => { window.results.post = "sent"; }, () => { window.results.post = "failed"; });
</script>"""


async def test_a_web_page_on_another_origin_can_neither_read_nor_inject(
    start_hub: Any, browser: Browser, tmp_path: Path
) -> None:
    hub = start_hub()
    async with aiohttp.ClientSession() as session:
        ws = await session.ws_connect(hub.url)
        await publish_acked(ws, [seed("secret-task", "the user's private prompt")])
        await ws.close()
    page_html = ATTACKER_PAGE.replace("HUB_PORT", str(hub.port))

    async def attacker(_: web.Request) -> web.Response:
        return web.Response(text=page_html, content_type="text/html")

    app = web.Application()
    app.router.add_get("/", attacker)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.2", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        page = await browser.new_page()
        await page.goto(f"http://127.0.0.2:{port}/")
        await page.wait_for_function(
            "window.results.ws !== 'pending' && window.results.post !== 'pending'"
        )
        results = await page.evaluate("window.results")
        assert results["ws"] == "refused", results
        await page.close()
    finally:
        await runner.cleanup()
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{hub.http}/api/events?since=0") as r,
    ):
        stored = await r.json()
    assert [e["payload"]["taskId"] for e in stored] == ["secret-task"]  # nothing injected


# --- 4. Task(tools=[...]) and the default approval ------------------------------------


async def test_tools_outside_the_task_list_never_run(tmp_path: Path) -> None:
    script = [
        {
            "text": "",
            "tool_calls": [
                {"name": "execute_command", "arguments": {"command": "touch pwned"}},
                {"name": "write_to_file", "arguments": {"path": "w.txt", "content": "x"}},
            ],
        },
        {"text": "", "tool_calls": [{"name": "attempt_completion", "arguments": {"result": "d"}}]},
    ]
    task = Task(
        ScriptedProvider(script),
        cwd=tmp_path,
        history_dir=tmp_path / ".h",
        tools=["read_file", "attempt_completion"],
        approval="auto",
    )
    assert (await task.run("try")).status == "completed"
    assert not (tmp_path / "pwned").exists() and not (tmp_path / "w.txt").exists()
    results = [m for m in task.api_conversation_history if m["role"] == "tool"]
    assert "not enabled for this task" in results[0]["content"] and results[0]["is_error"]


async def test_default_approval_is_read_only_in_the_python_api(tmp_path: Path) -> None:
    script = [
        {
            "text": "",
            "tool_calls": [
                {"name": "write_to_file", "arguments": {"path": "w.txt", "content": "x"}},
                {"name": "list_files", "arguments": {}},
            ],
        },
        {"text": "", "tool_calls": [{"name": "attempt_completion", "arguments": {"result": "d"}}]},
    ]
    task = Task(ScriptedProvider(script), cwd=tmp_path, history_dir=tmp_path / ".h")
    await task.run("try")
    assert not (tmp_path / "w.txt").exists()  # denied: nobody approved it
    results = [m for m in task.api_conversation_history if m["role"] == "tool"]
    assert "denied" in results[0]["content"] and not results[1]["is_error"]


# --- 5 and 6. task summaries and task events belong to their channel -----------------


async def test_task_summaries_and_events_cannot_be_claimed_from_another_scope(
    secure_hub: Any,
) -> None:
    hub = secure_hub()
    evil = bearer(token(["evil.>", "tasks.a.>"], ["evil.>"], subject="evil"))
    victim = bearer(token(["tasks.victim", "tasks.b"], ["tasks.victim", "tasks.b"], subject="v"))
    async with aiohttp.ClientSession() as session:
        evil_ws = await session.ws_connect(hub.url, headers=evil)
        victim_ws = await session.ws_connect(hub.url, headers=victim)
        (claim,) = await publish_acked(
            evil_ws,
            [{"type": "task_started", "channel": "evil.claim", "payload": {"taskId": "victim"}}],
        )
        assert claim["type"] == "ack"  # an event elsewhere is fine; it claims nothing
        started = {"type": "task_started", "payload": {"taskId": "victim", "prompt": "private"}}
        await publish_acked(victim_ws, [started])
        async with session.get(f"{hub.http}/api/tasks/victim", headers=victim) as r:
            assert r.status == 200
            assert (await r.json())["task"]["prompt"] == "private"
        async with session.get(f"{hub.http}/api/tasks/victim", headers=evil) as r:
            assert r.status == 404
        async with session.get(f"{hub.http}/api/tasks", headers=evil) as r:
            assert await r.json() == []
        # Forged lifecycle for task b from the attacker's own task channel: refused.
        forged = {
            "type": "task_completed",
            "channel": "tasks.a.x",
            "payload": {"taskId": "b", "result": "forged"},
        }
        (refused,) = await publish_acked(evil_ws, [forged])
        assert refused["code"] == "invalid_event" and "does not match" in refused["message"]
        # And a source naming someone else is namespaced under the token's sub.
        listener = await session.ws_connect(hub.url, headers=bearer(token(subscribe=["tasks.>"])))
        await subscribe(listener, "tasks.a.>")
        await publish_acked(
            evil_ws,
            [
                {
                    "type": "note",
                    "channel": "tasks.a.x",
                    "source": "admin-dashboard",
                    "publisher": "root",
                    "payload": {"taskId": "a"},
                }
            ],
        )
        delivered = json.loads((await listener.receive(timeout=10)).data)
        assert delivered["source"] == "evil/admin-dashboard"
        assert delivered["publisher"] == "evil"


# --- 7. expired tokens on open connections -------------------------------------------


async def test_expired_tokens_close_open_connections_and_the_sdk_renews(secure_hub: Any) -> None:
    hub = secure_hub()
    short = token(["tasks.>"], ["tasks.>"], ttl=2)
    async with aiohttp.ClientSession() as session:
        ws = await session.ws_connect(hub.url, headers=bearer(short))
        await subscribe(ws, "tasks.>")
        message = await ws.receive(timeout=30)
        assert message.type == aiohttp.WSMsgType.CLOSE and ws.close_code == 4401
        assert message.extra is not None
        assert json.loads(message.extra) == {"code": "token_expired"}
        sse_token = token(subscribe=["tasks.>"], ttl=2)
        async with session.get(
            f"{hub.http}/api/events/stream?channel=tasks.>", headers=bearer(sse_token)
        ) as r:
            assert r.status == 200
            async with asyncio.timeout(30):
                async for _ in r.content:
                    pass  # the stream ends at exp
    minted: list[str] = []

    def fresh_token() -> str:
        minted.append(token(["tasks.>"], ttl=2))
        return minted[-1]

    service = CommunicationService(hub.url, token=fresh_token)
    try:
        for n in range(6):
            service.send_message(seed("renew", str(n)))
            await asyncio.sleep(1)
        assert await service.aflush(30)
    finally:
        await service.aclose()
    assert len(minted) >= 2  # it reconnected with a new token after 4401
    async with (
        aiohttp.ClientSession() as session,
        session.get(
            f"{hub.http}/api/events?taskId=renew", headers=bearer(token(subscribe=[">"]))
        ) as r,
    ):
        assert len(await r.json()) == 6  # every event stored once


# --- 8. execute_command: numbers, environment, escaping the kill ----------------------


def _command_task(tmp_path: Path, arguments: dict[str, Any]) -> Task:
    script = [
        {"text": "", "tool_calls": [{"name": "execute_command", "arguments": arguments}]},
        {"text": "", "tool_calls": [{"name": "attempt_completion", "arguments": {"result": "d"}}]},
    ]
    return Task(
        ScriptedProvider(script),
        cwd=tmp_path,
        history_dir=tmp_path / ".h",
        approval="auto",
        command_timeout=5,
    )


def _tool_output(task: Task) -> dict[str, Any]:
    return next(m for m in task.api_conversation_history if m["role"] == "tool")


@pytest.mark.parametrize("timeout", ["nan", float("nan"), float("inf"), -1, 0, True, "10"])
async def test_execute_command_refuses_bad_timeouts(tmp_path: Path, timeout: Any) -> None:
    task = _command_task(tmp_path, {"command": "echo ran > ran.txt", "timeout": timeout})
    await task.run("go")
    result = _tool_output(task)
    assert result["is_error"] and "timeout" in result["content"]
    assert not (tmp_path / "ran.txt").exists()


async def test_commands_get_a_minimal_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TASKCAST_SECRET", "hub-secret-value-0123456789abcdef")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-live-key-value")
    task = _command_task(tmp_path, {"command": "env"})
    await task.run("go")
    output = _tool_output(task)["content"]
    assert "PATH=" in output
    assert "hub-secret-value" not in output and "sk-live-key-value" not in output


async def test_setsid_does_not_escape_the_kill(tmp_path: Path) -> None:
    command = "setsid sh -c 'echo $$ > escaped.pid; exec sleep 300' & sleep 0.5; echo started"
    task = _command_task(tmp_path, {"command": command})
    await task.run("go")
    pid = int((tmp_path / "escaped.pid").read_text())
    assert _gone(pid), f"process {pid} outlived its tool call"
    # And on timeout, a grandchild in its own session is killed with the command.
    command = "setsid sh -c 'echo $$ > late.pid; exec sleep 300' & sleep 300"
    task = _command_task(tmp_path, {"command": command, "timeout": 1})
    await task.run("go")
    assert "timed out" in _tool_output(task)["content"]
    assert _gone(int((tmp_path / "late.pid").read_text()))


def _gone(pid: int) -> bool:
    """Dead: no such process, or a zombie waiting for its (re)parent to reap it."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            return True
        if state in ("Z", "X"):
            return True
        time.sleep(0.05)
    return False


# --- 9. catastrophic regexes -------------------------------------------------------------


async def test_search_with_a_catastrophic_regex_cannot_freeze_the_agent(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("a" * 60 + "b\n")
    script = [
        {
            "text": "",
            "tool_calls": [{"name": "search_files", "arguments": {"regex": "(a+)+$"}}],
        },
        {"text": "", "tool_calls": [{"name": "attempt_completion", "arguments": {"result": "d"}}]},
    ]
    task = Task(ScriptedProvider(script), cwd=tmp_path, history_dir=tmp_path / ".h")
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.001)

    beat = asyncio.create_task(ticker())
    try:
        async with asyncio.timeout(30):  # 2^60 steps with a backtracking engine
            await task.run("search")
    finally:
        beat.cancel()
    assert ticks > 0
    assert "no matches" in _tool_output(task)["content"]


# --- 10. redaction on a corpus of real-format secrets --------------------------------------

SECRETS = {
    "json api key": ('{"api_key": "Xq9vLr2TbK8mWz4N"}', "Xq9vLr2TbK8mWz4N"),
    "json password": ('{"password": "correct-horse-battery"}', "correct-horse-battery"),
    "aws secret": (
        "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        "wJalrXUtnFEMI/K7MDENG",
    ),
    "aws id": ("AKIAIOSFODNN7EXAMPLE", "AKIAIOSFODNN7EXAMPLE"),
    "basic auth header": ("Authorization: Basic dXNlcjpwYXNzd29yZA==", "dXNlcjpwYXNzd29yZA"),
    "bearer header": ("authorization: Bearer abc.def.ghi-123456", "abc.def.ghi-123456"),
    "url credentials": ("postgres://app:s3cr3tPass@db.internal:5432/app", "s3cr3tPass"),
    "stripe live": ("sk_live_51H8abcdEFGHijklMNOPqrstUVWXyz0123456789", "sk_live_51H8abcd"),
    "google api key": ("key=AIzaSyDdI0hCZtE6vySjMm-WEfRq3CPzqKqqsHI", "AIzaSyDdI0hCZtE6vySjMm"),
    "github": ("ghp_16C7e42F292c6912E7710c838347Ae178B4a", "ghp_16C7e42F292c6912E7710c"),
    "gitlab": ("glpat-xxxxxxxxxxxxxxxxxxxx1234", "glpat-xxxxxxxxxxxx"),
    "slack": ("xoxb-2634-9876543210-AbCdEfGhIjKlMnOpQrStUvWx", "9876543210-AbCdEf"),
    "sendgrid": (
        "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",
        "TwL2iGABf9DHoTf",
    ),
    "openai": ("sk-proj-Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4z", "sk-proj-Ab3dEf"),
    "anthropic": ("sk-ant-api03-AbCdEfGhIjKlMnOpQrStUvWxYz012345", "AbCdEfGhIjKlMnOp"),
    "jwt": (
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
        "dozjgNryP4J3jVmNHl0w5N",
    ),
    "env password": ("DB_PASSWORD=hunter2hunter2", "hunter2hunter2"),
    "yaml secret": ("client_secret: 8f3a9c2e7b1d", "8f3a9c2e7b1d"),
    "private key": (
        "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n"
        "-----END OPENSSH PRIVATE KEY-----",
        "b3BlbnNzaC1rZXktdjEAAAAA",
    ),
    "twilio": ("SK0123456789abcdef0123456789abcdef", "SK0123456789abcdef"),
}
HARMLESS = [
    "the tokenizer splits text; a password policy applies",
    "def get_token(self): return self._token",
    "see https://example.com/docs?page=2 and http://localhost:8765/",
    "wrote 120 bytes to hello.py",
    "exit code 0",
]


@pytest.mark.parametrize("name", sorted(SECRETS))
def test_redaction_hides_real_format_secrets(name: str) -> None:
    from taskcast.task.redaction import Redactor

    text, secret = SECRETS[name]
    redacted = Redactor().text(f"found: {text} (line 3)")
    assert secret not in redacted, redacted
    assert "[REDACTED]" in redacted and redacted.startswith("found:")


def test_redaction_leaves_ordinary_text_alone() -> None:
    from taskcast.task.redaction import Redactor

    redactor = Redactor()
    for text in HARMLESS:
        assert redactor.text(text) == text


# --- 11. replay floods ------------------------------------------------------------------------


async def test_subscribe_floods_neither_stall_the_api_nor_outlive_their_client(
    start_hub: Any,
) -> None:
    hub = start_hub("--max-subscriber-buffer", str(64 * 1024 * 1024))
    async with aiohttp.ClientSession() as session:
        ws = await session.ws_connect(hub.url)
        for start in range(0, 20_000, 2_000):
            await publish_acked(
                ws, [seed(f"t{n % 50}", "x" * 100) for n in range(start, start + 2000)]
            )
        flood = await session.ws_connect(hub.url)
        for n in range(3000):
            await flood.send_str(json.dumps({"type": "subscribe", "channel": ">", "since": n % 7}))
        # The API answers while the flood is queued (it would wait 17-58 s before).
        async with asyncio.timeout(15), session.get(f"{hub.http}/api/events?limit=5") as r:
            assert r.status == 200 and len(await r.json()) == 5
        await flood.close()
        # Once the client is gone its replays stop: the counter settles far below the
        # 3,000 x 20,000 events the flood asked for.
        previous = -1.0
        async with asyncio.timeout(30):
            while True:
                current = await metric(session, hub.http, "taskcast_events_replayed_total")
                if current == previous:
                    break
                previous = current
                await asyncio.sleep(0.5)
        assert previous < 200_000, previous
    await hub_serves_plain(hub)


async def hub_serves_plain(hub: HubProcess) -> None:
    async with aiohttp.ClientSession() as session:
        ws = await session.ws_connect(hub.url)
        (ack,) = await publish_acked(ws, [seed("alive", "still here")])
        assert ack["type"] == "ack"


# --- 12. private files ---------------------------------------------------------------------------


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_log_outbox_and_history_are_private(tmp_path: Path) -> None:
    os.umask(0o022)
    store_dir = tmp_path / "hubdata"
    hub = HubProcess(f"sqlite:{store_dir / 'events.db'}").start(tmp_path / "hub.log")
    try:
        outbox = tmp_path / "agent" / "outbox.jsonl"
        service = CommunicationService(hub.url, outbox_path=outbox)
        task = Task(
            ScriptedProvider(
                [
                    {
                        "text": "",
                        "tool_calls": [
                            {"name": "attempt_completion", "arguments": {"result": "d"}}
                        ],
                    }
                ]
            ),
            communication_service=service,
            cwd=tmp_path,
            history_dir=tmp_path / "history",
        )
        await task.run("hello")
        assert await service.aflush(10)
        await service.aclose()
        assert list(store_dir.glob("events.db.journal-*"))  # the commit journal's file
        for path in (
            store_dir / "events.db",
            store_dir / "events.db-wal",
            store_dir / "events.db-shm",
            store_dir / "events.db.lock",
            *store_dir.glob("events.db.journal-*"),
            outbox,
            *(tmp_path / "history" / task.task_id).iterdir(),
        ):
            assert _mode(path) == 0o600, (path, oct(_mode(path)))
        for directory in (store_dir, outbox.parent, tmp_path / "history" / task.task_id):
            assert _mode(directory) == 0o700, (directory, oct(_mode(directory)))
    finally:
        hub.terminate()


# --- 13. escape sequences on the terminal ------------------------------------------------


async def test_listen_never_writes_control_characters_to_the_terminal(start_hub: Any) -> None:
    hub = start_hub()
    evil = "\x1b]52;c;cm0gLXJmIH4=\x07\x1b[2J\x9b31m done"
    async with aiohttp.ClientSession() as session:
        ws = await session.ws_connect(hub.url)
        (ack,) = await publish_acked(ws, [seed("esc", evil)])
        assert ack["type"] == "ack"
    out = subprocess.run(
        [sys.executable, "-m", "taskcast", "listen", "tasks.>", "--since", "0", "--count", "1"],
        env={**os.environ, "TASKCAST_HUB": hub.url, "COLUMNS": "200"},
        capture_output=True,
        timeout=60,
        cwd=REPO,
    )
    assert out.returncode == 0, out.stderr
    assert b"\x1b" not in out.stdout and b"\x07" not in out.stdout
    assert "\x9b" not in out.stdout.decode()
    assert b"\\x1b]52;c;" in out.stdout  # shown, harmlessly


# --- 14. every door decides the same way -----------------------------------------------------


async def test_every_door_applies_the_same_policy(secure_hub: Any) -> None:
    hub = secure_hub("--publish-rate", "2", "--publish-burst", "3", "--max-connections-per-ip", "4")
    narrow = bearer(token(["tasks.a"], ["tasks.a"]))
    outsider_channel = "tasks.b"

    async def ws_publish(session: aiohttp.ClientSession, headers: dict[str, str]) -> str:
        ws = await session.ws_connect(hub.url, headers=headers)
        (reply,) = await publish_acked(ws, [seed("b", "x")])
        await ws.close()
        return str(reply.get("code", reply["type"]))

    async def http_publish(session: aiohttp.ClientSession, headers: dict[str, str]) -> str:
        async with session.post(
            f"{hub.http}/api/events", data=json.dumps(seed("b", "x")), headers={**headers, **JSON}
        ) as r:
            return str((await r.json()).get("code", r.status))

    async def ws_subscribe(session: aiohttp.ClientSession, headers: dict[str, str]) -> str:
        ws = await session.ws_connect(hub.url, headers=headers)
        await send(ws, {"type": "subscribe", "channel": outsider_channel, "since": 0})
        reply = await recv(ws)
        await ws.close()
        return str(reply.get("code", reply["type"]))

    async def http_get(path: str, session: aiohttp.ClientSession, headers: dict[str, str]) -> str:
        async with session.get(f"{hub.http}{path}", headers=headers) as r:
            return str((await r.json()).get("code", r.status))

    readers = {
        "ws subscribe": ws_subscribe,
        "http query": lambda s, h: http_get(f"/api/events?channel={outsider_channel}", s, h),
        "csv export": lambda s, h: http_get(
            f"/api/events?channel={outsider_channel}&format=csv", s, h
        ),
        "sse": lambda s, h: http_get(f"/api/events/stream?channel={outsider_channel}", s, h),
    }
    publishers = {"ws publish": ws_publish, "http publish": http_publish}
    async with aiohttp.ClientSession() as session:
        for name, door in {**readers, **publishers}.items():
            assert await door(session, narrow) == "forbidden", name
        for name, door in {**readers, **publishers}.items():
            if name.startswith("ws"):
                with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                    await door(session, {})
                assert refused.value.status == 401, name
            else:
                assert await door(session, {}) == "unauthorized", name
        assert await http_get("/metrics", session, narrow) == "forbidden"
        assert await http_get("/metrics", session, {}) == "unauthorized"
        # The HTTP publish door has a rate limit too (per publisher, like per connection).
        allowed = bearer(token(["tasks.>"]))
        codes = []
        for n in range(10):
            async with session.post(
                f"{hub.http}/api/events",
                data=json.dumps(seed("r", str(n))),
                headers={**allowed, **JSON},
            ) as r:
                codes.append(r.status)
        assert codes[:3] == [200, 200, 200] and codes.count(429) >= 5
        # Connections per address: websocket and SSE count together.
        reader = bearer(token(subscribe=["tasks.>"]))
        held = [await session.ws_connect(hub.url, headers=reader) for _ in range(2)]
        streams = [
            await session.get(f"{hub.http}/api/events/stream?channel=tasks.>", headers=reader)
            for _ in range(2)
        ]
        assert all(s.status == 200 for s in streams)
        async with session.get(
            f"{hub.http}/api/events/stream?channel=tasks.>", headers=reader
        ) as r:
            assert r.status == 503 and (await r.json())["code"] == "too_many_connections"
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await session.ws_connect(hub.url, headers=reader)
        assert refused.value.status == 503
        for ws in held:
            await ws.close()
        for stream in streams:
            stream.close()


# --- 15. bounded task summaries ------------------------------------------------------------


def test_summaries_are_bounded() -> None:
    from taskcast.summaries import TaskSummaries

    summaries = TaskSummaries(max_tasks=3, text_chars=100)
    huge = json.dumps({"type": "task_started", "payload": {"prompt": "p" * 900_000}}).encode()
    for n in range(5):
        summaries.observe(n + 1, n, "task_started", f"t{n}", None, huge, f"tasks.t{n}")
    assert list(summaries.tasks) == ["t2", "t3", "t4"]  # the least recently active went
    assert all(len(s.prompt or "") <= 101 for s in summaries.tasks.values())
    assert summaries.forget_before(5) == 2 and list(summaries.tasks) == ["t4"]


async def test_task_listing_pages_and_retention_trims_summaries(start_hub: Any) -> None:
    hub = start_hub("--retain-events", "5", "--trim-interval", "0.1")
    async with aiohttp.ClientSession() as session:
        ws = await session.ws_connect(hub.url)
        await publish_acked(ws, [seed(f"t{n}", "x") for n in range(4)])
        async with session.get(f"{hub.http}/api/tasks?limit=3") as r:
            page = await r.json()
            assert [t["taskId"] for t in page] == ["t3", "t2", "t1"]
            assert 'rel="next"' in r.headers["Link"]
            cursor = r.headers["X-Taskcast-Next-Before"]
        async with session.get(f"{hub.http}/api/tasks?limit=3&before={cursor}") as r:
            assert [t["taskId"] for t in await r.json()] == ["t0"]
        await publish_acked(ws, [seed(f"u{n}", "x") for n in range(8)])
        async with asyncio.timeout(20):
            while True:
                async with session.get(f"{hub.http}/api/tasks") as r:
                    listed = [t["taskId"] for t in await r.json()]
                if not any(task.startswith("t") for task in listed):
                    break
                await asyncio.sleep(0.1)
        assert len(listed) <= 5


# --- 16. metrics need a claim; labels are bounded ----------------------------------------------


async def test_metrics_need_the_metrics_claim_and_labels_are_bounded(secure_hub: Any) -> None:
    hub = secure_hub()
    publisher = bearer(token([">"], [">"]))
    scraper = bearer(token(metrics=True))
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{hub.http}/metrics", headers=publisher) as r:
            assert r.status == 403
        async with session.get(f"{hub.http}/healthz", headers=publisher) as r:
            assert set(await r.json()) == {"status", "logId"}  # no counts, no store
        async with session.get(f"{hub.http}/healthz", headers=scraper) as r:
            assert "head" in await r.json()
        ws = await session.ws_connect(hub.url, headers=publisher)
        await publish_acked(
            ws, [{"type": f"kind{n}", "channel": "events", "payload": {}} for n in range(150)]
        )
        async with session.get(f"{hub.http}/metrics", headers=scraper) as r:
            text = await r.text()
    labels = [
        line for line in text.splitlines() if line.startswith("taskcast_events_published_total{")
    ]
    assert len(labels) == 101 and any('type="other"' in line for line in labels)


# --- 17. CSV formula injection ------------------------------------------------------------------


async def test_csv_cells_never_start_a_formula(start_hub: Any) -> None:
    hub = start_hub()
    async with aiohttp.ClientSession() as session:
        ws = await session.ws_connect(hub.url)
        await publish_acked(
            ws,
            [
                {
                    "type": "-1-1",
                    "id": '=HYPERLINK("http://evil.example","x")',
                    "source": "@SUM(1,2)",
                    "channel": "events",
                    "payload": {"a": 1},
                }
            ],
        )
        async with session.get(f"{hub.http}/api/events?format=csv") as r:
            rows = list(csv.reader(io.StringIO(await r.text())))
    header, row = rows[0], rows[1]
    cells = dict(zip(header, row, strict=True))
    assert cells["id"].startswith("'=") and cells["source"].startswith("'@")
    assert cells["type"] == "'-1-1"
    assert not any(cell.startswith(("=", "+", "-", "@")) for cell in row)


# --- 18. absurd input gets a clean error ---------------------------------------------------------


async def test_deep_nesting_and_huge_numbers_get_clean_errors(start_hub: Any) -> None:
    hub = start_hub()
    deep = '{"type":"note","payload":{"a":' + "[" * 5000 + "]" * 5000 + "}}"
    async with aiohttp.ClientSession() as session:
        ws = await session.ws_connect(hub.url)
        await ws.send_str(deep)
        assert (await recv(ws))["code"] == "bad_json"
        await send(ws, {"type": "subscribe", "channel": ">", "since": 10**26})
        assert (await recv(ws))["code"] == "invalid_frame"
        await send(ws, {"type": "ping", "id": 10**30})
        assert (await recv(ws))["code"] == "invalid_frame"
        (ack,) = await publish_acked(ws, [seed("t", "still fine")])
        assert ack["type"] == "ack"  # the connection stayed open
        async with session.post(f"{hub.http}/api/events", data=deep, headers=JSON) as r:
            assert r.status == 400 and (await r.json())["code"] == "bad_json"
        for query in ("since=100000000000000000000000000", "since=1e26", "until=9" * 1, "limit=-1"):
            async with session.get(f"{hub.http}/api/events?{query}") as r:
                assert r.status in (200, 400), query
                if query != "until=9":
                    assert (await r.json())["code"] == "invalid_query", query
        async with session.get(
            f"{hub.http}/api/events/stream", headers={"Last-Event-ID": "9" * 40}
        ) as r:
            assert r.status == 200  # an absurd Last-Event-ID is ignored, not a 500
            r.close()


# --- 19. token lifetime ---------------------------------------------------------------------------


async def test_tokens_that_live_too_long_are_refused(secure_hub: Any) -> None:
    hub = secure_hub()
    strict = secure_hub("--max-token-ttl", "1h")
    async with aiohttp.ClientSession() as session:
        for target, ttl, expected in (
            (hub, 29 * 86400, 200),
            (hub, 31 * 86400, 401),
            (strict, 3000, 200),
            (strict, 7200, 401),
        ):
            headers = bearer(token(subscribe=[">"], ttl=ttl))
            async with session.get(f"{target.http}/api/events", headers=headers) as r:
                assert r.status == expected, (ttl, await r.text())
                if expected == 401:
                    assert "lifetime" in (await r.json())["message"]


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="aAkKeEyYsSpPwWtT01:/@=._-\"' xXoOjJIzZ", max_size=40))
def test_the_redaction_prefilter_never_skips_a_rule_that_would_match(text: str) -> None:
    """Text the prefilter lets through unscanned matches none of the rules."""
    from taskcast.task.redaction import (
        _ASSIGNMENT,
        _AUTHORIZATION,
        _MIGHT_HOLD_A_SECRET,
        _shared_rules,
    )

    if _MIGHT_HOLD_A_SECRET.search(text) is None:
        for rule in [*_shared_rules(), _ASSIGNMENT, _AUTHORIZATION]:
            assert rule.search(text) is None, (rule.pattern, text)
