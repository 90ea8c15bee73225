"""Which cache entries may exist: a Bloom filter over the entries' SHA-256 digests.

The Redis cache asks it before a lookup (cache/tracking.py keeps it current): "no" is certain, so a miss, the
common answer of an LLM response cache, costs no round trip; "maybe" is asked of Redis. A Bloom filter, not a
set, because its memory is fixed (1.6 MB for a million entries at 1 % false positives) whatever the cache
holds; a false positive only costs the round trip every lookup used to make. Entries cannot be taken out, so a
filter fills with entries that have expired: once as many digests as it was sized for went in, it asks to be
rebuilt (`full`).
"""

from __future__ import annotations

import math

DEFAULT_CAPACITY = 1_000_000
BITS_PER_ENTRY = 12.9  # with 3 hashes: 1 % false positives at capacity, (1 - e^(-3 / 12.9))^3
HASHES = 3  # few, since each costs Python on every store and lookup; more bits make up for it
_SLICE_HEX = 8  # one bit position per 32 bits of the digest (which is uniform already: no hashing here)


class PresenceFilter:
    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        self.capacity = capacity
        self.size_bits = max(64, math.ceil(capacity * BITS_PER_ENTRY))
        self._bits = bytearray((self.size_bits + 7) // 8)
        self.count = 0  # digests added that were not in it yet

    def _positions(self, digest: str) -> tuple[int, int, int]:
        value, size = int(digest[: HASHES * _SLICE_HEX], 16), self.size_bits
        return (value & 0xFFFFFFFF) % size, ((value >> 32) & 0xFFFFFFFF) % size, (value >> 64) % size

    def add(self, digest: str) -> None:
        bits = self._bits
        new = False
        for position in self._positions(digest):
            byte, mask = position >> 3, 1 << (position & 7)
            if not bits[byte] & mask:
                bits[byte] |= mask
                new = True
        if new:
            self.count += 1

    def might_contain(self, digest: str) -> bool:
        bits = self._bits
        a, b, c = self._positions(digest)
        return bool(bits[a >> 3] & (1 << (a & 7)) and bits[b >> 3] & (1 << (b & 7)) and bits[c >> 3] & (1 << (c & 7)))

    def clear(self) -> None:
        self._bits = bytearray(len(self._bits))
        self.count = 0

    @property
    def full(self) -> bool:
        """As many digests went in as it was sized for: false positives now grow with every one more."""
        return self.count >= self.capacity
