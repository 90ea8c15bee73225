"""Call ids are UUIDv7: valid UUIDs, unique, in the order of the milliseconds they were made in."""

from __future__ import annotations

import time
import uuid

import pytest

from edgeproxy.callids import new_call_id


def test_a_call_id_is_a_version_7_uuid_carrying_the_time_it_was_made() -> None:
    before = time.time_ns() // 1_000_000
    call_id = new_call_id()
    after = time.time_ns() // 1_000_000
    parsed = uuid.UUID(call_id)
    assert str(parsed) == call_id  # the usual lower-case 8-4-4-4-12 form
    assert parsed.version == 7
    assert parsed.variant == uuid.RFC_4122
    assert before <= parsed.int >> 80 <= after


def test_ids_made_in_later_milliseconds_sort_after_earlier_ones() -> None:
    ids = []
    for _ in range(5):
        start = time.time_ns() // 1_000_000
        ids.append(new_call_id())
        while time.time_ns() // 1_000_000 == start:  # the next id in a later millisecond
            pass
    assert ids == sorted(ids)


def test_ids_keep_74_random_bits(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(time, "time_ns", lambda: 1_700_000_000_000_000_000)  # one millisecond for all
    ids = {new_call_id() for _ in range(10_000)}
    assert len(ids) == 10_000
    randoms = [uuid.UUID(i).int & ~(~0 << 80) for i in ids]
    # Every random bit (12 after the version, 62 after the variant) varies across the ids.
    varying = 0
    for value in randoms:
        varying |= value ^ randoms[0]
    assert varying == ((1 << 12) - 1) << 64 | ((1 << 62) - 1)
