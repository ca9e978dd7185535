"""``taskcast demo``: a hub, a scripted agent task publishing to it, and a live tail.

Everything a new user needs to see the product work, on the embedded default
store, in one process: the hub in this event loop, the agent's client on its own
thread, and a subscriber printing each event as the hub delivers it.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import webbrowser
from pathlib import Path

from rich.console import Console

from taskcast.client import CommunicationService, subscribe
from taskcast.console import event_line, markup_safe, worth_showing
from taskcast.hub.config import HubConfig
from taskcast.hub.server import serve
from taskcast.store import NotALog, StoreLocked
from taskcast.task import ScriptedProvider, Task

DEMO_SCRIPT = Path(__file__).parent / "demo" / "script.json"
FINAL_TYPES = frozenset({"task_completed", "task_failed", "task_aborted"})


async def start_hub(config: HubConfig, stop: asyncio.Event) -> tuple[str, asyncio.Task[None]]:
    ready: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    server = asyncio.create_task(serve(config, ready=ready.set_result, stop=stop))
    waiters: set[asyncio.Future[object]] = {ready, server}  # type: ignore[arg-type]
    await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    if server.done():
        server.result()  # raises what stopped it
    return ready.result(), server


async def run_demo(store_url: str, port: int, *, keep: bool, open_browser: bool) -> int:
    console = Console(highlight=False)
    stop = asyncio.Event()
    config = HubConfig(port=port, store=store_url)
    try:
        try:
            url, server = await start_hub(config, stop)
        except OSError:
            config.port = 0  # the default port is taken: any free one will do
            url, server = await start_hub(config, stop)
    except StoreLocked as exc:
        console.print(f"[red]{exc}[/]: stop that hub, or pass --store to use another log")
        return 2
    except NotALog as exc:
        console.print(f"[red]{exc}[/]: pass --store to use another log")
        return 2
    http = url.removesuffix("/ws").replace("ws://", "http://")
    console.print(f"[bold]taskcast hub[/] listening on {url}")
    console.print(f"events are stored in [bold]{store_url}[/]")
    console.print(f"dashboard: [link={http}/]{http}/[/link]")
    if open_browser:
        webbrowser.open(f"{http}/")

    workspace = Path(tempfile.mkdtemp(prefix="taskcast-demo-"))
    service = CommunicationService(url, source="taskcast-demo")
    task = Task(
        ScriptedProvider.from_file(DEMO_SCRIPT),
        communication_service=service,
        cwd=workspace,
        approval="auto",
    )
    console.print(f"running a scripted agent task [bold]{task.task_id}[/] in {workspace}\n")
    received: list[int] = []

    async def watch() -> None:
        async with contextlib.aclosing(subscribe(url, f"tasks.{task.task_id}", since=0)) as events:
            async for frame in events:
                if worth_showing(frame):
                    console.print(event_line(frame, console.width))
                received.append(frame["seq"])
                if frame.get("type") in FINAL_TYPES:
                    return

    watcher = asyncio.create_task(watch())
    await asyncio.sleep(0.1)
    result = await task.run("Write a hello-world Python program and run it.")
    delivered = await service.aflush(10)
    try:
        await asyncio.wait_for(watcher, 10)
    except TimeoutError:
        console.print("[red]not every event arrived within 10 s[/]")
    await service.aclose(timeout=1)

    console.print()
    style = "green" if result.status == "completed" else "red"
    outcome = markup_safe(result.result or result.error)
    console.print(f"[bold {style}]task {result.status}[/]: {outcome}")
    if received:
        console.print(
            f"{len(received)} events delivered live (seq {received[0]}..{received[-1]}), "
            f"stored in {store_url}"
        )
    files = await asyncio.to_thread(lambda: sorted(p.name for p in workspace.iterdir()))
    console.print(f"files written to {workspace}: {', '.join(files)}")
    console.print(
        f"query them: curl '{http}/api/events?channel=tasks.{task.task_id}'"
        if keep
        else "re-run with --keep to leave the hub running and explore the log"
    )
    if keep:
        console.print("[dim]hub running; Ctrl-C to stop[/]")
    else:
        stop.set()
    with contextlib.suppress(asyncio.CancelledError):
        await server
    ok = result.status == "completed" and delivered and watcher.done() and not watcher.cancelled()
    return 0 if ok else 1
