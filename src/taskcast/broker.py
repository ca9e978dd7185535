"""The broker's decisions, free of I/O: who gets an event, when a consumer is too slow,
and when a replaying subscription may switch to live delivery.

The hub's websocket layer only moves bytes according to what these objects decide.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

from taskcast.channels import is_literal, matches


class Connection(Protocol):
    """What the broker needs from a connection: identity only (hashable)."""

    def __hash__(self) -> int: ...


C = TypeVar("C", bound=Connection)


@dataclass(eq=False, slots=True)
class Subscription(Generic[C]):
    """One pattern subscribed by one connection.

    While ``live`` is False the subscription is replaying from the log and live
    fan-out skips it; the replay switches it to live once it has caught up.
    """

    connection: C
    pattern: str
    live: bool = False


# What the route cache may hold: channels, and references to subscriptions summed over
# its distinct lists (8 MiB of them). A list per channel would cost channels x
# subscribers: 10,000 task channels watched by 12,500 dashboards on ``tasks.>`` is a
# gigabyte.
CACHE_CHANNELS = 10_000
CACHE_REFERENCES = 1_000_000


class SubscriptionIndex(Generic[C]):
    """Routes a channel to the subscriptions whose pattern matches it.

    A literal pattern is found by one dict lookup; only wildcard patterns are tried one
    by one (a hub with 10,000 subscribers each following its own task would otherwise
    test 10,000 patterns per event: 130 µs an event in bench/scale.py --shape tasks).
    Results are cached per channel and the cache is dropped on any change, since
    subscriptions change rarely and events flow constantly. Channels matched by the
    same patterns share one list: the cache stays small however many channels a
    wildcard covers, and consecutive events on them go out as one run (the hub groups
    events by the identity of this list).
    """

    def __init__(self) -> None:
        self._by_pattern: dict[str, dict[Subscription[C], None]] = {}
        self._wildcards: dict[str, dict[Subscription[C], None]] = {}  # the same buckets
        self._cache: dict[str, list[Subscription[C]]] = {}
        self._by_patterns: dict[tuple[str, ...], list[Subscription[C]]] = {}
        self._cached_references = 0
        self._count = 0

    def __len__(self) -> int:
        return self._count

    @property
    def cached_references(self) -> int:
        """References to subscriptions the cache holds, over its distinct lists."""
        return self._cached_references

    def add(self, subscription: Subscription[C]) -> None:
        pattern = subscription.pattern
        bucket = self._by_pattern.setdefault(pattern, {})
        if not is_literal(pattern):
            self._wildcards[pattern] = bucket
        if subscription not in bucket:
            bucket[subscription] = None
            self._count += 1
            self._clear_cache()

    def remove(self, subscription: Subscription[C]) -> None:
        bucket = self._by_pattern.get(subscription.pattern)
        if bucket is not None and subscription in bucket:
            del bucket[subscription]
            self._count -= 1
            if not bucket:
                del self._by_pattern[subscription.pattern]
                self._wildcards.pop(subscription.pattern, None)
            self._clear_cache()

    def match(self, channel: str) -> list[Subscription[C]]:
        """Subscriptions matching ``channel``: those of wildcard patterns (in the order
        the patterns were first subscribed), then those of the literal one; each
        pattern's in subscription order. The list is shared: do not change it."""
        found = self._cache.get(channel)
        if found is None:
            patterns = tuple(pattern for pattern in self._wildcards if matches(pattern, channel))
            if channel in self._by_pattern:  # a channel has no wildcards: a literal pattern
                patterns += (channel,)
            found = self._by_patterns.get(patterns)
            if found is None:
                found = [s for pattern in patterns for s in self._by_pattern[pattern]]
                if self._cached_references + len(found) > CACHE_REFERENCES:
                    self._clear_cache()
                self._by_patterns[patterns] = found
                self._cached_references += len(found)
            if len(self._cache) >= CACHE_CHANNELS:
                self._cache.clear()
            self._cache[channel] = found
        return found

    def _clear_cache(self) -> None:
        self._cache.clear()
        self._by_patterns.clear()
        self._cached_references = 0


@dataclass(slots=True)
class OutboundBuffer:
    """Frames waiting to be written to one connection, with a byte limit.

    ``offer`` refuses a live frame once the limit is passed: the caller then
    drops the consumer (close 4008) instead of letting it slow anyone else or
    grow the hub's memory. Replies and replay frames use ``put``, which never
    refuses: replay applies back-pressure instead (``below_low_water``).
    """

    limit: int
    # A list, not a deque: an empty deque still holds a 64-slot block (~0.5 KiB), and
    # every idle connection has one of these (docs/benchmarks.md, memory per connection).
    frames: list[tuple[int, bytes]] = field(default_factory=list)
    size: int = 0
    last_taken_seq: int = 0

    def offer(self, frame: bytes, seq: int) -> bool:
        if self.size + len(frame) > self.limit:
            return False
        self.frames.append((seq, frame))
        self.size += len(frame)
        return True

    def put(self, frame: bytes, seq: int = 0) -> None:
        self.frames.append((seq, frame))
        self.size += len(frame)

    def take(self) -> list[tuple[int, bytes]]:
        """Everything queued as (seq, frame), oldest first; remembers the last seq taken."""
        taken = self.frames
        self.consume(len(taken))
        return taken

    def consume(self, count: int) -> None:
        """The oldest ``count`` frames were handed to the socket: forget them, and
        remember the last seq among them (the rest stay queued, in order)."""
        frames = self.frames
        if count >= len(frames):
            taken, self.frames, self.size = frames, [], 0
        else:
            taken, self.frames = frames[:count], frames[count:]
            self.size -= sum(len(frame) for _, frame in taken)
        for seq, _ in reversed(taken):
            if seq:
                self.last_taken_seq = seq
                break

    def clear(self) -> None:
        self.frames = []
        self.size = 0

    def below_low_water(self) -> bool:
        return self.size <= self.limit // 2


@dataclass(slots=True)
class ReplayCursor:
    """Where a replaying subscription stands in the log.

    The hub calls ``next_range(head)`` with the last seq it has fanned out. When
    it returns None the subscription has seen everything up to ``head`` and must
    go live in the same step (no await in between), which is what makes the
    hand-over from replay to live free of gaps and duplicates.
    """

    position: int

    def next_range(self, head: int) -> tuple[int, int] | None:
        if self.position >= head:
            return None
        return self.position, head

    def advance(self, scanned_to: int) -> None:
        self.position = max(self.position, scanned_to)
