"""The publisher's outbox: every event not yet acknowledged by the hub, in order.

Sans-I/O apart from the optional journal file: a journal is append-only lines
(``+<frame>`` when an event is added, ``-<json id>`` when it is acknowledged), so
an agent process killed with -9 finds its unacknowledged events on restart.
"""

from __future__ import annotations

import json
import os
from collections import OrderedDict
from typing import IO

from taskcast.files import FILE_MODE, ensure_private_dir

COMPACT_LINES = 10_000  # a journal is rewritten past this many lines and 4 times what waits
# ... and when opened, past this many more than 4 times what waits (not at every open: its
# fsync cost a short-lived publisher — a Claude Code hook — more than all its work).
OPEN_COMPACT_LINES = 1_000

# The stdlib's json, not msgspec: nothing here is a hot path (a journal is read once;
# ids are written as they are acknowledged), and a short-lived publisher (a Claude Code
# hook) would pay msgspec's import, its largest cost.
_decode = json.loads


def _encode(value: str) -> bytes:
    return json.dumps(value).encode()


class Outbox:
    def __init__(self, max_events: int = 100_000, path: str | os.PathLike[str] | None = None):
        self.max_events = max_events
        self.dropped = 0
        self._events: OrderedDict[str, bytes] = OrderedDict()
        self._journal: IO[bytes] | None = None
        self._journal_lines = 0
        self.path = os.fspath(path) if path is not None else None
        if self.path is not None:
            self._events, lines = load_journal(self.path)
            if lines > OPEN_COMPACT_LINES + 4 * len(self._events):
                self._rewrite_journal()
            else:
                self._open_journal(lines)

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
            if self._journal_lines > COMPACT_LINES and self._journal_lines > 4 * len(self._events):
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
        ensure_private_dir(os.path.dirname(self.path) or ".")
        temporary = self.path + ".tmp"
        fd = os.open(temporary, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, FILE_MODE)
        os.fchmod(fd, FILE_MODE)  # unacknowledged events: as private as the log
        with open(fd, "wb") as out:
            out.write(b"".join(b"+" + frame + b"\n" for frame in self._events.values()))
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, self.path)
        self._open_journal(len(self._events))

    def _open_journal(self, lines: int) -> None:
        assert self.path is not None
        ensure_private_dir(os.path.dirname(self.path) or ".")
        fd = os.open(self.path, os.O_CREAT | os.O_WRONLY | os.O_APPEND, FILE_MODE)
        os.fchmod(fd, FILE_MODE)
        # Unbuffered: each add is one write() into the OS, which survives kill -9.
        self._journal = open(fd, "ab", buffering=0)  # noqa: SIM115 - owned by the outbox
        self._journal_lines = lines


def load_journal(path: str | os.PathLike[str]) -> tuple[OrderedDict[str, bytes], int]:
    """The events a journal holds unacknowledged, and how many lines it has."""
    events: OrderedDict[str, bytes] = OrderedDict()
    lines = 0
    if not os.path.exists(path):
        return events, lines
    with open(path, "rb") as journal:
        for line in journal:
            if not line.endswith(b"\n"):
                # A write cut short by a crash: never acknowledged, never sent whole. The
                # next append must not continue it: compact.
                return events, OPEN_COMPACT_LINES + 4 * len(events) + 1
            lines += 1
            try:
                if line.startswith(b"+"):
                    frame = line[1:-1]
                    event_id = _decode(frame)["id"]
                    events[event_id] = frame
                elif line.startswith(b"-"):
                    events.pop(_decode(line[1:-1]), None)
            except (ValueError, KeyError, TypeError):
                import logging  # only then: a short-lived publisher need not load it

                logging.getLogger("taskcast.client").warning(
                    "outbox %s: skipping an unreadable line", path
                )
    return events, lines
