"""The hub's settings, with the defaults a single-machine user wants."""

from __future__ import annotations

from dataclasses import dataclass, field

from taskcast.auth import TokenVerifier
from taskcast.store import DEFAULT_STORE, NatsOptions, Retention

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
MIB = 1024 * 1024


@dataclass(slots=True)
class HubConfig:
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    reuse_port: bool = False  # a worker of `--workers N`: shares the port (SO_REUSEPORT)
    store: str = DEFAULT_STORE
    retention: Retention = field(default_factory=Retention)
    fsync: bool = False
    nats: NatsOptions = field(default_factory=NatsOptions)  # when store is nats://…
    max_frame_bytes: int = 1 * MIB
    # Bytes queued for one connection before it counts as a slow consumer (close 4008).
    max_subscriber_buffer: int = 8 * MIB
    # Events committed in one store transaction at most (group commit).
    max_batch: int = 2000
    # Under many publishers, how long after a commit began the next may wait for more
    # events to join it (group_commit.py; 0: never wait).
    commit_window_seconds: float = 0.001
    replay_page: int = 1000
    trim_interval_seconds: float = 5.0
    # How often lapsed leases are looked for (a dead runner is reported within this).
    lease_sweep_seconds: float = 1.0
    # Shared log: how often a node saves the task summaries (if this many events came).
    snapshot_interval_seconds: float = 10.0
    snapshot_min_events: int = 1000
    shutdown_timeout_seconds: float = 5.0
    # How long a close waits for the client's close frame (a client not reading never sends one).
    close_timeout_seconds: float = 2.0

    # --- access (docs/security.md) ---
    verifier: TokenVerifier | None = None  # None: no auth, loopback only unless insecure
    insecure: bool = False
    tls_cert: str | None = None
    tls_key: str | None = None
    allowed_origins: tuple[str, ...] = ()  # browser Origins allowed besides the hub's own
    # Host names this hub answers to besides IP literals and localhost (DNS rebinding).
    allowed_hosts: tuple[str, ...] = ()

    # --- abuse limits ---
    publish_rate: float = 10_000.0  # events/s per connection (0: no limit)
    publish_burst: float = 20_000.0
    max_connections: int = 10_000
    max_connections_per_ip: int = 1_000  # websocket + SSE from one address (0: no limit)
    max_subscriptions: int = 100  # per connection
    idle_timeout_seconds: float = 300.0  # nothing received, not even a pong
    handshake_timeout_seconds: float = 10.0  # from TCP accept to a complete request
    # Replay page reads in flight hub-wide; a connection's replays take turns.
    max_concurrent_replays: int = 4
    # Task summaries kept in memory (least recently active dropped first), and the
    # characters of a prompt, result or error each keeps.
    # Webhooks: with auth, loopback/private targets only with this; and how long a
    # failing webhook is retried before it is marked failed.
    allow_private_webhooks: bool = False
    webhook_give_up_seconds: float = 24 * 3600.0
    max_task_summaries: int = 100_000
    summary_text_chars: int = 4_000
