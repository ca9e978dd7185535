"""``taskcast hub``: serve the websocket door, the HTTP API and the dashboard."""

from __future__ import annotations

import asyncio
import sqlite3
import sys
from pathlib import Path

import click

from taskcast.cli.options import (
    DEFAULTS,
    parse_duration,
    setup_logging,
    size_option,
    verifier_from,
)
from taskcast.hub.config import DEFAULT_HOST, DEFAULT_PORT, HubConfig
from taskcast.store import (
    DEFAULT_STORE,
    NatsOptions,
    NatsUnavailable,
    NotALog,
    Retention,
    StoreLocked,
)

# A frame limit, or a subscriber's buffer, below this would refuse ordinary frames.
MIN_FRAME_BYTES = 1024


@click.command()
@click.option("--host", default=DEFAULT_HOST, show_default=True, help="Address to bind.")
@click.option(
    "--port",
    default=DEFAULT_PORT,
    show_default=True,
    type=click.IntRange(0, 65535),
    help="0 picks a free port.",
)
@click.option(
    "--store",
    "store_url",
    default=DEFAULT_STORE,
    show_default=True,
    help="Event log: sqlite:PATH, memory, or nats://HOST:PORT[,nats://HOST2:PORT2…] "
    "(cluster mode: hub nodes share one JetStream stream).",
)
@click.option(
    "--nats-stream",
    default=DEFAULTS.nats.stream,
    show_default=True,
    help="JetStream stream of the log (subjects <name in lower case>.<channel>).",
)
@click.option(
    "--nats-replicas",
    type=click.IntRange(1, 5),
    default=DEFAULTS.nats.replicas,
    show_default=True,
    help="Copies of the stream (3 on a 3-server cluster: an ack means a quorum has it).",
)
@click.option(
    "--nats-duplicate-window",
    default="24h",
    show_default=True,
    help="How long a resent event id is recognised across nodes (30m, 12h, 1d, seconds).",
)
@click.option(
    "--nats-snapshot-interval",
    type=click.FloatRange(0.1, 3600),
    default=10.0,
    show_default=True,
    help="Seconds between the task-summary snapshots a node saves, so that a node that "
    "starts reads only the log after the latest one.",
)
@click.option(
    "--nats-credentials",
    type=click.Path(exists=True, dir_okay=False),
    help="NATS .creds file (JWT + NKey) for a secured NATS.",
)
@click.option("--nats-tls", is_flag=True, help="Connect to NATS over TLS (system CAs).")
@click.option(
    "--nats-cache",
    "nats_cache",
    type=click.Path(file_okay=False),
    default=None,
    help="Directory for this node's copy of the stream's recent past (SQLite, one file per "
    "process): replays and queries older than the in-memory window read it, not JetStream.",
)
@click.option(
    "--nats-cache-bytes",
    default="4GiB",
    callback=size_option,
    show_default=True,
    help="Most bytes of events the --nats-cache copy keeps (the oldest go first).",
)
@click.option(
    "--retain-events",
    type=click.IntRange(min=1),
    default=None,
    help="Keep at most this many events (leave out: keep all).",
)
@click.option(
    "--retain-seconds",
    type=click.FloatRange(min=0, min_open=True, max=100 * 365 * 86400),
    default=None,
    help="Drop events older than this (leave out: keep all).",
)
@click.option("--fsync/--no-fsync", default=False, help="fsync every commit (survive power loss).")
@click.option(
    "--commit-window",
    type=click.FloatRange(min=0),
    default=DEFAULTS.commit_window_seconds,
    show_default=True,
    help="Seconds a commit may wait after the last one began, when many publishers send "
    "at once, so more events share it (group commit; 0: never wait).",
)
@click.option(
    "--max-frame-bytes",
    type=click.IntRange(min=MIN_FRAME_BYTES),
    default=DEFAULTS.max_frame_bytes,
    show_default=True,
)
@click.option(
    "--max-subscriber-buffer",
    type=click.IntRange(min=MIN_FRAME_BYTES),
    default=DEFAULTS.max_subscriber_buffer,
    show_default=True,
    help="Bytes queued for one client before it is closed as a slow consumer (4008).",
)
@click.option(
    "--trim-interval",
    type=click.FloatRange(min=0, min_open=True),
    default=DEFAULTS.trim_interval_seconds,
    show_default=True,
    help="Seconds between retention passes.",
)
@click.option(
    "--secret-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="HS256 secret (else the TASKCAST_SECRET environment variable).",
)
@click.option(
    "--public-key-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="PEM public key for RS256/ES256 tokens.",
)
@click.option("--algorithm", type=click.Choice(["HS256", "RS256", "ES256"]))
@click.option("--insecure", is_flag=True, help="Allow binding beyond loopback without auth.")
@click.option("--tls-cert", type=click.Path(exists=True, dir_okay=False), help="PEM certificate.")
@click.option("--tls-key", type=click.Path(exists=True, dir_okay=False), help="PEM private key.")
@click.option(
    "--allowed-origin",
    "allowed_origins",
    multiple=True,
    help="Browser Origin allowed besides the hub's own (repeat).",
)
@click.option(
    "--allowed-host",
    "allowed_hosts",
    multiple=True,
    help="Host name the hub answers to besides IP literals and localhost (repeat).",
)
@click.option(
    "--max-token-ttl",
    default="30d",
    show_default=True,
    help="Refuse tokens that live longer (30m, 12h, 7d, seconds; 0: no maximum).",
)
@click.option(
    "--publish-rate",
    type=click.FloatRange(min=0),
    default=DEFAULTS.publish_rate,
    show_default=True,
    help="Events/s one connection may publish (0: no limit).",
)
@click.option(
    "--publish-burst",
    type=click.FloatRange(min=1),
    default=DEFAULTS.publish_burst,
    show_default=True,
)
@click.option(
    "--max-connections",
    type=click.IntRange(min=1),
    default=DEFAULTS.max_connections,
    show_default=True,
)
@click.option(
    "--max-connections-per-ip",
    type=click.IntRange(min=0),
    default=DEFAULTS.max_connections_per_ip,
    show_default=True,
    help="Websocket and SSE connections from one address (0: no limit).",
)
@click.option(
    "--max-concurrent-replays",
    type=click.IntRange(min=1),
    default=DEFAULTS.max_concurrent_replays,
    show_default=True,
    help="Replay page reads in flight hub-wide.",
)
@click.option(
    "--max-subscriptions",
    type=click.IntRange(min=1),
    default=DEFAULTS.max_subscriptions,
    show_default=True,
)
@click.option(
    "--idle-timeout",
    type=click.FloatRange(min=0),
    default=DEFAULTS.idle_timeout_seconds,
    show_default=True,
    help="Seconds without a frame (not even a pong) before a connection is closed (0: no limit).",
)
@click.option(
    "--handshake-timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=DEFAULTS.handshake_timeout_seconds,
    show_default=True,
)
@click.option(
    "--close-timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=DEFAULTS.close_timeout_seconds,
    show_default=True,
    help="Seconds a close (a slow consumer's 4008, shutdown) waits for the client to read "
    "what it was sent and answer; then the socket is dropped with what it still holds.",
)
@click.option(
    "--allow-private-webhooks",
    is_flag=True,
    help="With auth on, allow webhooks to loopback and private addresses.",
)
@click.option(
    "--webhook-give-up",
    default="24h",
    show_default=True,
    help="Mark a webhook failed after failing this long (30m, 12h, 1d, seconds).",
)
@click.option(
    "--workers",
    type=click.IntRange(1, 64),
    default=1,
    show_default=True,
    help="Hub processes sharing the port (SO_REUSEPORT), one per core or per ~15,000 "
    "connections; needs --store nats://… (the log they all share).",
)
@click.option("--reuse-port", is_flag=True, hidden=True)  # set on each worker by --workers
@click.option("-v", "--verbose", is_flag=True)
def hub(
    host: str,
    port: int,
    store_url: str,
    nats_stream: str,
    nats_replicas: int,
    nats_duplicate_window: str,
    nats_snapshot_interval: float,
    nats_credentials: str | None,
    nats_tls: bool,
    nats_cache: str | None,
    nats_cache_bytes: int,
    retain_events: int | None,
    retain_seconds: float | None,
    fsync: bool,
    commit_window: float,
    max_frame_bytes: int,
    max_subscriber_buffer: int,
    trim_interval: float,
    secret_file: Path | None,
    public_key_file: Path | None,
    algorithm: str | None,
    insecure: bool,
    tls_cert: str | None,
    tls_key: str | None,
    allowed_origins: tuple[str, ...],
    allowed_hosts: tuple[str, ...],
    max_token_ttl: str,
    publish_rate: float,
    publish_burst: float,
    max_connections: int,
    max_connections_per_ip: int,
    max_concurrent_replays: int,
    max_subscriptions: int,
    idle_timeout: float,
    handshake_timeout: float,
    close_timeout: float,
    allow_private_webhooks: bool,
    webhook_give_up: str,
    workers: int,
    reuse_port: bool,
    verbose: bool,
) -> None:
    """Run the hub: websocket /ws, the HTTP API and the dashboard on one port."""
    from taskcast.hub.server import TooFewFiles, UnsafeBind, announce, serve

    setup_logging(verbose)
    if nats_cache is not None and not store_url.startswith(("nats://", "tls://")):
        raise click.UsageError(
            "--nats-cache is a cluster node's copy of the stream: it needs --store nats://…"
        )
    if workers > 1:
        if not store_url.startswith(("nats://", "tls://")):
            raise click.UsageError(
                "--workers needs a log every worker shares: --store nats://… "
                "(SQLite has one writer; see docs/architecture.md)"
            )
        from taskcast.hub.workers import Supervisor, WorkerFailed

        try:
            options = sys.argv[sys.argv.index("hub") + 1 :]  # this command's own options
            supervisor = Supervisor(["hub", *options], workers, host, port)
            sys.exit(supervisor.run(announce))
        except (OSError, WorkerFailed) as exc:
            raise click.ClickException(str(exc)) from exc
    ttl_limit = parse_duration(max_token_ttl)
    try:
        verifier = verifier_from(secret_file, public_key_file, algorithm, ttl_limit or None)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    config = HubConfig(
        host=host,
        port=port,
        reuse_port=reuse_port,
        store=store_url,
        retention=Retention(max_events=retain_events, max_age_seconds=retain_seconds),
        fsync=fsync,
        nats=NatsOptions(
            stream=nats_stream,
            replicas=nats_replicas,
            duplicate_window_seconds=float(parse_duration(nats_duplicate_window)),
            credentials=nats_credentials,
            tls=nats_tls,
            cache_dir=nats_cache,
            cache_bytes=nats_cache_bytes,
        ),
        commit_window_seconds=commit_window,
        max_frame_bytes=max_frame_bytes,
        max_subscriber_buffer=max_subscriber_buffer,
        trim_interval_seconds=trim_interval,
        verifier=verifier,
        insecure=insecure,
        tls_cert=tls_cert,
        tls_key=tls_key,
        allowed_origins=allowed_origins,
        allowed_hosts=tuple(host.lower() for host in allowed_hosts),
        publish_rate=publish_rate,
        publish_burst=publish_burst,
        max_connections=max_connections,
        max_connections_per_ip=max_connections_per_ip,
        max_concurrent_replays=max_concurrent_replays,
        max_subscriptions=max_subscriptions,
        idle_timeout_seconds=idle_timeout,
        handshake_timeout_seconds=handshake_timeout,
        close_timeout_seconds=close_timeout,
        allow_private_webhooks=allow_private_webhooks,
        webhook_give_up_seconds=float(parse_duration(webhook_give_up)),
        snapshot_interval_seconds=nats_snapshot_interval,
    )
    try:
        asyncio.run(serve(config, ready=announce))
    except (
        OSError,
        UnsafeBind,
        TooFewFiles,
        StoreLocked,
        NotALog,
        NatsUnavailable,
        ValueError,
        sqlite3.Error,
    ) as exc:
        raise click.ClickException(str(exc)) from exc
