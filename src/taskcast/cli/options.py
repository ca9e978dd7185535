"""What several commands share, defined once: the hub and token options, durations,
logging, and the one HTTP call to the hub's API."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import click
from rich.console import Console

from taskcast.auth import DEFAULT_MAX_TOKEN_TTL, TokenVerifier
from taskcast.client.failover import hub_urls
from taskcast.client.hub_http import HubError, http_base, hub_request
from taskcast.hub.config import DEFAULT_HOST, DEFAULT_PORT, HubConfig

F = TypeVar("F", bound=Callable[..., Any])

DEFAULTS = HubConfig()  # the one home of the hub's defaults


def setup_logging(verbose: bool) -> None:
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


def hs256_secret(secret_file: Path | None) -> str | None:
    return secret_file.read_text().strip() if secret_file else os.environ.get("TASKCAST_SECRET")


def verifier_from(
    secret_file: Path | None,
    public_key_file: Path | None,
    algorithm: str | None,
    max_ttl: int | None = DEFAULT_MAX_TOKEN_TTL,
) -> TokenVerifier | None:
    """HS256 with TASKCAST_SECRET or --secret-file; RS256/ES256 with --public-key-file."""
    if public_key_file is not None:
        return TokenVerifier(public_key_file.read_bytes(), algorithm or "RS256", None, max_ttl)
    secret = hs256_secret(secret_file)
    if secret:
        return TokenVerifier(secret, algorithm or "HS256", None, max_ttl)
    return None


def parse_duration(ttl: str) -> int:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    try:
        if ttl[-1] in units:
            return int(float(ttl[:-1]) * units[ttl[-1]])
        return int(ttl)
    except (ValueError, IndexError):
        raise click.BadParameter(f"{ttl!r}: use seconds or a number with s, m, h or d") from None


_SIZE_UNITS = {"": 1, "b": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12}
_SIZE_UNITS |= {"kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}
_SIZE_UNITS |= {
    f"{unit}b": factor for unit, factor in _SIZE_UNITS.items() if unit in ("k", "m", "g", "t")
}


def parse_size(size: str) -> int:
    """Bytes from ``4GiB``, ``500MB``, ``2G`` or a plain number (above 0)."""
    text = size.strip().lower()
    number = text.rstrip("kmgtib")
    try:
        value = int(float(number) * _SIZE_UNITS[text[len(number) :]])
    except (ValueError, KeyError, OverflowError):
        value = 0
    if value <= 0:
        raise click.BadParameter(f"{size!r}: use bytes, or a number with KB, MB, GiB…")
    return value


def size_option(_ctx: click.Context, _param: click.Parameter, value: str) -> int:
    """A click callback: the option's size in bytes, refused at once when it is not one."""
    return parse_size(value)


DEFAULT_HUB_URL = f"ws://{DEFAULT_HOST}:{DEFAULT_PORT}/ws"


HUB_SCHEMES = ("ws", "wss", "http", "https")


def joined_hubs(values: tuple[str, ...]) -> str | None:
    """``--hub`` given several times: one comma-separated list (the client's HubUrls),
    each a URL the client can reach (``notaurl`` was tried as a path)."""
    if not values:
        return None
    for url in hub_urls(values):  # the URLs the client will try, split as it splits them
        parts = urlsplit(url)
        if parts.scheme not in HUB_SCHEMES or not parts.hostname:
            raise click.BadParameter(
                f"{url!r} is not a hub URL (like ws://127.0.0.1:8765/ws)", param_hint="--hub"
            )
    return ",".join(values)


# Several --hub: the nodes of a cluster, tried in turn (the client fails over).
hub_option = click.option(
    "--hub",
    multiple=True,
    envvar="TASKCAST_HUB",
    default=[DEFAULT_HUB_URL],
    show_default=True,
    callback=lambda ctx, param, value: joined_hubs(value),
    help="Hub websocket URL; repeat for the nodes of a cluster.",
)


connect_timeout_option = click.option(
    "--connect-timeout",
    type=click.FloatRange(min=0),
    default=10.0,
    show_default=True,
    help="Give up (exit 1) if the hub was never reached in this many seconds (0: never).",
)


def call_hub(
    hub: str, token: str | None, method: str, path: str, body: dict[str, Any] | None = None
) -> Any:
    """One HTTP request to the hub's API; a clear error for anything but 2xx."""
    import aiohttp

    try:
        return asyncio.run(hub_request(hub, token, method, path, body))
    except HubError as exc:
        raise click.ClickException(str(exc)) from exc
    except (aiohttp.ClientError, OSError) as exc:
        where = ", ".join(http_base(url) for url in hub_urls(hub))
        raise click.ClickException(f"cannot reach the hub at {where}: {exc}") from exc


def token_option(help: str | None = None) -> Callable[[F], F]:
    """``--token`` (or TASKCAST_TOKEN): the bearer token a command shows the hub."""
    return click.option("--token", envvar="TASKCAST_TOKEN", help=help)


control_token_option = token_option("Needs the control claim.")
admin_token_option = token_option("An admin token.")


strict_option = click.option(
    "--strict",
    is_flag=True,
    help="Refuse (exit 1) to resume on a log other than the one the seq came from, or past "
    "its head; by default say so on stderr and start over on it.",
)
