"""The ``taskcast`` command line."""

from __future__ import annotations

import asyncio
import logging
import sys

import click

from taskcast import __version__
from taskcast.hub.config import DEFAULT_HOST, DEFAULT_PORT, MIB, HubConfig
from taskcast.store import DEFAULT_STORE, Retention


def _setup_logging(verbose: bool) -> None:
    """Rich, coloured logs on a terminal; plain timestamped lines in files and pipes."""
    level = logging.DEBUG if verbose else logging.INFO
    if sys.stderr.isatty():
        from rich.console import Console
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
