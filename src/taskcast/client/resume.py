"""Where a subscription stands, for resuming it (pure): one home for the subscribe
request, what a ``subscribed`` answer means for it, and dropping events already seen.

A seq means something only in the log that numbered it, so a resume point is
``(log_id, seq)``. When the hub answers with another log's id (a fresh hub, a log file
replaced, another cluster's stream), or says the seq lies beyond its head (the log was
restored from a backup), the point never resumes silently: by default it says so and
starts over (the new log's beginning; the head of a log that is behind), and a
``strict`` one refuses (``LogMismatch``).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from taskcast.frames import encode


class LogMismatch(RuntimeError):
    """A resume point does not fit the log the hub serves (``strict``: refused)."""

    def __init__(self, message: str, expected: str | None, found: str | None) -> None:
        super().__init__(message)
        self.expected = expected
        self.found = found


class Resumption(enum.Enum):
    """What a ``subscribed`` answer calls for."""

    CONTINUE = "continue"  # the log we read: go on
    RESTART = "restart"  # another log: subscribe again from its beginning
    REFUSE = "refuse"  # strict, and the point does not fit: stop (LogMismatch)


@dataclass(slots=True)
class ResumePoint:
    """The last seq seen on one subscription and the log it belongs to (``last`` None:
    live only, not started yet; ``log_id`` None: not known yet)."""

    last: int | None = None
    log_id: str | None = None
    strict: bool = False
    problem: str | None = None  # what the last ``subscribed`` said was wrong, if anything
    found: str | None = None  # the log id the last ``subscribed`` named
    # Subscribed again from the new log's beginning: what the old request brings until
    # its ``subscribed`` answer is not of this point.
    restarting: bool = False

    def request(self, pattern: str) -> bytes:
        """The subscribe frame that resumes right after what was seen."""
        frame: dict[str, Any] = {"type": "subscribe", "channel": pattern}
        if self.last is not None:
            frame["since"] = self.last
        return encode(frame)

    def subscribed(self, frame: dict[str, Any]) -> Resumption:
        """Take the hub's ``subscribed`` answer (see ``fit``)."""
        found, head = frame.get("logId"), frame.get("head")
        return self.fit(
            found if isinstance(found, str) and found else None,
            head if isinstance(head, int) else None,
            ahead=frame.get("ahead") is True,
        )

    def fit(self, found: str | None, head: int | None, *, ahead: bool = False) -> Resumption:
        """Fit the point to the log the hub serves (``found``, its ``head``, and whether
        the point's seq lies beyond it): adopt the log id and the head (a live-only
        start), and say whether to go on, start over, or refuse (``problem`` says why, for
        a log line or an error). Every resumer decides here: subscribers, followers,
        ``taskcast otel``, the webhook worker."""
        self.problem = None
        self.restarting = False
        self.found = found
        if self.log_id is not None and found is not None and found != self.log_id:
            self.problem = (
                f"the hub serves log {found}, not log {self.log_id} that seq {self.last} belongs to"
            )
            if self.strict:
                return Resumption.REFUSE
            self.problem += "; starting from the new log's beginning"
            self.last, self.log_id, self.restarting = 0, found, True
            return Resumption.RESTART
        if found is not None:
            self.log_id = found
        if ahead and head is not None:
            self.problem = (
                f"log {found} ends at seq {head}, before seq {self.last} seen on it "
                "(restored from an earlier copy?)"
            )
            if self.strict:
                return Resumption.REFUSE
            self.problem += f"; going on from its head {head}"
            self.last = head
            return Resumption.CONTINUE
        if self.last is None and head is not None:
            self.last = head  # a live-only subscription starts at the hub's head
        return Resumption.CONTINUE

    def accept(self, seq: int) -> bool:
        """True for an event not seen yet (and remember it); False for a repeat, or for
        what still comes of a request made for another log."""
        if self.restarting or (self.last is not None and seq <= self.last):
            return False
        self.last = seq
        return True

    def mismatch(self) -> LogMismatch:
        """The error a strict point raises for what ``subscribed`` found."""
        return LogMismatch(self.problem or "the resume point does not fit", self.log_id, self.found)

    def to_json(self) -> dict[str, Any]:
        """What to save to resume later (``from_json`` reads it back)."""
        return {"logId": self.log_id, "seq": self.last}

    @classmethod
    def from_json(cls, saved: dict[str, Any], *, strict: bool = False) -> ResumePoint:
        seq, log_id = saved.get("seq"), saved.get("logId")
        return cls(
            seq if isinstance(seq, int) else None,
            log_id if isinstance(log_id, str) else None,
            strict,
        )

    @classmethod
    def parse(cls, text: str, *, strict: bool = False) -> ResumePoint:
        """``SEQ`` or ``LOGID:SEQ`` (what ``taskcast listen --since`` takes)."""
        log_id, _, seq = text.rpartition(":")
        if not seq.isdigit():
            raise ValueError(f"{text!r}: use SEQ or LOGID:SEQ")
        return cls(int(seq), log_id or None, strict)

    def __str__(self) -> str:
        return f"{self.log_id}:{self.last}" if self.log_id else str(self.last)
