"""``taskcast otel``: export every task to OpenTelemetry as a trace."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from pathlib import Path

import click

from taskcast.channels import InvalidChannel, validate_pattern
from taskcast.cli.options import (
    connect_timeout_option,
    hub_option,
    setup_logging,
    strict_option,
    token_option,
)
from taskcast.cli.watching import stay_connected
from taskcast.client.resume import LogMismatch


@click.command()
@click.option("--channel", default="tasks.>", show_default=True, help="Pattern of the tasks.")
@click.option(
    "--endpoint",
    required=True,
    help="OTLP/HTTP endpoint, e.g. http://127.0.0.1:4318 (/v1/traces is added).",
)
@click.option(
    "--header",
    "headers",
    multiple=True,
    help="HTTP header for the endpoint, KEY=VALUE (repeat; e.g. an API key).",
)
@click.option(
    "--cursor-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path(".taskcast/otel-cursor.json"),
    show_default=True,
    help="Where the last exported seq of each log is kept (resume point after a restart).",
)
@click.option("--since", type=int, default=0, show_default=True, help="First run: start after.")
@click.option("--service-name", default="taskcast", show_default=True)
@strict_option
@hub_option
@token_option()
@connect_timeout_option
@click.option("-v", "--verbose", is_flag=True)
def otel(
    channel: str,
    endpoint: str,
    headers: tuple[str, ...],
    cursor_file: Path,
    since: int,
    service_name: str,
    strict: bool,
    hub: str,
    token: str | None,
    connect_timeout: float,
    verbose: bool,
) -> None:
    """Send every task to OpenTelemetry as a trace (needs taskcast[otel])."""
    try:
        from taskcast.integrations.otel import Cursor, follow_into, otlp_http_exporter
    except ImportError as exc:
        raise click.ClickException(str(exc)) from exc
    setup_logging(verbose)
    try:
        validate_pattern(channel)
    except InvalidChannel as exc:
        raise click.BadParameter(str(exc)) from None
    if any("=" not in header for header in headers):
        raise click.BadParameter("--header takes KEY=VALUE")
    pairs = dict(header.split("=", 1) for header in headers)
    exporter = otlp_http_exporter(endpoint, pairs)
    click.echo(f"following {channel} on {hub}, exporting to {endpoint}", err=True)

    async def export(status: Callable[[str, str | None], None]) -> None:
        await follow_into(
            exporter,
            hub,
            channel,
            Cursor(cursor_file),
            since=since,
            token=token,
            service_name=service_name,
            on_status=status,
            strict=strict,
        )

    with contextlib.suppress(KeyboardInterrupt):
        try:
            asyncio.run(stay_connected(hub, connect_timeout, export))
        except LogMismatch as exc:
            raise click.ClickException(f"{exc} (--strict)") from None
