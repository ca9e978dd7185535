"""The hub nodes a client may use (cluster mode): tried in turn, one at a time.

A client keeps one connection to one node. When it cannot connect, or its
connection drops, it moves to the next node and resumes there — subscribers with
``since``, publishers by resending every unacknowledged event (the shared log
drops the repeats by id). Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence

# One hub URL, several, or a comma-separated list (what TASKCAST_HUB may hold).
HubUrls = str | Sequence[str]


def hub_urls(hubs: HubUrls) -> list[str]:
    """Every URL named, in order; ``ValueError`` when there is none."""
    names = [hubs] if isinstance(hubs, str) else list(hubs)
    urls = [url.strip() for name in names for url in name.split(",") if url.strip()]
    if not urls:
        raise ValueError("no hub URL given")
    return urls


class HubRotation:
    """Which node to use now; ``next()`` after a failure moves on (and wraps around)."""

    def __init__(self, hubs: HubUrls) -> None:
        self.urls = hub_urls(hubs)
        self._index = 0

    @property
    def current(self) -> str:
        return self.urls[self._index]

    def next(self) -> str:
        self._index = (self._index + 1) % len(self.urls)
        return self.current
