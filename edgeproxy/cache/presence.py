"""Which cache entries may exist: a Bloom filter over the entries' SHA-256 digests.

The Redis cache asks it before a lookup (cache/tracking.py keeps it current): "no" is certain, so a miss, the
common answer of an LLM response cache, costs no round trip; "maybe" is asked of Redis. A Bloom filter, not a
set, because its memory is fixed (1.2 MB for a million entries at 1 % false positives) whatever the cache
holds; a false positive only costs the round trip every lookup used to make. Entries cannot be taken out, so a
filter fills with entries that have expired: once as many digests as it was sized for went in, it asks to be
rebuilt (`full`).
"""

from __future__ import annotations

import math

DEFAULT_CAPACITY = 1_000_000
FALSE_POSITIVE_RATE = 0.01
_DIGEST_HEX = 64  # sha256, as cache keys write it (cache/keys.py)
_SLICE_BITS = 32  # one bit position per 32 bits of the digest: 8 slices, at most 8 hashes


class PresenceFilter:
    def __init__(self, capacity: int = DEFAULT_CAPACITY, false_positive_rate: float = FALSE_POSITIVE_RATE) -> None:
        self.capacity = capacity
        bits = math.ceil(-capacity * math.log(false_positive_rate) / math.log(2) ** 2)
        self.size_bits = max(64, bits)
        # The digest is already uniform: its 32-bit slices are the hashes (no hashing here).
        self.hashes = min(_DIGEST_HEX * 4 // _SLICE_BITS, max(1, round(self.size_bits / capacity * math.log(2))))
        self._bits = bytearray((self.size_bits + 7) // 8)
        self.count = 0  # digests added that were not in it yet

    def add(self, digest: str) -> None:
        bits, size, value = self._bits, self.size_bits, int(digest, 16)
        new = False
        for _ in range(self.hashes):
            position = (value & 0xFFFFFFFF) % size
            byte, mask = position >> 3, 1 << (position & 7)
            if not bits[byte] & mask:
                bits[byte] |= mask
                new = True
            value >>= _SLICE_BITS
        if new:
            self.count += 1

    def might_contain(self, digest: str) -> bool:
        bits, size, value = self._bits, self.size_bits, int(digest, 16)
        for _ in range(self.hashes):  # an absent digest usually stops at the first bit
            position = (value & 0xFFFFFFFF) % size
            if not bits[position >> 3] & (1 << (position & 7)):
                return False
            value >>= _SLICE_BITS
        return True

    def clear(self) -> None:
        self._bits = bytearray(len(self._bits))
        self.count = 0

    @property
    def full(self) -> bool:
        """As many digests went in as it was sized for: false positives now grow with every one more."""
        return self.count >= self.capacity
