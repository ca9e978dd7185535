"""Watching a hub: ``listen`` (raw events), ``follow`` (one task live, as a transcript),
``history`` (one task's conversation as the log holds it now)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections.abc import Callable, Coroutine
from typing import Any
from urllib.parse import quote

import click
from rich.console import Console

from taskcast.channels import InvalidChannel, validate_pattern
from taskcast.cli.options import (
    call_hub,
    connect_timeout_option,
    hub_option,
    strict_option,
    token_option,
)
from taskcast.client import subscribe
from taskcast.client.resume import LogMismatch, ResumePoint
from taskcast.console import (
    TRANSCRIPT_EVENTS,
    event_line,
    printable,
    resume_command,
    summary,
    transcript_line,
    worth_showing,
)
from taskcast.frames import encode
from taskcast.task.history import HISTORY_EVENT, HistoryBuilder, HistoryGap
from taskcast.vocabulary import FINAL_STATUSES, EventType

HISTORY_PAGE = 10_000


@click.command()
@click.argument("task_id")
@hub_option
@token_option()
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print each history message as one NDJSON line, as it arrives.",
)
@strict_option
@connect_timeout_option
def follow(
    task_id: str, hub: str, token: str | None, as_json: bool, strict: bool, connect_timeout: float
) -> None:
    """Show a task live as a readable transcript (replayed from its start), until it ends.

    When its runner is lost (its lease lapsed before the task ended), say so with the
    command that resumes it, and keep following: a resume elsewhere continues here."""
    console = Console(highlight=False)
    builder = HistoryBuilder()

    def show(frame: dict[str, Any]) -> bool:
        kind = frame.get("type")
        if kind == HISTORY_EVENT:
            try:
                message = builder.add(frame.get("payload") or {}, frame["seq"])
            except HistoryGap as exc:
                raise click.ClickException(f"task {task_id}: {exc}") from None
            if message is not None:
                if as_json:
                    sys.stdout.write(json.dumps(message, ensure_ascii=False) + "\n")
                    sys.stdout.flush()
                else:
                    console.print(transcript_line(message), markup=False)
        elif kind == EventType.RUNNER_LOST:
            notice = f"resume it: {resume_command(task_id, hub)}"
            if as_json:
                click.echo(
                    f"{printable(summary(str(kind), frame.get('payload') or {}))}; {notice}",
                    err=True,
                )
            else:
                console.print(event_line(frame, console.width))
                console.print(f"  {notice}", markup=False)
        elif not as_json and kind in TRANSCRIPT_EVENTS:
            console.print(event_line(frame, console.width))
        return kind in FINAL_STATUSES

    point = ResumePoint(0, strict=strict)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(watch_hub(hub, f"tasks.{task_id}", point, token, connect_timeout, show))


@click.command()
@click.argument("task_id")
@hub_option
@token_option()
@click.option("--json", "as_json", is_flag=True, help="One NDJSON line per history message.")
def history(task_id: str, hub: str, token: str | None, as_json: bool) -> None:
    """Print a task's conversation history, rebuilt from the hub's log as it stands now."""
    quoted = quote(task_id, safe="")
    try:
        found = call_hub(hub, token, "GET", f"/api/tasks/{quoted}?limit=1")
    except click.ClickException as exc:
        if "404" in str(exc):
            raise click.ClickException(f"the hub has no events for task {task_id}") from None
        raise
    builder = HistoryBuilder()
    since = 0
    while True:
        page = call_hub(
            hub,
            token,
            "GET",
            f"/api/events?channel=tasks.{quoted}&type={HISTORY_EVENT}&since={since}"
            f"&limit={HISTORY_PAGE}",
        )
        try:
            for event in page:
                builder.add(event.get("payload") or {}, event.get("seq", 0))
        except HistoryGap as exc:
            raise click.ClickException(f"task {task_id}: {exc}") from None
        if len(page) < HISTORY_PAGE:
            break
        since = page[-1]["seq"]
    for message in builder.messages:
        if as_json:
            click.echo(json.dumps(message, ensure_ascii=False))
        else:
            click.echo(transcript_line(message))
    task = found.get("task") or {}
    if not builder.messages:
        click.echo(
            f"task {task_id} has {task.get('events', 0)} events but no history "
            f"({HISTORY_EVENT}): its publisher does not publish its conversation",
            err=True,
        )


@click.command()
@click.argument("pattern", default="tasks.>")
@click.option(
    "--since",
    help="Replay stored events after this point first: SEQ, or LOGID:SEQ (the log id it "
    "prints on stderr) to be told when the hub serves another log.",
)
@click.option("--json", "as_json", is_flag=True, help="Print NDJSON (one event per line).")
@click.option("--count", type=int, help="Exit after this many events.")
@strict_option
@hub_option
@token_option()
@connect_timeout_option
def listen(
    pattern: str,
    since: str | None,
    as_json: bool,
    count: int | None,
    strict: bool,
    hub: str,
    token: str | None,
    connect_timeout: float,
) -> None:
    """Tail events live (resumes by itself after disconnects)."""
    try:
        validate_pattern(pattern)
    except InvalidChannel as exc:
        raise click.BadParameter(str(exc)) from None
    try:
        point = ResumePoint.parse(since, strict=strict) if since else ResumePoint(strict=strict)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--since") from None
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
        asyncio.run(watch_hub(hub, pattern, point, token, connect_timeout, show, announce=True))


async def watch_hub(
    hub: str,
    pattern: str,
    point: ResumePoint,
    token: str | None,
    connect_timeout: float,
    handle: Callable[[dict[str, Any]], bool],
    *,
    announce: bool = False,
) -> None:
    """Feed each event of ``pattern`` after ``point`` to ``handle`` until it returns True
    (see ``stay_connected`` for what it says while the hub cannot be reached).
    ``announce``: name the log on stderr when it is first (or newly) known, so a user
    can resume with ``--since LOGID:SEQ``. A strict point that does not fit the hub's
    log ends it with an error (exit 1)."""
    announced: str | None = None

    async def feed(status: Callable[[str, str | None], None]) -> None:
        def on_status(state: str, error: str | None) -> None:
            nonlocal announced
            status(state, error)
            if announce and state == "subscribed" and point.log_id != announced:
                announced = point.log_id
                click.echo(f"{pattern} on log {point.log_id}", err=True)

        async for frame in subscribe(hub, pattern, point, token=token, on_status=on_status):
            if handle(frame):
                return

    try:
        await stay_connected(hub, connect_timeout, feed)
    except LogMismatch as exc:
        raise click.ClickException(f"{exc} (--strict)") from None


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
