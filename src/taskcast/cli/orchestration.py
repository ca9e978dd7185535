"""Remote orchestration (docs/orchestration.md): ``pending``, ``approve``, ``deny``,
``reply``, ``say`` and ``abort``, each one request to the hub's HTTP API."""

from __future__ import annotations

import json

import click
from rich.console import Console

from taskcast.cli.options import call_hub, control_token_option, hub_option, token_option
from taskcast.commands import command_fields
from taskcast.console import (
    printable,
)


def _the_pending(hub: str, token: str | None, task_id: str, kind: str) -> str:
    """The one open request of ``kind`` for a task (an error if none or several)."""
    pending = call_hub(hub, token, "GET", f"/api/pending?taskId={task_id}")
    ids = [request["requestId"] for request in pending if request.get("kind") == kind]
    if len(ids) != 1:
        what = "approval request" if kind == "approval" else "question"
        found = ", ".join(ids) if ids else "none"
        raise click.ClickException(
            f"task {task_id} has {len(ids)} open {what}s ({found}); name the REQUEST_ID"
        )
    return str(ids[0])


def _send_command(
    hub: str,
    token: str | None,
    task_id: str,
    action: str,
    *,
    request_id: str | None = None,
    text: str | None = None,
    reason: str | None = None,
) -> None:
    body = command_fields(action, request_id, text, reason)
    ack = call_hub(hub, token, "POST", f"/api/tasks/{task_id}/commands", body)
    click.echo(f"{action} sent to task {task_id} (seq {ack.get('seq')})")


@click.command()
@click.argument("task_id")
@click.argument("request_id", required=False)
@hub_option
@control_token_option
def approve(task_id: str, request_id: str | None, hub: str, token: str | None) -> None:
    """Approve a task's pending tool call (the only one, when REQUEST_ID is not given)."""
    request_id = request_id or _the_pending(hub, token, task_id, "approval")
    _send_command(hub, token, task_id, "approve", request_id=request_id)


@click.command()
@click.argument("task_id")
@click.argument("request_id", required=False)
@click.option("--reason", help="Told to the model and recorded in the log.")
@hub_option
@control_token_option
def deny(
    task_id: str, request_id: str | None, reason: str | None, hub: str, token: str | None
) -> None:
    """Deny a task's pending tool call (the only one, when REQUEST_ID is not given)."""
    request_id = request_id or _the_pending(hub, token, task_id, "approval")
    _send_command(hub, token, task_id, "deny", request_id=request_id, reason=reason)


@click.command()
@click.argument("task_id")
@click.argument("text")
@click.option("--request-id", help="The question to answer (default: the only open one).")
@hub_option
@control_token_option
def reply(task_id: str, text: str, request_id: str | None, hub: str, token: str | None) -> None:
    """Answer a task's pending question."""
    request_id = request_id or _the_pending(hub, token, task_id, "question")
    _send_command(hub, token, task_id, "reply", request_id=request_id, text=text)


@click.command()
@click.argument("task_id")
@click.option("--reason", help="Recorded with task_aborted.")
@hub_option
@control_token_option
def abort(task_id: str, reason: str | None, hub: str, token: str | None) -> None:
    """Abort a running task (within a second, also mid-request or mid-command)."""
    _send_command(hub, token, task_id, "abort", reason=reason)


@click.command()
@click.argument("task_id")
@click.argument("text")
@hub_option
@control_token_option
def say(task_id: str, text: str, hub: str, token: str | None) -> None:
    """Steer a running task: TEXT joins its conversation before its next LLM request."""
    _send_command(hub, token, task_id, "message", text=text)


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the requests as JSON.")
@hub_option
@token_option()
def pending(as_json: bool, hub: str, token: str | None) -> None:
    """List open approval requests and questions across all tasks."""
    found = call_hub(hub, token, "GET", "/api/pending")
    if as_json:
        click.echo(json.dumps(found, indent=2))
        return
    if not found:
        click.echo("nothing is waiting for you")
        return
    console = Console(highlight=False)
    for request in found:
        what = request.get("summary") or request.get("question") or ""
        head = request.get("tool") or "question"
        console.print(
            printable(f"{request['taskId']}  {request['requestId']}  {head}: {what}"),
            markup=False,
        )
