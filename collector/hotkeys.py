"""Stage after `route`: divert the records of hot keys to their topic's overflow lane.

A key (a record's Kafka key, which picks its partition) sending faster than the threshold into
one topic, in this process, has its further records written to `<topic>_overflow`, so that one
key cannot flood a partition of the normal topic. Bounded memory; `now_s` is passed in. It must
not publish, count metrics, or touch dead letters (they are rare and have their own topic).
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter, OrderedDict
from collections.abc import Sequence

import msgspec

from collector.ratelimit import TokenBucket
from collector.sinks.base import Record

log = logging.getLogger(__name__)

OVERFLOW_SUFFIX = "_overflow"
# At most one log line per hot key per this many seconds: a key that stays hot would
# otherwise log once per request.
LOG_INTERVAL_S = 60.0
# How much of a key a log line shows: keys are client data of any length.
LOG_KEY_CHARS = 64
# A key longer than this (a schema's x-partition-key may be any string up to the event's size)
# is tracked by a digest of it, so that a tracked key costs the same few hundred bytes however
# long it is; the usual ids (256 characters at most, see collector/model.py) are mostly shorter
# and are tracked as they are, at no hashing cost.
MAX_KEY_BYTES_TRACKED = 64
DIGEST_BYTES = 16

# (topic, key) for a short key; (topic, digest, length) for a long one, which a short key's
# pair can never equal, so no client can pick a short key that shares a long key's bucket
_Pair = tuple[str, bytes] | tuple[str, bytes, int]


def overflow_topic(topic: str) -> str:
    """Where the records of a hot key of `topic` go (checked with the plan, see reload.py)."""
    return topic + OVERFLOW_SUFFIX


class _KeyBucket(TokenBucket):
    __slots__ = ("logged_s",)

    def __init__(self, rate_per_s: float, burst: int, now_s: float) -> None:
        super().__init__(rate_per_s, burst, now_s)
        self.logged_s: float | None = None


class HotKeys:
    """One token bucket per (topic, key) seen recently, at most `max_keys` of them.

    A record takes a token from its (topic, key) bucket; with none left it is diverted.
    Past `max_keys` the least recently seen pair is forgotten, so a flood of distinct keys
    costs bounded memory (a long key is held as a digest); a forgotten key starts again with
    a full bucket, which only lets up to `burst` more of its records into the normal topic,
    never drops one.
    """

    def __init__(
        self, *, rate_per_s: float, burst: int, max_keys: int, dead_letter_topic: str
    ) -> None:
        self.rate_per_s = rate_per_s
        self.burst = burst
        self.max_keys = max_keys
        self._dead_letter_topic = dead_letter_topic
        self._buckets: OrderedDict[_Pair, _KeyBucket] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def divert(self, records: Sequence[Record], now_s: float) -> tuple[list[Record], Counter[str]]:
        """`records` with those of hot keys moved to their overflow topic, in the same order;
        and how many were moved, by their normal topic."""
        buckets = self._buckets
        out = list(records)
        diverted: Counter[str] = Counter()
        for position, record in enumerate(records):
            if record.key is None or record.topic == self._dead_letter_topic:
                continue
            key = record.key
            if len(key) <= MAX_KEY_BYTES_TRACKED:
                pair: _Pair = (record.topic, key)
            else:
                digest = hashlib.blake2b(key, digest_size=DIGEST_BYTES).digest()
                pair = (record.topic, digest, len(key))
            bucket = buckets.get(pair)
            if bucket is None:
                bucket = buckets[pair] = _KeyBucket(self.rate_per_s, self.burst, now_s)
                if len(buckets) > self.max_keys:
                    buckets.popitem(last=False)
            else:
                buckets.move_to_end(pair)
            if bucket.take(now_s) == 0.0:
                continue
            out[position] = msgspec.structs.replace(record, topic=overflow_topic(record.topic))
            diverted[record.topic] += 1
            if bucket.logged_s is None or now_s - bucket.logged_s >= LOG_INTERVAL_S:
                bucket.logged_s = now_s
                self._log(record.topic, record.key)
        return out, diverted

    def _log(self, topic: str, key: bytes) -> None:
        shown = key[:LOG_KEY_CHARS].decode("utf-8", "backslashreplace")
        log.warning(
            "hot key %r in %s: more than %g events/s (burst %d) in this process; its events go"
            " to %s while it stays above (at most one such line per key per %gs)",
            shown + ("..." if len(key) > LOG_KEY_CHARS else ""),
            topic,
            self.rate_per_s,
            self.burst,
            overflow_topic(topic),
            LOG_INTERVAL_S,
        )
