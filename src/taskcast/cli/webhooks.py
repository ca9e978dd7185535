"""``taskcast webhook add|list|remove|enable`` (docs/webhooks.md)."""

from __future__ import annotations

import json
from typing import Any

import click

from taskcast.cli.options import admin_token_option, call_hub, hub_option
from taskcast.console import (
    printable,
)


@click.group()
def webhook() -> None:
    """Register, list and remove webhooks (admin token when the hub has auth)."""


@webhook.command("add")
@click.argument("url")
@click.option("--channel", default="tasks.>", show_default=True, help="Channel pattern.")
@click.option("--type", "types", multiple=True, help="Only these event types (repeat).")
@click.option("--since", type=int, help="Deliver events after this seq (default: from now).")
@hub_option
@admin_token_option
def webhook_add(
    url: str, channel: str, types: tuple[str, ...], since: int | None, hub: str, token: str | None
) -> None:
    """Register URL; prints its id and signing secret (whsec_…, shown once)."""
    body: dict[str, Any] = {"url": url, "channel": channel, "types": list(types)}
    if since is not None:
        body["since"] = since
    created = call_hub(hub, token, "POST", "/api/webhooks", body)
    click.echo(f"webhook {created['id']} → {created['url']} ({created['channel']})")
    click.echo(f"signing secret: {created['secret']}")


@webhook.command("list")
@click.option("--json", "as_json", is_flag=True)
@hub_option
@admin_token_option
def webhook_list(as_json: bool, hub: str, token: str | None) -> None:
    """Each webhook with its state, cursor (last delivered seq), lag and last error."""
    found = call_hub(hub, token, "GET", "/api/webhooks")
    if as_json:
        click.echo(json.dumps(found, indent=2))
        return
    for hook in found:
        error = f"  last error: {hook['lastError']}" if hook.get("lastError") else ""
        click.echo(
            printable(
                f"{hook['id']}  {hook['state']:<7} cursor {hook['cursor']} lag {hook['lag']}  "
                f"{hook['url']} ({hook['channel']}){error}"
            )
        )
    if not found:
        click.echo("no webhooks")


@webhook.command("remove")
@click.argument("webhook_id")
@hub_option
@admin_token_option
def webhook_remove(webhook_id: str, hub: str, token: str | None) -> None:
    """Stop and forget a webhook (its events stay in the log)."""
    call_hub(hub, token, "DELETE", f"/api/webhooks/{webhook_id}")
    click.echo(f"removed {webhook_id}")


@webhook.command("enable")
@click.argument("webhook_id")
@hub_option
@admin_token_option
def webhook_enable(webhook_id: str, hub: str, token: str | None) -> None:
    """Re-enable a failed webhook: delivery resumes from its cursor."""
    hook = call_hub(hub, token, "POST", f"/api/webhooks/{webhook_id}/enable")
    click.echo(f"{hook['id']} is {hook['state']} from seq {hook['cursor']}")
