"""Where a subscription stands, for resuming it (pure): one home for the subscribe
request, taking the head from ``subscribed``, and dropping events already seen."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from taskcast.frames import encode


@dataclass(slots=True)
class ResumePoint:
    """The last seq seen on one subscription (None: live only, not started yet)."""

    last: int | None = None

    def request(self, pattern: str) -> bytes:
        """The subscribe frame that resumes right after what was seen."""
        frame: dict[str, Any] = {"type": "subscribe", "channel": pattern}
        if self.last is not None:
            frame["since"] = self.last
        return encode(frame)

    def subscribed(self, head: Any) -> None:
        """A live-only subscription starts at the hub's head: resume from there."""
        if self.last is None and isinstance(head, int):
            self.last = head

    def accept(self, seq: int) -> bool:
        """True for an event not seen yet (and remember it); False for a repeat."""
        if self.last is not None and seq <= self.last:
            return False
        self.last = seq
        return True
