"""Watching a hub: ``listen`` (raw events), ``follow`` (one task as a transcript)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections.abc import Callable, Coroutine
from typing import Any

import click
from rich.console import Console

from taskcast.channels import InvalidChannel, validate_pattern
from taskcast.cli.options import connect_timeout_option, hub_option, token_option
from taskcast.client import subscribe
from taskcast.console import (
    TRANSCRIPT_EVENTS,
    event_line,
    transcript_line,
    worth_showing,
)
from taskcast.frames import encode
from taskcast.task.history import HISTORY_EVENT, HistoryBuilder
from taskcast.vocabulary import FINAL_STATUSES


@click.command()
@click.argument("task_id")
@hub_option
@token_option()
@click.option("--json", "as_json", is_flag=True, help="Print the rebuilt history when it ends.")
@connect_timeout_option
def follow(
    task_id: str, hub: str, token: str | None, as_json: bool, connect_timeout: float
) -> None:
    """Show a task live as a readable transcript (replayed from its start), until it ends."""
    console = Console(highlight=False)
    builder = HistoryBuilder()

    def show(frame: dict[str, Any]) -> bool:
        if frame.get("type") == HISTORY_EVENT:
            message = builder.add(frame.get("payload") or {}, frame["seq"])
            if message is not None and not as_json:
                console.print(transcript_line(message), markup=False)
        elif not as_json and frame.get("type") in TRANSCRIPT_EVENTS:
            console.print(event_line(frame, console.width))
        return frame.get("type") in FINAL_STATUSES

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(watch_hub(hub, f"tasks.{task_id}", 0, token, connect_timeout, show))
    if as_json:
        click.echo(json.dumps(builder.messages, ensure_ascii=False, indent=1))


@click.command()
@click.argument("pattern", default="tasks.>")
@click.option("--since", type=int, help="Replay stored events after this seq first.")
@click.option("--json", "as_json", is_flag=True, help="Print NDJSON (one event per line).")
@click.option("--count", type=int, help="Exit after this many events.")
@hub_option
@token_option()
@connect_timeout_option
def listen(
    pattern: str,
    since: int | None,
    as_json: bool,
    count: int | None,
    hub: str,
    token: str | None,
    connect_timeout: float,
) -> None:
    """Tail events live (resumes by itself after disconnects)."""
    try:
        validate_pattern(pattern)
    except InvalidChannel as exc:
        raise click.BadParameter(str(exc)) from None
    console = Console(highlight=False)
    seen = 0

    def show(frame: dict[str, Any]) -> bool:
        nonlocal seen
        if as_json:
            sys.stdout.write(encode(frame).decode() + "\n")
            sys.stdout.flush()
        elif worth_showing(frame):
            console.print(event_line(frame, console.width))
        seen += 1
        return count is not None and seen >= count

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(watch_hub(hub, pattern, since, token, connect_timeout, show))


async def watch_hub(
    hub: str,
    pattern: str,
    since: int | None,
    token: str | None,
    connect_timeout: float,
    handle: Callable[[dict[str, Any]], bool],
) -> None:
    """Feed each event of ``pattern`` to ``handle`` until it returns True (see
    ``stay_connected`` for what it says while the hub cannot be reached)."""

    async def feed(status: Callable[[str, str | None], None]) -> None:
        async for frame in subscribe(hub, pattern, since, token=token, on_status=status):
            if handle(frame):
                return

    await stay_connected(hub, connect_timeout, feed)


async def stay_connected(
    hub: str,
    connect_timeout: float,
    run: Callable[[Callable[[str, str | None], None]], Coroutine[Any, Any, None]],
) -> None:
    """Run a subscriber (``run(on_status)``). Says on stderr when the hub cannot be
    reached (once per new error; it is retried), and gives up with an error when it was
    never reached within ``connect_timeout`` seconds (0: never)."""
    reached = False
    last_error: str | None = None

    def status(state: str, error: str | None) -> None:
        nonlocal reached, last_error
        if state == "subscribed":
            reached = True
            if last_error is not None:
                click.echo(f"connected to {hub}", err=True)
            last_error = None
        elif error != last_error:
            click.echo(f"cannot reach the hub at {hub}: {error}; retrying", err=True)
            last_error = error

    follower = asyncio.create_task(run(status))
    if connect_timeout:
        done, _ = await asyncio.wait({follower}, timeout=connect_timeout)
        if not done and not reached:
            follower.cancel()
            raise click.ClickException(
                f"no connection to {hub} within {connect_timeout:g} s ({last_error})"
            )
    await follower
