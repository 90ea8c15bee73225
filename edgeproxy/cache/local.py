"""`cache_params.type: local`: an in-process LRU with per-entry TTL, bounded by entry count and by bytes.

Values are the encoded entries (bytes), so the memory an entry holds is known exactly: its value and key,
plus a fixed allowance for the bookkeeping around them. Expired entries are dropped when read; the least recently
used go first when a bound is reached. An entry larger than the whole budget is
not stored at all (it would evict everything and then be evicted itself).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass

DEFAULT_MAX_ENTRIES = 10_000
DEFAULT_MAX_BYTES = 64 * 1024 * 1024
# Per-entry bookkeeping (dict slot, tuple, floats): rough, but it keeps many tiny entries from escaping the bound.
ENTRY_OVERHEAD_BYTES = 200


@dataclass(slots=True)
class _Entry:
    value: bytes
    expires_at: float
    size: int


class LocalLRU:
    def __init__(
        self,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        max_bytes: int = DEFAULT_MAX_BYTES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_entries = max(1, max_entries)
        self.max_bytes = max(1, max_bytes)
        self._clock = clock
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self.bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> bytes | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry.expires_at <= self._clock():
            self._remove(key)
            return None
        self._entries.move_to_end(key)
        return entry.value

    def ttl_s(self, key: str) -> float | None:
        """Seconds the entry has left, or None when there is no live entry."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        left = entry.expires_at - self._clock()
        return left if left > 0 else None

    def set(self, key: str, value: bytes, ttl_s: float) -> bool:
        """Store `value` for `ttl_s` seconds; False when it is too big to keep at all."""
        self._remove(key)
        size = len(value) + len(key) + ENTRY_OVERHEAD_BYTES
        if size > self.max_bytes or ttl_s <= 0:
            return False
        self._make_room(size)
        self._entries[key] = _Entry(value, self._clock() + ttl_s, size)
        self.bytes += size
        return True

    def delete(self, keys: Iterable[str]) -> int:
        return sum(1 for key in keys if self._remove(key))

    def delete_prefix(self, prefix: str) -> int:
        return self.delete([key for key in self._entries if key.startswith(prefix)])

    def _remove(self, key: str) -> bool:
        entry = self._entries.pop(key, None)
        if entry is None:
            return False
        self.bytes -= entry.size
        return True

    def _make_room(self, size: int) -> None:
        # Least recently used first. Expired entries are not swept here (that would scan everything on each
        # store once full): nobody reads them, so they drift to the old end and go first anyway.
        while self._entries and (len(self._entries) >= self.max_entries or self.bytes + size > self.max_bytes):
            oldest = next(iter(self._entries))
            self._remove(oldest)
