"""The dashboard in a real headless Chromium, driven by Playwright (issue 4, tests 1-2)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, Page

from taskcast.client import CommunicationService
from taskcast.task import ScriptedProvider, Task
from tests.conftest import REPO
from tests.test_hub_crash import read_whole_log

OUTPUT = REPO / "test-output" / "dashboard"
OUTPUT.mkdir(parents=True, exist_ok=True)
DEMO_SCRIPT = REPO / "src" / "taskcast" / "demo" / "script.json"


async def open_dashboard(browser: Browser, address: str, **context: Any) -> Page:
    """Open the dashboard at ``address`` (the hub's base URL, or a full page URL)."""
    page = await (await browser.new_context(**context)).new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.errors = errors  # type: ignore[attr-defined]
    await page.goto(address if "?" in address else f"{address}/")
    # Deadlines here are generous: a shared CI machine once took over 10 s to show a
    # page over a 5,000-event log (they only bound how long a failure takes).
    await page.wait_for_selector("#status.live", timeout=30_000)
    return page


async def run_scripted_task(
    url: str, workdir: Path, task_id: str, script: Path = DEMO_SCRIPT
) -> str:
    service = CommunicationService(url)
    task = Task(
        ScriptedProvider.from_file(script),
        communication_service=service,
        task_id=task_id,
        cwd=workdir,
        history_dir=workdir / ".h",
        approval="auto",
    )
    result = await task.run("write hello.py and run it")
    assert await service.aflush(15)
    await service.aclose()
    return result.status


async def test_dashboard_shows_a_task_live(
    browser: Browser, start_hub: Any, tmp_path: Path
) -> None:
    hub = start_hub()
    page = await open_dashboard(browser, hub.http, viewport={"width": 1400, "height": 900})
    assert await run_scripted_task(hub.url, tmp_path, "demo-task-1") == "completed"
    await page.wait_for_function(
        "document.querySelectorAll('#feed .row.t-api_action').length === 4", timeout=15_000
    )
    log = [e for e in await read_whole_log(hub.http) if e["type"] != "history_appended"]
    actions = [e for e in log if e["type"] == "api_action"]
    shown_at = await page.evaluate("window.taskcastDashboard.shownAt")
    for action in actions:  # each message reached the page within 2 s of being sent
        assert shown_at[str(action["seq"])] - action["payload"]["timestamp"] < 2_000
    messages = await page.locator("#feed .row.t-api_action .msg").all_inner_texts()
    assert messages == [a["payload"]["message"] for a in actions]
    # The webhooks the hub delivers to are listed with their state.
    import aiohttp

    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{hub.http}/api/webhooks", json={"url": "http://127.0.0.1:9/x"}) as r,
    ):
        hook_id = (await r.json())["id"]
    await page.locator(f"#webhooks tr[data-webhook='{hook_id}']").wait_for(timeout=15_000)
    row = page.locator("#tasks tbody tr[data-task='demo-task-1']")
    await row.locator("td.s-completed").wait_for(timeout=15_000)
    # Tasks are shown by their prompt, and the table fits its panel at 1400 px.
    assert await row.locator("td.title").inner_text() == "write hello.py and run it"
    assert await page.evaluate(
        "document.querySelector('#tasks').scrollWidth"
        " <= document.querySelector('#tasks-panel .table-wrap').clientWidth"
    )
    assert await page.locator("#chart-rate canvas").count() == 1  # drawn from the start
    assert not await page.locator("#needs-panel").is_visible()  # nothing waits: no panel
    async with aiohttp.ClientSession() as session, session.get(f"{hub.http}/favicon.ico") as r:
        assert r.status == 200 and r.headers["Content-Type"] == "image/svg+xml"
    assert (await row.locator("td").nth(2).inner_text()) == "4"
    await page.screenshot(path=OUTPUT / "feed-and-tasks.png", full_page=True)

    await row.click()
    await page.wait_for_function(
        f"document.querySelectorAll('#timeline li').length === {len(log)}", timeout=15_000
    )
    kinds = await page.locator("#timeline li .what").all_inner_texts()
    assert kinds == [e["type"] for e in log]
    assert await page.locator("#timeline li.t-tool_executed").count() == 4
    assert "completed" in await page.locator("#detail-summary").inner_text()
    await page.screenshot(path=OUTPUT / "task-timeline.png")

    # Filters, pause and the phone layout.
    await page.click("#detail-close")
    await page.select_option("#filter-type", "tool_executed")
    assert await page.locator("#feed .row").count() == 4
    await page.select_option("#filter-type", "")
    await page.click("#pause")
    assert await run_scripted_task(hub.url, tmp_path / "b", "demo-task-2") == "completed"
    await asyncio.sleep(1.0)
    assert await page.locator("#feed .row").count() == 14  # paused: nothing new shown
    await page.click("#pause")
    await page.wait_for_function("document.querySelectorAll('#feed .row').length === 28")
    await page.set_viewport_size({"width": 390, "height": 844})
    await page.screenshot(path=OUTPUT / "phone.png", full_page=True)
    assert page.errors == []  # type: ignore[attr-defined]


async def test_dashboard_survives_a_hub_restart_mid_task(
    browser: Browser, start_hub: Any, tmp_path: Path
) -> None:
    hub = start_hub()
    page = await open_dashboard(browser, hub.http)
    slow_script = tmp_path / "slow.json"
    slow_script.write_text(DEMO_SCRIPT.read_text().replace('"delay": 0.3', '"delay": 0.8'))
    running = asyncio.create_task(
        run_scripted_task(hub.url, tmp_path / "w", "restart-task", slow_script)
    )
    await asyncio.sleep(1.2)
    hub.kill9()
    await page.wait_for_selector("#status.down", timeout=20_000)
    await asyncio.sleep(0.5)
    hub.restart()
    assert await running == "completed"
    log = [e for e in await read_whole_log(hub.http) if e["type"] != "history_appended"]
    await page.wait_for_function(
        f"window.taskcastDashboard.seqs.length >= {len(log)}", timeout=20_000
    )
    await asyncio.sleep(0.5)
    seqs = await page.evaluate("window.taskcastDashboard.seqs")
    assert seqs == [e["seq"] for e in log]  # every event exactly once, in order
    rows = await page.locator("#feed .row").evaluate_all("rows => rows.map(r => +r.dataset.seq)")
    assert rows == seqs
    await page.screenshot(path=OUTPUT / "after-restart.png")


async def test_dashboard_works_when_the_hub_requires_a_token(
    browser: Browser, start_hub: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from taskcast.auth import create_token

    secret = "dashboard-test-secret-0123456789abcdef"
    monkeypatch.setenv("TASKCAST_SECRET", secret)
    hub = start_hub()
    viewer = create_token(
        secret, subject="viewer", publish=[], subscribe=["tasks.>"], ttl_seconds=600
    )
    agent = create_token(
        secret, subject="agent", publish=["tasks.>"], subscribe=[], ttl_seconds=600
    )
    anonymous = await (await browser.new_context()).new_page()
    await anonymous.goto(f"{hub.http}/")
    await anonymous.wait_for_selector("#status.down", timeout=20_000)  # refused without a token
    page = await open_dashboard(browser, f"{hub.http}/?token={viewer}#")
    # A viewer token (no metrics claim) gets no hub details, yet the page goes live.
    await page.wait_for_selector("#status.live", timeout=20_000)
    assert await page.locator("#stat-publishers").text_content() == "\u2013"  # en dash
    service = CommunicationService(hub.url, token=agent)
    task = Task(
        ScriptedProvider.from_file(DEMO_SCRIPT),
        communication_service=service,
        task_id="secured-task",
        cwd=tmp_path,
        history_dir=tmp_path / ".h",
        approval="auto",
    )
    assert (await task.run("go")).status == "completed"
    assert await service.aflush(10)
    await service.aclose()
    await page.wait_for_function(
        "document.querySelectorAll('#feed .row.t-api_action').length === 4", timeout=15_000
    )
    await page.locator("#tasks tbody tr[data-task='secured-task']").click()
    await page.wait_for_function("document.querySelectorAll('#timeline li').length === 14")
    assert await anonymous.locator("#feed .row").count() == 0


async def test_needs_you_panel_approves_denies_answers_and_aborts(
    browser: Browser, start_hub: Any, tmp_path: Path
) -> None:
    from taskcast.task import OpenAIChatProvider
    from tests.fake_llm import FakeLLM, Reply

    hub = start_hub()
    llm = await FakeLLM([]).start()
    page = await open_dashboard(browser, hub.http, viewport={"width": 1400, "height": 900})
    service = CommunicationService(hub.url)

    def remote_task(task_id: str, workdir: Path) -> Task:
        workdir.mkdir()
        return Task(
            OpenAIChatProvider("gpt-test", base_url=f"{llm.base}/v1", api_key="k", stream=False),
            communication_service=service,
            task_id=task_id,
            cwd=workdir,
            history_dir=tmp_path / ".h",
            approval="remote",
        )

    write = {"id": "w", "name": "write_to_file", "arguments": {"path": "out.txt", "content": "hi"}}
    done = {"id": "d", "name": "attempt_completion", "arguments": {"result": "done"}}
    try:
        # Approve: the card shows the whole new file as added lines; the file appears.
        llm.replies = [Reply(tool_calls=[write]), Reply(tool_calls=[done])]
        running = asyncio.create_task(remote_task("ok-task", tmp_path / "a").run("write"))
        card = page.locator("#needs .request[data-task='ok-task']")
        await card.wait_for(timeout=20_000)
        assert await card.locator(".tool").inner_text() == "write_to_file"
        assert "+ hi" in await card.locator("pre").inner_text()
        await page.screenshot(path=OUTPUT / "needs-you.png", full_page=True)
        await card.locator("button.approve").click()
        assert (await asyncio.wait_for(running, 20)).status == "completed"
        assert (tmp_path / "a" / "out.txt").read_text() == "hi"
        await card.wait_for(state="detached", timeout=20_000)
        # Deny, with a reason the model is told.
        llm.replies = [Reply(tool_calls=[write]), Reply(tool_calls=[done])]
        running = asyncio.create_task(remote_task("no-task", tmp_path / "b").run("write"))
        card = page.locator("#needs .request[data-task='no-task']")
        await card.wait_for(timeout=20_000)
        await card.locator("input").fill("not today")
        await card.locator("button.deny").click()
        assert (await asyncio.wait_for(running, 20)).status == "completed"
        assert not (tmp_path / "b" / "out.txt").exists()
        told = [m for m in llm.requests[-1]["messages"] if m["role"] == "tool"][-1]["content"]
        assert "denied by anonymous (not today)" in told
        # A question, answered with one of its options.
        ask = {
            "id": "q",
            "name": "ask_followup_question",
            "arguments": {"question": "Which colour?", "options": ["red", "blue"]},
        }
        llm.replies = [Reply(tool_calls=[ask]), Reply(tool_calls=[done])]
        running = asyncio.create_task(remote_task("ask-task", tmp_path / "c").run("paint"))
        card = page.locator("#needs .request[data-task='ask-task']")
        await card.wait_for(timeout=20_000)
        await card.get_by_role("button", name="blue").click()
        assert (await asyncio.wait_for(running, 20)).status == "completed"
        told = [m for m in llm.requests[-1]["messages"] if m["role"] == "tool"][-1]["content"]
        assert told == "the user answered: blue"
        # Abort a task that waits on a slow model, from its timeline.
        llm.replies = [Reply(text="slow", delay=120)]
        running = asyncio.create_task(remote_task("slow-task", tmp_path / "d").run("think"))
        row = page.locator("#tasks tbody tr[data-task='slow-task']")
        await row.wait_for(timeout=20_000)
        await row.click()
        await page.locator("#abort").wait_for(state="visible", timeout=20_000)
        await page.locator("#abort").click()
        assert (await asyncio.wait_for(running, 10)).status == "aborted"
        await page.wait_for_function(
            "[...document.querySelectorAll('#timeline li .body')]"
            ".some((b) => b.textContent.startsWith('aborted by anonymous'))",
            timeout=20_000,
        )
        assert await page.locator("#timeline li.t-approval_resolved").count() == 0
        await page.screenshot(path=OUTPUT / "aborted.png", full_page=True)
        assert page.errors == []  # type: ignore[attr-defined]
        # A page opened later lists what already waits; large arguments are fetched whole.
        big = {**write, "arguments": {"path": "big.txt", "content": "line\n" * 8000}}
        llm.replies = [Reply(tool_calls=[big]), Reply(tool_calls=[done])]
        running = asyncio.create_task(remote_task("big-task", tmp_path / "e").run("write"))
        async with asyncio.timeout(10):
            while not any(t.get("pending") for t in await read_tasks(hub.http)):
                await asyncio.sleep(0.05)
        late = await open_dashboard(browser, hub.http)
        card = late.locator("#needs .request[data-task='big-task']")
        await card.wait_for(timeout=20_000)
        await late.wait_for_function(
            "document.querySelectorAll(\"#needs .request[data-task='big-task'] pre .add\")"
            ".length === 8001",
            timeout=20_000,
        )
        await card.locator("button.approve").click()
        assert (await asyncio.wait_for(running, 20)).status == "completed"
        assert (tmp_path / "e" / "big.txt").read_text() == "line\n" * 8000
    finally:
        await service.aclose()
        await llm.stop()


async def read_tasks(http: str) -> list[dict[str, Any]]:
    import aiohttp

    async with aiohttp.ClientSession() as session, session.get(f"{http}/api/tasks") as r:
        tasks: list[dict[str, Any]] = await r.json()
        return tasks


async def test_events_per_minute_counts_the_whole_log(browser: Browser, secure_hub: Any) -> None:
    """A log bigger than the page loads: the chart counts all of it, the tasks table
    knows every task, the feed follows its newest event, and an event naming a time no
    clock shows stops nothing."""
    import aiohttp

    from tests.helpers import bearer, publish_acked, seed, token

    hub = secure_hub()
    writer = bearer(token(["tasks.>", "other.>"]))
    async with aiohttp.ClientSession() as session:
        ws = await session.ws_connect(hub.url, headers=writer)
        for start in range(0, 5000, 1000):  # more than the 2,000 events a page loads
            await publish_acked(ws, [seed(f"t{n % 2000}", "x") for n in range(start, start + 1000)])
        odd_time = {"type": "note", "payload": {"taskId": "t7", "timestamp": 1.2e21}}
        await publish_acked(ws, [odd_time, seed("t8", "the newest")])
        await publish_acked(ws, [{"type": "note", "channel": "other.x", "payload": {}}] * 7)
        viewer = token(subscribe=["tasks.>"])
        async with session.get(f"{hub.http}/api/stats", headers=bearer(viewer)) as r:
            stats = await r.json()
    assert sum(b["total"] for b in stats["buckets"]) == 5002  # other.x is not readable
    assert len(stats["buckets"]) == 60 and stats["until"] - stats["from"] == 3_600_000
    page = await open_dashboard(browser, f"{hub.http}/?token={viewer}#")
    await page.wait_for_function(
        "[...window.taskcastDashboard.perMinute.values()].reduce((a, b) => a + b, 0) === 5002",
        timeout=15_000,
    )
    assert "whole log" in await page.locator("#chart-range").inner_text()
    # 2,000 tasks, more than one /api/tasks page: the table shows the 500 most recently
    # active and says so; sorted by name, the first are t0, t1, t10 (none left out).
    shown = "500 of 2,000 shown, sort to see others"
    await page.wait_for_function(
        f"document.getElementById('tasks-shown').textContent === {shown!r}", timeout=15_000
    )
    assert await page.locator("#tasks tbody tr").count() == 500
    await page.locator("#tasks th[data-sort='taskId']").click()
    await page.locator("#tasks th[data-sort='taskId']").click()  # ascending
    first = page.locator("#tasks tbody tr").first
    assert await first.get_attribute("data-task") == "t0"
    # The feed followed the backlog to its newest row, and stops following when the
    # user scrolls up (what comes meanwhile is announced; the button brings it back).
    newest = page.locator("#feed .row").last
    assert "the newest" in await newest.inner_text()
    at_bottom = "feed.scrollTop + feed.clientHeight >= feed.scrollHeight - 8"
    await page.wait_for_function(at_bottom, timeout=15_000)
    assert await page.locator("#jump").is_hidden()
    await page.locator("#feed").hover()
    await page.mouse.wheel(0, -3000)
    await page.wait_for_function("!window.taskcastDashboard.stick", timeout=15_000)
    async with aiohttp.ClientSession() as session:
        later = seed("t9", "while scrolled up")
        async with session.post(f"{hub.http}/api/events", json=later, headers=writer) as r:
            assert r.status == 200
    await page.locator("#jump").wait_for(state="visible", timeout=15_000)
    assert not await page.evaluate(at_bottom)
    await page.locator("#jump").click()
    await page.wait_for_function(at_bottom, timeout=15_000)
    assert "while scrolled up" in await page.locator("#feed .row").last.inner_text()
    assert page.errors == []  # type: ignore[attr-defined]


async def test_a_task_whose_runner_died_is_shown_lost_with_its_resume_command(
    browser: Browser, start_hub: Any
) -> None:
    import aiohttp

    hub = start_hub()
    page = await open_dashboard(browser, hub.http)
    async with aiohttp.ClientSession() as session:
        # A runner takes the task's lease (1 s), starts, and is never heard of again.
        lease = {"holder": "box-a:4242:dead", "ttl": 1}
        async with session.post(f"{hub.http}/api/tasks/t-lost/lease", json=lease) as r:
            assert r.status == 200
        started = {"type": "task_started", "payload": {"taskId": "t-lost", "prompt": "go"}}
        async with session.post(f"{hub.http}/api/events", json=started) as r:
            assert r.status == 200
    row = page.locator("#tasks tbody tr[data-task='t-lost']")
    await row.locator("td.s-lost").wait_for(timeout=15_000)
    await row.click()
    await page.locator("#detail-lost").wait_for(state="visible", timeout=15_000)
    command = await page.locator("#resume-command").inner_text()
    assert command == f"taskcast run - --resume t-lost --hub ws://127.0.0.1:{hub.port}/ws"
    assert not await page.locator("#detail-actions").is_visible()  # nobody to steer
    await page.locator("#timeline li.t-runner_lost").wait_for(timeout=15_000)
    await page.screenshot(path=OUTPUT / "runner-lost.png")
    async with aiohttp.ClientSession() as session:
        resumed = {"type": "task_resumed", "payload": {"taskId": "t-lost", "lastSeq": 2}}
        async with session.post(f"{hub.http}/api/events", json=resumed) as r:
            assert r.status == 200
    await row.locator("td.s-running").wait_for(timeout=15_000)
    assert page.errors == []  # type: ignore[attr-defined]
