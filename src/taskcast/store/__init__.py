"""Event stores: ``memory`` and ``sqlite:PATH`` (the embedded default)."""

from __future__ import annotations

from taskcast.store.base import (
    AppendResult,
    EventQuery,
    EventStore,
    QueryPage,
    Retention,
    StoredEvent,
)
from taskcast.store.memory import MemoryStore
from taskcast.store.sqlite import SqliteStore, StoreLocked

DEFAULT_STORE = "sqlite:.taskcast/events.db"

__all__ = [
    "DEFAULT_STORE",
    "AppendResult",
    "EventQuery",
    "EventStore",
    "MemoryStore",
    "QueryPage",
    "Retention",
    "SqliteStore",
    "StoreLocked",
    "StoredEvent",
    "open_store",
]


def open_store(url: str, retention: Retention = Retention(), *, fsync: bool = False) -> EventStore:
    """Build the store a ``--store`` value names (not opened yet)."""
    if url == "memory":
        return MemoryStore(retention)
    if url.startswith("sqlite:"):
        path = url.removeprefix("sqlite:").removeprefix("//")
        if not path:
            raise ValueError("sqlite store needs a path: sqlite:PATH")
        return SqliteStore(path, retention, fsync=fsync)
    raise ValueError(f"unknown store {url!r}: use memory or sqlite:PATH")
