"""A task's conversation history as events, and back (pure).

Every message a Task appends to its API conversation history is also published as
``history_appended`` (``index``, ``message``), so the history can be rebuilt from the
task's events alone — by a follower on another machine, or by a runner that takes the
task over. A message too large for one event is split into ``chunk``/``chunks`` parts of
its JSON text; nothing is cut. ``api_action`` stays exactly the seed contract.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any

HISTORY_EVENT = "history_appended"
RESUMED_EVENT = "task_resumed"
CHUNK_CHARS = 256 * 1024  # well inside the hub's 1 MiB frame limit


def history_payloads(index: int, message: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The ``history_appended`` payloads (without taskId/timestamp) for one message."""
    text = json.dumps(message, ensure_ascii=False)
    if len(text) <= CHUNK_CHARS:
        yield {"index": index, "message": message}
        return
    parts = [text[start : start + CHUNK_CHARS] for start in range(0, len(text), CHUNK_CHARS)]
    for number, part in enumerate(parts):
        yield {"index": index, "chunk": number, "chunks": len(parts), "data": part}


class HistoryGap(ValueError):
    """The events do not hold every message (a missing index or chunk)."""


class HistoryBuilder:
    """Folds ``history_appended`` payloads, in seq order, into the message list. (A
    plain class: a Claude Code hook imports this module and must not pay for
    ``dataclasses``.)"""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        self.last_seq = 0
        self._parts: dict[int, list[str | None]] = {}

    def add(self, payload: dict[str, Any], seq: int = 0) -> dict[str, Any] | None:
        """Take one payload; returns the message it completed, if any."""
        self.last_seq = max(self.last_seq, seq)
        index = payload.get("index")
        if not isinstance(index, int) or index < len(self.messages):
            return None  # a repeat (a resent event): already in place
        if index > len(self.messages):
            raise HistoryGap(f"message {len(self.messages)} is missing (got {index})")
        if "message" in payload:
            message = payload["message"]
        else:
            chunks = payload.get("chunks")
            chunk = payload.get("chunk")
            data = payload.get("data")
            if (
                not isinstance(chunks, int)
                or not isinstance(chunk, int)
                or not isinstance(data, str)
            ):
                raise HistoryGap(f"message {index}: a malformed chunk")
            parts = self._parts.setdefault(index, [None] * chunks)
            parts[chunk] = data
            if any(part is None for part in parts):
                return None
            message = json.loads("".join(part or "" for part in parts))
            del self._parts[index]
        if not isinstance(message, dict):
            raise HistoryGap(f"message {index} is not an object")
        self.messages.append(message)
        return message


def rebuild(events: Iterable[dict[str, Any]]) -> HistoryBuilder:
    """The history in a task's delivered events (any order of types, seq order)."""
    builder = HistoryBuilder()
    for event in events:
        if event.get("type") == HISTORY_EVENT and isinstance(event.get("payload"), dict):
            builder.add(event["payload"], event.get("seq", 0) or 0)
    return builder
