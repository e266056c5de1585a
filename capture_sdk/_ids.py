"""UUIDv7 event ids (RFC 9562): 48-bit Unix milliseconds, then random bits; sortable by time.

Made on the caller's thread by track(), so they are cheap: the random bits come from a
private `random.Random` seeded from `os.urandom`, never the global `random` (an application
that calls `random.seed()` must not get repeated ids, which dedup would then remove). It is
re-seeded in a forked child, so parent and child never draw the same bits.

The timestamp's text (the first 13 characters, up to the version digit) is formatted once
per millisecond: track() runs hundreds of times per millisecond in a burst.
"""

from __future__ import annotations

import os
import random

# Random() with no seed reads os.urandom; getrandbits is one C call, atomic under the GIL.
_rng = random.Random()  # unique, not secret: an id is not a credential
os.register_at_fork(after_in_child=lambda: _rng.seed(os.urandom(32)))
_bits = _rng.getrandbits

_VARIANT = 0x2 << 14  # the top two bits of the fourth group: 0b10
# (unix ms, "tttttttt-tttt-7"): swapped as one tuple, so a thread never sees half of it
_prefix: tuple[int, str] = (-1, "")


def uuid7(unix_ns: int) -> str:
    """The canonical (8-4-4-4-12 hex) UUIDv7 string for a timestamp in nanoseconds.

    After the 48-bit time and the version digit: 12 random bits (rand_a), the variant, and 62
    random bits (rand_b); the last 12 hex digits are 48 of them (what sampling reads).
    """
    global _prefix
    unix_ms = unix_ns // 1_000_000
    cached_ms, prefix = _prefix
    if unix_ms != cached_ms:
        stamp = unix_ms & 0xFFFF_FFFF_FFFF
        prefix = f"{stamp >> 16:08x}-{stamp & 0xFFFF:04x}-7"
        _prefix = (unix_ms, prefix)
    # one %-format: measured a quarter cheaper than the f-string or str.format of the same
    return "%s%03x-%04x-%012x" % (prefix, _bits(12), _VARIANT | _bits(14), _bits(48))  # noqa: UP031
