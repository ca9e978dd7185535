"""Which (publisher, id) pairs the log may hold: a Bloom filter (pure: no I/O).

The SQLite log answers a commit from its journal, so it must find a batch's resends
before it writes, and SQLite's unique index costs ~6 µs per id to ask (a page read or
more on each probe: the connection's cache starts over after every fold). Nearly every
id is new; the filter says so in well under a microsecond, never wrongly: an id it does
not rule out (a resend, or about one new id in a hundred) is looked up as before.
"""

from __future__ import annotations

from collections.abc import Iterable

Key = tuple[str, str]  # (publisher, id)

BITS_PER_KEY = 10  # with 4 probes: about 1.2% of new ids looked up for nothing
MIN_CAPACITY = 1 << 20  # keys; 1.25 MiB of bits
MAX_BITS = 1 << 30  # 128 MiB: past ~100 M keys it stays this size and rules out less


class SeenIds:
    """Bits set for every key added; a key whose bits are not all set was never added.
    Keys cannot be taken out (retention's trims leave theirs: they only cost lookups);
    once it holds ``capacity`` keys, build a bigger one (``SqliteStore`` does)."""

    def __init__(self, capacity: int = MIN_CAPACITY) -> None:
        self.capacity = max(capacity, MIN_CAPACITY)
        bits = 1 << (self.capacity * BITS_PER_KEY - 1).bit_length()
        self._bits = min(bits, MAX_BITS)
        self._mask = self._bits - 1
        self._array = bytearray(self._bits >> 3)
        self.count = 0

    @property
    def full(self) -> bool:
        """Holding more keys than it was sized for (and not at its largest)."""
        return self.count > self.capacity and self._bits < MAX_BITS

    def add(self, key: Key) -> bool:
        """Add ``key``; whether it may have been added before (``may_hold``, in the same
        pass: one hash for both)."""
        # Four probes from two halves of one 64-bit hash (Kirsch-Mitzenmacher), written
        # out: a loop or a generator costs more than the probes. Python's str hash is
        # salted per process: fine for a filter that lives in one.
        digest = hash(key)
        first, step, mask, array = digest, (digest >> 32) | 1, self._mask, self._array
        held = True
        bit = first & mask
        flag = 1 << (bit & 7)
        if not array[bit >> 3] & flag:
            array[bit >> 3] |= flag
            held = False
        bit = (first + step) & mask
        flag = 1 << (bit & 7)
        if not array[bit >> 3] & flag:
            array[bit >> 3] |= flag
            held = False
        bit = (first + 2 * step) & mask
        flag = 1 << (bit & 7)
        if not array[bit >> 3] & flag:
            array[bit >> 3] |= flag
            held = False
        bit = (first + 3 * step) & mask
        flag = 1 << (bit & 7)
        if not array[bit >> 3] & flag:
            array[bit >> 3] |= flag
            held = False
        self.count += 1
        return held

    def update(self, keys: Iterable[Key]) -> None:
        for key in keys:
            self.add(key)

    def may_hold(self, key: Key) -> bool:
        """False: ``key`` was never added. True: it may have been."""
        digest = hash(key)
        first, step, mask, array = digest, (digest >> 32) | 1, self._mask, self._array
        bit = first & mask
        if not array[bit >> 3] & (1 << (bit & 7)):
            return False
        bit = (first + step) & mask
        if not array[bit >> 3] & (1 << (bit & 7)):
            return False
        bit = (first + 2 * step) & mask
        if not array[bit >> 3] & (1 << (bit & 7)):
            return False
        bit = (first + 3 * step) & mask
        return bool(array[bit >> 3] & (1 << (bit & 7)))
