"""``taskcast claude-code``: every Claude Code session a taskcast task (docs/claude-code.md).

``install`` / ``uninstall`` / ``status`` manage taskcast's hook entries in Claude Code's
settings; ``hook`` is what those entries run at every step of a session. This module
imports nothing heavy at the top: ``hook`` runs on Claude Code's every step.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click


def _hook_flags() -> list:  # type: ignore[type-arg]
    """click options made from the hook's own flags (one definition: hook.FLAGS)."""
    from taskcast.integrations.claude_code.hook import FLAGS

    made = []
    for flag in FLAGS:
        dest = flag.name.removeprefix("--").replace("-", "_")
        if flag.repeat:
            dest += "s"
        made.append(
            click.option(
                flag.name,
                dest,
                multiple=flag.repeat,
                default=[flag.default] if flag.repeat else flag.default,
                type=click.Choice(flag.choices) if flag.choices else flag.kind,
                show_default=flag.default is not None,
                help=flag.help,
            )
        )
    return made


def with_hook_options(function: click.decorators.FC) -> click.decorators.FC:
    for option in reversed(_hook_flags()):
        function = option(function)
    return function


@click.group("claude-code")
def claude_code() -> None:
    """Make every Claude Code session a taskcast task: watched, approved, steered."""


@claude_code.command(
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    add_help_option=False,
)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def hook(args: tuple[str, ...]) -> None:
    """What Claude Code's hooks run: reads one hook event (JSON) from stdin.

    (``taskcast claude-code hook`` is run without click; this entry shows it in --help.)"""
    from taskcast.integrations.claude_code.hook import main_from_args

    main_from_args(list(args))


scope_option = click.option(
    "--scope",
    type=click.Choice(["project", "local", "user"]),
    default="project",
    show_default=True,
    help="project: .claude/settings.json; local: .claude/settings.local.json; "
    "user: ~/.claude/settings.json.",
)


def _path(scope: str) -> Path:
    from taskcast.integrations.claude_code.settings import settings_path

    return settings_path(scope, Path.cwd(), Path.home())


def _program() -> list[str]:
    """How hooks start taskcast: an absolute path (hooks run with Claude Code's PATH)."""
    beside = Path(sys.executable).parent / "taskcast"
    if beside.exists() and os.access(beside, os.X_OK):
        return [str(beside)]
    return [sys.executable, "-m", "taskcast"]


@claude_code.command()
@scope_option
@with_hook_options
def install(
    scope: str,
    hubs: tuple[str, ...],
    token_file: str | None,
    approve: str,
    approval_timeout: float,
    approve_tools: str,
) -> None:
    """Merge taskcast's hooks into Claude Code's settings (idempotent; keeps the rest)."""
    from taskcast.integrations.claude_code.hook import options_of
    from taskcast.integrations.claude_code.settings import (
        Install,
        read_settings,
        with_ours,
        write_settings,
    )

    path = _path(scope)
    if token_file is not None:
        token_file = str(Path(token_file).resolve())
        if not Path(token_file).is_file():
            raise click.BadParameter(f"{token_file} does not exist", param_hint="--token-file")
    try:
        current = read_settings(path)
    except ValueError as exc:  # not JSON, or not an object: never overwritten
        raise click.ClickException(f"{path}: {exc}") from exc
    try:
        hook = options_of(list(hubs), token_file, approve, approval_timeout, approve_tools)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    plan = Install(
        _program(), tuple(hook.hubs), token_file, approve, approval_timeout, hook.approve_tools
    )
    merged, changes = with_ours(current, plan)
    if merged == current:
        click.echo(f"{path}: already up to date")
        return
    write_settings(path, merged)
    click.echo(f"{path}: {', '.join(changes)}")
    click.echo(f"hooks run: {plan.command()}")


@claude_code.command()
@scope_option
def uninstall(scope: str) -> None:
    """Remove exactly taskcast's hooks from Claude Code's settings."""
    from taskcast.integrations.claude_code.settings import (
        read_settings,
        without_ours,
        write_settings,
    )

    path = _path(scope)
    try:
        current = read_settings(path)
    except ValueError as exc:
        raise click.ClickException(f"{path}: {exc}") from exc
    kept, removed = without_ours(current)
    if not removed:
        click.echo(f"{path}: no taskcast hooks")
        return
    write_settings(path, kept)
    click.echo(f"{path}: removed {', '.join(removed)}")


@claude_code.command()
def status() -> None:
    """Where taskcast's hooks are installed, and whether their hub answers."""
    import http.client
    from urllib.parse import urlsplit

    from taskcast.integrations.claude_code.settings import (
        SCOPES,
        hubs_of,
        installed,
        read_settings,
    )

    anywhere = False
    for scope in SCOPES:
        path = _path(scope)
        try:
            found = installed(read_settings(path))
        except ValueError as exc:
            click.echo(f"{scope:8} {path}: unreadable ({exc})")
            continue
        if not found:
            click.echo(f"{scope:8} {path}: not installed")
            continue
        anywhere = True
        command = next(iter(found.values()))
        approve = "remote" if "--approve remote" in command else "off"
        click.echo(f"{scope:8} {path}: {', '.join(sorted(found))} (approve {approve})")
        for hub in hubs_of(command):
            parts = urlsplit(hub.replace("ws", "http", 1))
            try:
                conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=3)
                conn.request("GET", "/healthz")
                answer = f"answers ({conn.getresponse().status})"
                conn.close()
            except OSError as exc:
                answer = f"does not answer: {exc}"
            click.echo(f"         hub {hub}: {answer}")
    if not anywhere:
        click.echo("taskcast's hooks are not installed: taskcast claude-code install")
