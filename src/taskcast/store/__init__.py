"""Event stores: ``memory``, ``sqlite:PATH`` (the embedded default) and
``nats://HOST:PORT[,nats://…]`` (cluster mode, one JetStream stream shared by every node)."""

from __future__ import annotations

from dataclasses import dataclass

from taskcast.store.base import (
    AppendResult,
    EventQuery,
    EventStore,
    QueryPage,
    RecordChange,
    Retention,
    SharedLog,
    StoredEvent,
)
from taskcast.store.memory import MemoryStore
from taskcast.store.nats_layout import (
    DEFAULT_DUPLICATE_WINDOW_SECONDS,
    DEFAULT_STREAM,
    InvalidStreamName,
    NatsUnavailable,
)
from taskcast.store.sqlite import NotALog, SqliteStore, StoreLocked

DEFAULT_STORE = "sqlite:.taskcast/events.db"


@dataclass(frozen=True, slots=True)
class NatsOptions:
    """The ``--nats-*`` flags of a hub whose ``--store`` is ``nats://…``."""

    stream: str = DEFAULT_STREAM
    replicas: int = 1
    duplicate_window_seconds: float = DEFAULT_DUPLICATE_WINDOW_SECONDS
    credentials: str | None = None
    tls: bool = False
    cache_dir: str | None = None  # --nats-cache: this node's copy of the recent past
    cache_bytes: int = 4 * 2**30


__all__ = [
    "DEFAULT_STORE",
    "AppendResult",
    "EventQuery",
    "EventStore",
    "InvalidStreamName",
    "MemoryStore",
    "NatsOptions",
    "NatsUnavailable",
    "NotALog",
    "QueryPage",
    "RecordChange",
    "Retention",
    "SharedLog",
    "SqliteStore",
    "StoreLocked",
    "StoredEvent",
    "open_store",
]


def open_store(
    url: str,
    retention: Retention = Retention(),
    *,
    fsync: bool = False,
    nats: NatsOptions | None = None,
) -> EventStore:
    """Build the store a ``--store`` value names (not opened yet)."""
    if url.startswith(("nats://", "tls://")):
        from taskcast.store.nats import NatsStore  # only cluster mode loads nats-py

        options = nats or NatsOptions()
        servers = [server.strip() for server in url.split(",") if server.strip()]
        cache = None
        if options.cache_dir is not None:
            from taskcast.store.node_cache import NodeCache

            cache = NodeCache(options.cache_dir, options.cache_bytes)
        return NatsStore(
            servers,
            retention,
            stream=options.stream,
            replicas=options.replicas,
            duplicate_window_seconds=options.duplicate_window_seconds,
            credentials=options.credentials,
            tls=options.tls,
            cache=cache,
        )
    if url == "memory":
        return MemoryStore(retention)
    if url.startswith("sqlite:"):
        path = url.removeprefix("sqlite:").removeprefix("//")
        if not path:
            raise ValueError("sqlite store needs a path: sqlite:PATH")
        return SqliteStore(path, retention, fsync=fsync)
    raise ValueError(f"unknown store {url!r}: use memory, sqlite:PATH or nats://HOST:PORT")
