"""The Bloom filter behind key tracking: never a false "absent", few false "maybe"."""

from __future__ import annotations

import hashlib

from edgeproxy.cache.presence import PresenceFilter


def digest(i: int) -> str:
    return hashlib.sha256(f"entry {i}".encode()).hexdigest()


def test_what_went_in_is_always_found() -> None:
    presence = PresenceFilter(capacity=1000)
    for i in range(1000):
        presence.add(digest(i))
    assert all(presence.might_contain(digest(i)) for i in range(1000))
    # Counted: those that set a bit (a digest already "maybe" there does not make the filter fuller).
    assert 990 <= presence.count <= 1000
    for i in range(1000, 1100):
        presence.add(digest(i))
    assert presence.full


def test_at_capacity_about_one_in_a_hundred_absent_digests_is_a_maybe() -> None:
    presence = PresenceFilter(capacity=10_000)
    for i in range(10_000):
        presence.add(digest(i))
    false_positives = sum(presence.might_contain(digest(i)) for i in range(10_000, 30_000))
    assert 0 < false_positives < 20_000 * 0.02  # sized for 1 %
    assert presence.size_bits == 129_000  # 12.9 bits an entry (3 hashes)


def test_an_empty_filter_knows_everything_is_absent_and_clear_empties_it() -> None:
    presence = PresenceFilter(capacity=100)
    assert not presence.might_contain(digest(1))
    presence.add(digest(1))
    presence.add(digest(1))  # the same digest twice counts once
    assert presence.count == 1 and not presence.full
    presence.clear()
    assert not presence.might_contain(digest(1)) and presence.count == 0
