"""UUIDv7 event ids (RFC 9562): 48-bit Unix milliseconds, then random bits; sortable by time.

Made on the caller's thread by track(), so they are cheap: the random bits come from a
private `random.Random` seeded from `os.urandom`, never the global `random` (an application
that calls `random.seed()` must not get repeated ids, which dedup would then remove). It is
re-seeded in a forked child, so parent and child never draw the same bits.
"""

from __future__ import annotations

import os
import random

_VERSION_AND_VARIANT = (0x7 << 76) | (0x2 << 62)
_RAND_B_BITS = 62
_RAND_B_MASK = (1 << _RAND_B_BITS) - 1

# Random() with no seed reads os.urandom; getrandbits is one C call, atomic under the GIL.
_rng = random.Random()  # unique, not secret: an id is not a credential
os.register_at_fork(after_in_child=lambda: _rng.seed(os.urandom(32)))


def uuid7(unix_ns: int) -> str:
    """The canonical (8-4-4-4-12 hex) UUIDv7 string for a timestamp in nanoseconds."""
    rand = _rng.getrandbits(74)  # 12 bits of rand_a, then 62 of rand_b
    value = (
        ((unix_ns // 1_000_000) & 0xFFFF_FFFF_FFFF) << 80
        | _VERSION_AND_VARIANT
        | (rand >> _RAND_B_BITS) << 64
        | rand & _RAND_B_MASK
    )
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
