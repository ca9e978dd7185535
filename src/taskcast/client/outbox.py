"""The publisher's outbox: every event not yet acknowledged by the hub, in order.

Sans-I/O apart from the optional journal file: a journal is append-only lines
(``+<frame>`` when an event is added, ``-<json id>`` when it is acknowledged), so
an agent process killed with -9 finds its unacknowledged events on restart.
"""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from pathlib import Path
from typing import IO

import msgspec

from taskcast.files import FILE_MODE, ensure_private_dir

log = logging.getLogger("taskcast.client")

_decode = msgspec.json.Decoder().decode
_encode = msgspec.json.Encoder().encode


class Outbox:
    def __init__(self, max_events: int = 100_000, path: str | os.PathLike[str] | None = None):
        self.max_events = max_events
        self.dropped = 0
        self._events: OrderedDict[str, bytes] = OrderedDict()
        self._journal: IO[bytes] | None = None
        self._journal_lines = 0
        self.path = Path(path) if path is not None else None
        if self.path is not None:
            self._events = load_journal(self.path)
            self._rewrite_journal()

    def __len__(self) -> int:
        return len(self._events)

    def add(self, event_id: str, frame: bytes) -> str | None:
        """Keep ``frame`` until acknowledged; returns the id dropped to stay bounded."""
        dropped: str | None = None
        if event_id not in self._events and len(self._events) >= self.max_events:
            dropped, _ = self._events.popitem(last=False)
            self.dropped += 1
        self._events[event_id] = frame
        if self._journal is not None:
            record = b"+" + frame + b"\n"
            if dropped is not None:
                record = b"-" + _encode(dropped) + b"\n" + record
            self._journal.write(record)
            self._journal_lines += 1
        return dropped

    def ack(self, event_ids: list[str]) -> int:
        """Forget acknowledged events; returns how many were pending."""
        removed = [event_id for event_id in event_ids if self._events.pop(event_id, None)]
        if self._journal is not None and removed:
            self._journal.write(b"".join(b"-" + _encode(i) + b"\n" for i in removed))
            self._journal_lines += len(removed)
            if self._journal_lines > 10_000 and self._journal_lines > 4 * len(self._events):
                self._rewrite_journal()
        return len(removed)

    def frames(self) -> list[bytes]:
        return list(self._events.values())

    def close(self) -> None:
        if self._journal is not None:
            self._journal.close()
            self._journal = None

    def _rewrite_journal(self) -> None:
        """Compact the journal to the pending events only (atomic rename)."""
        assert self.path is not None
        if self._journal is not None:
            self._journal.close()
        ensure_private_dir(self.path.parent)
        temporary = self.path.with_name(self.path.name + ".tmp")
        fd = os.open(temporary, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, FILE_MODE)
        os.fchmod(fd, FILE_MODE)  # unacknowledged events: as private as the log
        with open(fd, "wb") as out:
            out.write(b"".join(b"+" + frame + b"\n" for frame in self._events.values()))
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, self.path)
        # Unbuffered: each add is one write() into the OS, which survives kill -9.
        self._journal = open(self.path, "ab", buffering=0)  # noqa: SIM115 - owned by the outbox
        self._journal_lines = len(self._events)


def load_journal(path: Path) -> OrderedDict[str, bytes]:
    events: OrderedDict[str, bytes] = OrderedDict()
    if not path.exists():
        return events
    with open(path, "rb") as journal:
        for line in journal:
            if not line.endswith(b"\n"):
                break  # a write cut short by a crash: never acknowledged, never sent whole
            try:
                if line.startswith(b"+"):
                    frame = line[1:-1]
                    event_id = _decode(frame)["id"]
                    events[event_id] = frame
                elif line.startswith(b"-"):
                    events.pop(_decode(line[1:-1]), None)
            except (msgspec.DecodeError, KeyError, TypeError):
                log.warning("outbox %s: skipping an unreadable line", path)
    return events
