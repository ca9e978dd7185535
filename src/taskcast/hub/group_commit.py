"""Group commit: when many publishers send at once, fewer and larger commits.

Each commit costs the hub a fixed price on top of its events (the log's statement and
the WAL frames of the pages all its events share, the fan-out pass, the loop's
wake-ups): ~75 µs of CPU, with 1,000 publishers at 10 events/s each, where commits held
~4 events (docs/scale.md, "Group commit"). So, like PostgreSQL's ``commit_delay``, the
commit loop may wait a little before a commit — only for the events expected from
publishers *not* already in the batch (what they sent in the last second, spread over
what is left of the window since the previous commit began; at least one), and only
until that many have come. A quiet hub and a lone publisher (paced or pipelined) never
wait, nor does a publisher that waits for each ack beside light ones; an event that
comes after a quiet spell is committed at once. Publishers that stopped still count
for up to two seconds: a commit may then wait the window (1 ms) out for them.

``GroupCommit`` is the counting (no I/O, no clock of its own); ``commit_wait`` the
decision.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from dataclasses import dataclass

RATE_EPOCH_SECONDS = 1.0  # what each publisher sent is counted per second or so


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
    others: int,
    others_rate: float,
    max_batch: int,
) -> Wait | None:
    """Whether to wait before committing ``pending`` events (None: commit now).

    ``others``: publishers seen in the last epoch with no event pending; ``others_rate``:
    the events/s they sent then. A wait is worth it when at least one of their events
    is expected within what is left of the window; it ends once as many as expected
    have joined (at most one per other publisher: publishers that each wait for their
    ack have one each to give), a batch is full, or the window ends."""
    remaining = window - since_last_commit
    if remaining <= 0 or not 0 < pending < max_batch or others <= 0:
        return None
    expected = others_rate * remaining
    if expected < 1:
        return None
    return Wait(remaining, min(pending + min(int(expected), others), max_batch))


class GroupCommit:
    """What each publisher sent in the last epoch (about a second), as
    ``commit_wait`` needs it; and when the last commit began."""

    __slots__ = (
        "_counts",
        "_epoch_started",
        "_recent",
        "_recent_events",
        "_recent_seconds",
        "last_commit",
        "max_batch",
        "window",
    )

    def __init__(self, window: float, max_batch: int) -> None:
        self.window = window
        self.max_batch = max_batch
        self.last_commit = float("-inf")  # when the last commit began
        self._counts: dict[Hashable, int] = {}  # this epoch: events by publisher
        self._recent: dict[Hashable, int] = {}  # the last epoch's
        self._recent_events = 0
        self._recent_seconds = RATE_EPOCH_SECONDS
        self._epoch_started = float("-inf")

    def arrived(self, publisher: Hashable) -> None:
        """An event was submitted by ``publisher`` (its connection; an HTTP request's
        publisher id)."""
        counts = self._counts
        counts[publisher] = counts.get(publisher, 0) + 1

    def wait(self, now: float, pending: Iterable[Hashable], count: int) -> Wait | None:
        """Whether to wait before committing the ``count`` pending events, whose
        publishers ``pending`` gives (only read when a wait is possible)."""
        if now - self._epoch_started >= RATE_EPOCH_SECONDS:
            self._roll(now)
        since = now - self.last_commit
        if since >= self.window or count >= self.max_batch or not self._recent:
            return None
        recent = self._recent
        waiting = {publisher for publisher in pending if publisher in recent}
        others_events = self._recent_events - sum(recent[publisher] for publisher in waiting)
        return commit_wait(
            window=self.window,
            since_last_commit=since,
            pending=count,
            others=len(recent) - len(waiting),
            others_rate=others_events / self._recent_seconds,
            max_batch=self.max_batch,
        )

    def _roll(self, now: float) -> None:
        seconds = now - self._epoch_started
        # After a quiet spell the epoch says nothing of now: it is dropped.
        self._recent = self._counts if seconds < 2 * RATE_EPOCH_SECONDS else {}
        self._recent_events = sum(self._recent.values())
        self._recent_seconds = seconds
        self._counts = {}
        self._epoch_started = now
