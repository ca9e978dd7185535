"""The ``taskcast`` command line."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import click
from rich.console import Console

from taskcast import __version__
from taskcast.channels import InvalidChannel, validate_pattern
from taskcast.client import CommunicationService, subscribe
from taskcast.console import event_line
from taskcast.frames import encode
from taskcast.hub.config import DEFAULT_HOST, DEFAULT_PORT, MIB, HubConfig
from taskcast.store import DEFAULT_STORE, Retention
from taskcast.task import ApprovalPolicy, ScriptedProvider, Task, ToolCall
from taskcast.task.approval import MODES
from taskcast.task.events import summarize_arguments
from taskcast.task.providers import Provider
from taskcast.task.task import DEFAULT_HISTORY_DIR


def _setup_logging(verbose: bool) -> None:
    """Rich, coloured logs on a terminal; plain timestamped lines in files and pipes."""
    level = logging.DEBUG if verbose else logging.INFO
    if sys.stderr.isatty():
        from rich.logging import RichHandler

        handler: logging.Handler = RichHandler(console=Console(stderr=True), show_path=False)
        handler.setFormatter(logging.Formatter("%(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level, handlers=[handler])


@click.group()
@click.version_option(__version__, prog_name="taskcast")
def main() -> None:
    """taskcast: live, durable notifications of your AI agents' API actions."""


@main.command()
@click.option("--host", default=DEFAULT_HOST, show_default=True, help="Address to bind.")
@click.option(
    "--port", default=DEFAULT_PORT, show_default=True, type=int, help="0 picks a free port."
)
@click.option(
    "--store",
    "store_url",
    default=DEFAULT_STORE,
    show_default=True,
    help="Event log: sqlite:PATH or memory.",
)
@click.option("--retain-events", type=int, default=None, help="Keep at most this many events.")
@click.option("--retain-seconds", type=float, default=None, help="Drop events older than this.")
@click.option("--fsync/--no-fsync", default=False, help="fsync every commit (survive power loss).")
@click.option("--max-frame-bytes", type=int, default=MIB, show_default=True)
@click.option(
    "--max-subscriber-buffer",
    type=int,
    default=8 * MIB,
    show_default=True,
    help="Bytes queued for one client before it is closed as a slow consumer (4008).",
)
@click.option(
    "--trim-interval",
    type=float,
    default=5.0,
    show_default=True,
    help="Seconds between retention passes.",
)
@click.option("-v", "--verbose", is_flag=True)
def hub(
    host: str,
    port: int,
    store_url: str,
    retain_events: int | None,
    retain_seconds: float | None,
    fsync: bool,
    max_frame_bytes: int,
    max_subscriber_buffer: int,
    trim_interval: float,
    verbose: bool,
) -> None:
    """Run the hub: websocket /ws and the HTTP API on one port."""
    from taskcast.hub.server import announce, serve

    _setup_logging(verbose)
    config = HubConfig(
        host=host,
        port=port,
        store=store_url,
        retention=Retention(max_events=retain_events, max_age_seconds=retain_seconds),
        fsync=fsync,
        max_frame_bytes=max_frame_bytes,
        max_subscriber_buffer=max_subscriber_buffer,
        trim_interval_seconds=trim_interval,
    )
    try:
        asyncio.run(serve(config, ready=announce))
    except OSError as exc:
        raise click.ClickException(str(exc)) from exc


# --- the agent side ---------------------------------------------------------

DEFAULT_HUB_URL = f"ws://{DEFAULT_HOST}:{DEFAULT_PORT}/ws"
DEMO_SCRIPT = Path(__file__).parent / "demo" / "script.json"


def make_provider(
    provider: str,
    model: str | None,
    base_url: str | None,
    api_key: str | None,
    script: Path | None,
) -> Provider:
    if provider == "scripted":
        scripted = ScriptedProvider.from_file(script or DEMO_SCRIPT)
        if model:
            scripted.model = model
        return scripted
    if not model:
        raise click.UsageError(f"--model is required with --provider {provider}")
    if provider == "openai":
        from taskcast.task.providers.openai_chat import OpenAIChatProvider

        return OpenAIChatProvider(model, api_key=api_key, base_url=base_url)
    from taskcast.task.providers.anthropic_messages import AnthropicProvider

    return AnthropicProvider(model, api_key=api_key, base_url=base_url)


class ConsoleTee:
    """Shows each event on the terminal as the Task emits it, and passes it on."""

    nonblocking = True

    def __init__(self, console: Console, forward: CommunicationService | None) -> None:
        self.console = console
        self.forward = forward

    def send_message(self, message: dict[str, Any]) -> None:
        self.console.print(event_line(message))
        if self.forward is not None:
            self.forward.send_message(message)


def terminal_confirm(console: Console) -> Callable[[ToolCall], Awaitable[bool]]:
    async def confirm(call: ToolCall) -> bool:
        if not sys.stdin.isatty():
            return False
        question = f"Allow {call.name}({summarize_arguments(call.arguments)})?"
        return await asyncio.to_thread(click.confirm, question, default=False)

    return confirm


def terminal_ask() -> Callable[[str], Awaitable[str | None]]:
    async def ask(question: str) -> str | None:
        if not sys.stdin.isatty():
            return None
        answer: str = await asyncio.to_thread(click.prompt, question)
        return answer

    return ask


@main.command()
@click.argument("prompt")
@click.option(
    "--provider",
    type=click.Choice(["scripted", "openai", "anthropic"]),
    default="scripted",
    show_default=True,
)
@click.option("--model", help="Model name (required for openai and anthropic).")
@click.option("--base-url", help="API base URL: OpenAI-compatible servers, proxies.")
@click.option("--api-key", envvar="TASKCAST_API_KEY", help="Else OPENAI_API_KEY/ANTHROPIC_API_KEY.")
@click.option("--script", type=click.Path(exists=True, path_type=Path), help="Scripted turns.")
@click.option(
    "--hub", envvar="TASKCAST_HUB", help="Hub to publish to, e.g. ws://127.0.0.1:8765/ws."
)
@click.option("--token", envvar="TASKCAST_TOKEN", help="Bearer token for the hub.")
@click.option("--cwd", type=click.Path(file_okay=False, path_type=Path), default=Path("."))
@click.option("--approve", type=click.Choice(list(MODES)), default="read-only", show_default=True)
@click.option("--task-id", help="Task id; with --resume, the task to continue.")
@click.option("--resume", is_flag=True, help="Continue the saved task --task-id.")
@click.option("--history-dir", type=click.Path(path_type=Path), default=DEFAULT_HISTORY_DIR)
@click.option("--outbox", type=click.Path(path_type=Path), help="File outbox (survives a crash).")
@click.option("--max-turns", type=int, default=50, show_default=True)
def run(
    prompt: str,
    provider: str,
    model: str | None,
    base_url: str | None,
    api_key: str | None,
    script: Path | None,
    hub: str | None,
    token: str | None,
    cwd: Path,
    approve: str,
    task_id: str | None,
    resume: bool,
    history_dir: Path,
    outbox: Path | None,
    max_turns: int,
) -> None:
    """Run an agent task; with --hub, publish its events live."""
    console = Console(stderr=False)
    api = make_provider(provider, model, base_url, api_key, script)
    service = CommunicationService(hub, token=token, outbox_path=outbox) if hub else None
    cwd.mkdir(parents=True, exist_ok=True)
    options: dict[str, Any] = {
        "communication_service": ConsoleTee(console, service),
        "cwd": cwd,
        "approval": ApprovalPolicy(approve, terminal_confirm(console)),
        "history_dir": history_dir,
        "ask": terminal_ask(),
        "max_turns": max_turns,
    }
    if resume:
        if not task_id:
            raise click.UsageError("--resume needs --task-id")
        task = Task.resume(task_id, api, **options)
    else:
        task = Task(api, task_id=task_id, **options)
    result = task.run_sync(None if resume and prompt == "-" else prompt)
    style = {"completed": "green", "failed": "red"}.get(result.status, "yellow")
    console.print(
        f"[bold {style}]{result.status}[/] task {result.task_id} in {result.turns} turns, "
        f"{result.usage.input_tokens} tokens in / {result.usage.output_tokens} out"
    )
    if result.result or result.error:
        console.print(result.result or result.error)
    if service is not None:
        if service.close(timeout=10):
            console.print(f"[dim]all events acknowledged by {hub}[/]")
        else:
            where = f"kept in {outbox}" if outbox else "lost with this process"
            console.print(f"[yellow]{service.pending} events not acknowledged ({where})[/]")
    sys.exit(0 if result.status == "completed" else 1)


@main.command()
@click.argument("pattern", default="tasks.>")
@click.option("--since", type=int, help="Replay stored events after this seq first.")
@click.option("--json", "as_json", is_flag=True, help="Print NDJSON (one event per line).")
@click.option("--count", type=int, help="Exit after this many events.")
@click.option("--hub", envvar="TASKCAST_HUB", default=DEFAULT_HUB_URL, show_default=True)
@click.option("--token", envvar="TASKCAST_TOKEN")
def listen(
    pattern: str, since: int | None, as_json: bool, count: int | None, hub: str, token: str | None
) -> None:
    """Tail events live (resumes by itself after disconnects)."""
    try:
        validate_pattern(pattern)
    except InvalidChannel as exc:
        raise click.BadParameter(str(exc)) from None
    console = Console(highlight=False)

    async def tail() -> None:
        seen = 0
        async for frame in subscribe(hub, pattern, since, token=token):
            if as_json:
                sys.stdout.write(encode(frame).decode() + "\n")
                sys.stdout.flush()
            else:
                console.print(event_line(frame, console.width))
            seen += 1
            if count is not None and seen >= count:
                return

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(tail())


@main.command()
@click.option("--keep", is_flag=True, help="Keep the hub running after the task.")
@click.option("--open", "open_browser", is_flag=True, help="Open the dashboard in a browser.")
@click.option("--store", "store_url", default=DEFAULT_STORE, show_default=True)
@click.option("--port", type=int, default=DEFAULT_PORT, show_default=True)
def demo(keep: bool, open_browser: bool, store_url: str, port: int) -> None:
    """Start a hub, run a scripted agent task against it, and watch its events arrive."""
    from taskcast.demo_run import run_demo

    sys.exit(asyncio.run(run_demo(store_url, port, keep=keep, open_browser=open_browser)))
