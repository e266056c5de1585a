"""UUIDv7 event ids (capture_sdk._ids): the layout RFC 9562 gives, the time they carry, and
random bits that differ per id, also across the millisecond cache of the time's text."""

from __future__ import annotations

import time
import uuid

from capture_sdk._ids import uuid7

MS = 1_000_000  # ns


def test_an_id_is_a_canonical_uuid7_carrying_its_millisecond() -> None:
    unix_ns = 1_764_590_400_123_456_789
    event_id = uuid7(unix_ns)
    parsed = uuid.UUID(event_id)
    assert str(parsed) == event_id  # canonical: lower-case hex, 8-4-4-4-12
    assert parsed.version == 7
    assert parsed.variant == uuid.RFC_4122
    assert parsed.int >> 80 == unix_ns // MS


def test_each_millisecond_gets_its_own_time_text() -> None:
    # the time's text is cached per millisecond: a new millisecond must not reuse it
    base = time.time_ns() // MS * MS
    for step in (0, 1, 1, 2, 1_000, 1 << 20, 0):
        unix_ns = base + step * MS
        assert uuid.UUID(uuid7(unix_ns)).int >> 80 == unix_ns // MS, step


def test_ids_sort_by_their_millisecond() -> None:
    base = time.time_ns()
    ids = [uuid7(base + i * MS) for i in range(0, 50, 7)]
    assert ids == sorted(ids)


def test_the_bits_after_the_time_are_random_in_every_field() -> None:
    ids = [uuid.UUID(uuid7(0)) for _ in range(2_000)]  # one timestamp: only the random bits
    assert len({u.int for u in ids}) == len(ids)
    rand_a = {(u.int >> 64) & 0xFFF for u in ids}
    rand_b_high = {(u.int >> 48) & 0x3FFF for u in ids}
    rand_b_low = {u.int & 0xFFFF_FFFF_FFFF for u in ids}  # what sampling reads
    # 2,000 draws from 4,096, 16,384 and 2**48 values: a constant field would show as one value
    assert len(rand_a) > 1_000
    assert len(rand_b_high) > 1_500
    assert len(rand_b_low) == len(ids)
    assert len({(u.int >> 40) & 0xFF for u in ids}) > 200  # its top bits too (of 256)
    assert {u.version for u in ids} == {7}
    assert {u.variant for u in ids} == {uuid.RFC_4122}
