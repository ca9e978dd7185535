"""Group commit: when many publishers send at once, fewer and larger commits.

Each commit costs the hub a fixed price on top of its events (the log's statement and
the WAL frames of the pages all its events share, the fan-out pass, the loop's
wake-ups): ~75 µs of CPU, with 1,000 publishers at 10 events/s each, where commits held
~4 events (docs/scale.md, "Group commit"). So, like PostgreSQL's ``commit_delay``
with its ``commit_siblings``, the commit loop may wait a little before a commit — but
only for the events expected from publishers *not* already in the batch, at the rate
they sent in the last second, within what is left of the window since the previous
commit began; and only until those have come. A quiet hub
and a single publisher (paced or pipelined) never wait; publishers that each wait for
their ack wait at most for each other (not the window out); an event that comes after a
quiet spell is committed at once.

``GroupCommit`` is the counting (no I/O, no clock of its own); ``commit_wait`` the
decision.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from dataclasses import dataclass

RATE_EPOCH_SECONDS = 1.0  # the publish rate and the publishers are counted per second


@dataclass(frozen=True, slots=True)
class Wait:
    """Wait at most ``seconds``, or until ``pending`` events are waiting to commit."""

    seconds: float
    pending: int


def commit_wait(
    *,
    window: float,
    since_last_commit: float,
    pending: int,
    pending_publishers: int,
    rate: float,
    publishers: int,
) -> Wait | None:
    """Whether to wait before committing ``pending`` events (None: commit now).

    ``rate`` and ``publishers``: events/s and distinct publishers of the last full
    second; ``pending_publishers``: how many of those the pending events come from. A
    wait is worth it when at least one more event is expected from the others within
    what is left of the window; it ends when the events expected have joined (at most
    one per other publisher: publishers that each wait for their ack have one to give),
    or when the window ends."""
    remaining = window - since_last_commit
    if remaining <= 0 or pending <= 0 or publishers <= 0:
        return None
    others = publishers - pending_publishers
    if others <= 0:
        return None
    expected = rate * remaining * others / publishers  # events that would join
    if expected < 1:
        return None
    return Wait(remaining, pending + min(int(expected), others))


class GroupCommit:
    """The publish rate and the number of distinct publishers, per second, as
    ``commit_delay`` needs them; and when the last commit began."""

    __slots__ = (
        "_epoch_ends",
        "_events",
        "_publishers",
        "last_commit",
        "publishers",
        "rate",
        "window",
    )

    def __init__(self, window: float) -> None:
        self.window = window
        self.rate = 0.0  # events/s, last full epoch
        self.publishers = 0  # distinct publishers, last full epoch
        self.last_commit = float("-inf")  # when the last commit began
        self._events = 0
        self._publishers: set[Hashable] = set()
        self._epoch_ends = float("-inf")

    def arrived(self, publisher: Hashable) -> None:
        """An event was submitted by ``publisher`` (its connection; an HTTP request's
        publisher id)."""
        self._events += 1
        self._publishers.add(publisher)

    def wait(self, now: float, pending: Iterable[Hashable], count: int) -> Wait | None:
        """Whether to wait before committing the ``count`` pending events, whose
        publishers ``pending`` gives (only read when a wait is possible)."""
        if now >= self._epoch_ends:
            self._roll(now)
        if self.window <= 0 or now - self.last_commit >= self.window or not self.rate:
            return None
        return commit_wait(
            window=self.window,
            since_last_commit=now - self.last_commit,
            pending=count,
            pending_publishers=len(set(pending)),
            rate=self.rate,
            publishers=self.publishers,
        )

    def _roll(self, now: float) -> None:
        # An epoch that ended long ago (the hub was quiet) leaves no rate behind.
        fresh = now - self._epoch_ends < RATE_EPOCH_SECONDS
        self.rate = self._events / RATE_EPOCH_SECONDS if fresh else 0.0
        self.publishers = len(self._publishers) if fresh else 0
        self._events = 0
        self._publishers = set()
        self._epoch_ends = now + RATE_EPOCH_SECONDS
