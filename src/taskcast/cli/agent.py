"""``taskcast run`` and ``taskcast demo``: run an agent Task, publishing its events."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import click
from rich.console import Console

from taskcast.cli.options import joined_hubs, token_option
from taskcast.client import CommunicationService
from taskcast.client.hub_http import HubError
from taskcast.console import (
    event_line,
    printable,
    worth_showing,
)
from taskcast.demo_run import DEMO_SCRIPT
from taskcast.hub.config import DEFAULT_PORT
from taskcast.store import DEFAULT_STORE
from taskcast.task import ApprovalPolicy, ScriptedProvider, Task, ToolCall
from taskcast.task.approval import MODES
from taskcast.task.events import summarize_arguments
from taskcast.task.handoff import TaskLeaseHeld
from taskcast.task.providers import Provider
from taskcast.task.task import DEFAULT_HISTORY_DIR, HISTORY_FILE


def make_provider(
    provider: str,
    model: str | None,
    base_url: str | None,
    api_key: str | None,
    script: Path | None,
    stream: bool = True,
) -> Provider:
    if provider == "scripted":
        if script is None:
            click.echo(
                "note: --provider scripted replays the demo script, not your prompt "
                "(pass --script FILE for your own turns)",
                err=True,
            )
        scripted = ScriptedProvider.from_file(script or DEMO_SCRIPT)
        if model:
            scripted.model = model
        return scripted
    if not model:
        raise click.UsageError(f"--model is required with --provider {provider}")
    key_variable = {"openai": "OPENAI_API_KEY", "anthropic": "ANTHROPIC_API_KEY"}[provider]
    if not api_key and not base_url and not os.environ.get(key_variable):
        # Fail now, naming what is missing (a local server with --base-url may need none).
        raise click.UsageError(
            f"--provider {provider} needs an API key: set {key_variable} (or TASKCAST_API_KEY, "
            "--api-key), or point --base-url at a local server"
        )
    if provider == "openai":
        from taskcast.task.providers.openai_chat import OpenAIChatProvider

        return OpenAIChatProvider(model, api_key=api_key, base_url=base_url, stream=stream)
    from taskcast.task.providers.anthropic_messages import AnthropicProvider

    return AnthropicProvider(model, api_key=api_key, base_url=base_url, stream=stream)


class ConsoleTee:
    """Shows each event on the terminal as the Task emits it, and passes it on."""

    nonblocking = True

    def __init__(self, console: Console, forward: CommunicationService | None) -> None:
        self.console = console
        self.forward = forward

    def send_message(self, message: dict[str, Any]) -> None:
        if worth_showing(message):
            self.console.print(event_line(message))
        if self.forward is not None:
            self.forward.send_message(message)

    def __getattr__(self, name: str) -> Any:
        """Following the control channel (on, off, follow, unfollow) goes to the hub."""
        if self.forward is None or name.startswith("_"):
            raise AttributeError(name)
        return getattr(self.forward, name)


def terminal_confirm(console: Console) -> Callable[[ToolCall], Awaitable[bool]]:
    async def confirm(call: ToolCall) -> bool:
        if not sys.stdin.isatty():
            return False
        question = printable(f"Allow {call.name}({summarize_arguments(call.arguments)})?")
        return await asyncio.to_thread(click.confirm, question, default=False)

    return confirm


def terminal_ask() -> Callable[[str], Awaitable[str | None]]:
    async def ask(question: str) -> str | None:
        if not sys.stdin.isatty():
            return None
        answer: str = await asyncio.to_thread(click.prompt, printable(question))
        return answer

    return ask


@click.command()
@click.argument("prompt")
@click.option(
    "--provider",
    type=click.Choice(["scripted", "openai", "anthropic"]),
    default="scripted",
    show_default=True,
)
@click.option("--model", help="Model name (required for openai and anthropic).")
@click.option(
    "--base-url",
    help="API base URL. OpenAI-compatible: the URL ending in /v1 (Ollama: "
    "http://localhost:11434/v1). Anthropic: with or without /v1.",
)
@click.option(
    "--stream/--no-stream",
    default=True,
    show_default=True,
    help="Stream responses (--no-stream for servers or proxies that cannot).",
)
@click.option("--api-key", envvar="TASKCAST_API_KEY", help="Else OPENAI_API_KEY/ANTHROPIC_API_KEY.")
@click.option("--script", type=click.Path(exists=True, path_type=Path), help="Scripted turns.")
@click.option(
    "--hub",
    multiple=True,
    envvar="TASKCAST_HUB",
    callback=lambda ctx, param, value: joined_hubs(value),
    help="Hub to publish to, e.g. ws://127.0.0.1:8765/ws; repeat for the nodes of a cluster "
    "(tried in turn when one fails).",
)
@token_option("Bearer token for the hub.")
@click.option(
    "--cwd",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("."),
    help="Working directory the tools are confined to (must exist unless --mkdir).",
)
@click.option("--mkdir", is_flag=True, help="Create --cwd when it does not exist.")
@click.option(
    "--approve",
    type=click.Choice(list(MODES)),
    default="read-only",
    show_default=True,
    help="remote: ask through the hub (taskcast approve/deny, the dashboard); needs --hub.",
)
@click.option(
    "--approval-timeout",
    type=click.FloatRange(min=0),
    default=600.0,
    show_default=True,
    help="Seconds to wait for a remote decision, then deny (0: wait forever).",
)
@click.option("--task-id", help="Task id; with --resume, the task to continue.")
@click.option(
    "--resume",
    "resume",
    default=None,
    is_flag=False,
    flag_value="",
    metavar="TASK_ID",
    help="Continue a task: rebuilt from the hub's log with --hub (another machine may have "
    "run it), else from the saved history. PROMPT '-' adds no new message.",
)
@click.option(
    "--lease-ttl",
    type=click.FloatRange(min=1, max=3600),
    default=30.0,
    show_default=True,
    help="Seconds the hub keeps this run's lease without a heartbeat (one runner per task).",
)
@click.option("--history-dir", type=click.Path(path_type=Path), default=DEFAULT_HISTORY_DIR)
@click.option("--outbox", type=click.Path(path_type=Path), help="File outbox (survives a crash).")
@click.option("--max-turns", type=int, default=50, show_default=True)
@click.option(
    "--redact",
    "redact_patterns",
    multiple=True,
    help="Extra regex whose matches are hidden in emitted events (repeat).",
)
@click.option(
    "--command-env",
    "command_env",
    multiple=True,
    help="Environment variable that execute_command may see besides the minimal set (repeat).",
)
def run(
    prompt: str,
    provider: str,
    model: str | None,
    base_url: str | None,
    stream: bool,
    api_key: str | None,
    script: Path | None,
    hub: str | None,
    token: str | None,
    cwd: Path,
    approve: str,
    approval_timeout: float,
    task_id: str | None,
    resume: str | None,
    lease_ttl: float,
    history_dir: Path,
    outbox: Path | None,
    max_turns: int,
    redact_patterns: tuple[str, ...],
    command_env: tuple[str, ...],
    mkdir: bool,
) -> None:
    """Run an agent task; with --hub, publish its events live."""
    console = Console(stderr=False)
    if approve == "remote" and not hub:
        raise click.UsageError("--approve remote needs --hub (the hub approvers answer through)")
    api = make_provider(provider, model, base_url, api_key, script, stream)
    service = CommunicationService(hub, token=token, outbox_path=outbox) if hub else None
    if not cwd.is_dir():
        if not mkdir:
            raise click.UsageError(f"--cwd {cwd} does not exist (pass --mkdir to create it)")
        cwd.mkdir(parents=True, exist_ok=True)
    options: dict[str, Any] = {
        "communication_service": ConsoleTee(console, service),
        "cwd": cwd,
        # In remote mode a terminal answer counts too, but only when there is a terminal
        # (without one, "no terminal" must not pass for a denial).
        "approval": ApprovalPolicy(
            approve,
            terminal_confirm(console) if approve != "remote" or sys.stdin.isatty() else None,
        ),
        "approval_timeout": approval_timeout,
        "history_dir": history_dir,
        "ask": terminal_ask(),
        "max_turns": max_turns,
        "redact_patterns": redact_patterns,
        "command_env": command_env,
    }
    options["lease_seconds"] = lease_ttl
    resuming = resume is not None
    if resuming:
        task_id = resume or task_id
        if not task_id:
            raise click.UsageError("--resume needs a TASK_ID (or --task-id)")
        task = _resumed_task(task_id, api, hub, token, options)
    else:
        task = Task(api, task_id=task_id, **options)
    try:
        result = task.run_sync(None if resuming and prompt == "-" else prompt)
    except TaskLeaseHeld as exc:
        if service is not None:
            service.close(timeout=0)
        raise click.ClickException(str(exc)) from exc
    style = {"completed": "green", "failed": "red"}.get(result.status, "yellow")
    if result.status == "completed" and result.denied:
        style = "yellow"
    console.print(
        f"[bold {style}]{result.status}[/] task {result.task_id} in {result.turns} turns, "
        f"{result.usage.input_tokens} tokens in / {result.usage.output_tokens} out"
    )
    if result.denied:
        console.print(
            f"[bold yellow]{len(result.denied)} tool call(s) were denied and did not run: "
            f"{', '.join(sorted(set(result.denied)))}[/] (see --approve)"
        )
    if result.result or result.error:
        console.print(printable(result.result or result.error), markup=False)
    if service is not None:
        if service.close(timeout=10):
            console.print(f"[dim]all events acknowledged by {hub}[/]")
        else:
            where = f"kept in {outbox}" if outbox else "lost with this process"
            console.print(f"[yellow]{service.pending} events not acknowledged ({where})[/]")
    # 0: completed with every tool call run; 3: completed, but tool calls were denied;
    # 1: failed or aborted.
    sys.exit(1 if result.status != "completed" else 3 if result.denied else 0)


def _resumed_task(
    task_id: str, api: Provider, hub: str | None, token: str | None, options: dict[str, Any]
) -> Task:
    """The task to continue: from the hub's log when there is a hub, else from disk."""
    if hub:
        try:
            return asyncio.run(
                Task.from_hub(task_id, hub=hub, provider=api, token=token, **options)
            )
        except LookupError as exc:
            raise click.ClickException(str(exc)) from exc
        except HubError as exc:
            raise click.ClickException(f"cannot read task {task_id} from the hub: {exc}") from exc
    saved = Path(options["history_dir"]) / task_id / HISTORY_FILE
    if not saved.exists() and not saved.with_suffix(".json").exists():
        raise click.ClickException(
            f"no saved history for task {task_id} (looked for {saved}); "
            "pass --hub to rebuild it from the hub's log"
        )
    return Task.resume(task_id, api, **options)


@click.command()
@click.option("--keep", is_flag=True, help="Keep the hub running after the task.")
@click.option("--open", "open_browser", is_flag=True, help="Open the dashboard in a browser.")
@click.option("--store", "store_url", default=DEFAULT_STORE, show_default=True)
@click.option("--port", type=int, default=DEFAULT_PORT, show_default=True)
def demo(keep: bool, open_browser: bool, store_url: str, port: int) -> None:
    """Start a hub, run a scripted agent task against it, and watch its events arrive."""
    from taskcast.demo_run import run_demo

    sys.exit(asyncio.run(run_demo(store_url, port, keep=keep, open_browser=open_browser)))
