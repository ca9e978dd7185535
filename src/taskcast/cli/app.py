"""The click group of ``taskcast``: commands are imported when they run, not before, so
a ``taskcast`` call pays only for the command it runs (the whole CLI imports in half a
second)."""

from __future__ import annotations

import importlib
from typing import Any

import click

from taskcast import __version__

# command name → the module of taskcast.cli that defines it (same attribute name, "-" as "_")
COMMANDS: dict[str, str] = {
    "abort": "orchestration",
    "claude-code": "claude_code",
    "approve": "orchestration",
    "demo": "agent",
    "deny": "orchestration",
    "follow": "watching",
    "history": "watching",
    "hub": "hub",
    "listen": "watching",
    "otel": "otel",
    "pending": "orchestration",
    "reply": "orchestration",
    "run": "agent",
    "say": "orchestration",
    "token": "tokens",
    "webhook": "webhooks",
}


class LazyGroup(click.Group):
    """A group whose commands are imported on first use (``COMMANDS``)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        module = COMMANDS.get(cmd_name)
        if module is None:
            return super().get_command(ctx, cmd_name)
        command: Any = getattr(
            importlib.import_module(f"taskcast.cli.{module}"), cmd_name.replace("-", "_")
        )
        assert isinstance(command, click.Command)
        return command


@click.group(cls=LazyGroup)
@click.version_option(__version__, prog_name="taskcast")
def main() -> None:
    """taskcast: live, durable notifications of your AI agents' API actions."""
