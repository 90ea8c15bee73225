"""The local cache: an LRU bounded by entries and by bytes, with a TTL per entry."""

from __future__ import annotations

from edgeproxy.cache import LocalLRU
from edgeproxy.cache.local import ENTRY_OVERHEAD_BYTES


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_entries_expire_after_their_ttl() -> None:
    clock = Clock()
    lru = LocalLRU(clock=clock)
    lru.set("a", b"1", ttl_s=10)
    lru.set("b", b"2", ttl_s=20)
    clock.now += 10
    assert lru.get("a") is None and lru.get("b") == b"2"
    assert lru.ttl_s("b") == 10
    assert len(lru) == 1 and lru.bytes == 1 + 1 + ENTRY_OVERHEAD_BYTES


def test_bounded_by_entries_least_recently_used_first() -> None:
    lru = LocalLRU(max_entries=3, clock=Clock())
    for name in "abc":
        lru.set(name, name.encode(), ttl_s=60)
    assert lru.get("a") == b"a"  # a is now the most recently used
    lru.set("d", b"d", ttl_s=60)
    assert [lru.get(n) for n in "abcd"] == [b"a", None, b"c", b"d"]
    assert len(lru) == 3


def test_bounded_by_memory() -> None:
    entry = 1000 + 1 + ENTRY_OVERHEAD_BYTES
    lru = LocalLRU(max_bytes=3 * entry, clock=Clock())
    for name in "abcdef":
        lru.set(name, b"x" * 1000, ttl_s=60)
        assert lru.bytes <= 3 * entry
    assert [n for n in "abcdef" if lru.get(n) is not None] == ["d", "e", "f"]
    assert not lru.set("huge", b"x" * (4 * entry), ttl_s=60)  # bigger than the whole budget: not stored
    assert lru.get("huge") is None and len(lru) == 3


def test_replacing_and_deleting_keep_the_byte_count_exact() -> None:
    lru = LocalLRU(clock=Clock())
    lru.set("ns:a", b"12345", ttl_s=60)
    lru.set("ns:a", b"1", ttl_s=60)
    lru.set("other:b", b"1", ttl_s=60)
    assert lru.bytes == (len("ns:a") + 1 + ENTRY_OVERHEAD_BYTES) + (len("other:b") + 1 + ENTRY_OVERHEAD_BYTES)
    assert lru.delete_prefix("ns:") == 1 and lru.delete(["other:b", "missing"]) == 1
    assert lru.bytes == 0 and len(lru) == 0
