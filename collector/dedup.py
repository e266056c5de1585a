"""Optional dedup of `event_id` over a time window, in bounded memory, to absorb SDK retries.

An id is remembered only after the sink acknowledged its event, so a batch retried after a 503
is published again, never dropped. Per process: with several workers or collectors, only a
retry that reaches the same process is caught (Kafka consumers still dedup by `event_id`).
This module must not publish, count metrics or read the clock: `now_s` is passed in.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable

from collector.model import WireEvent
from collector.validation import BatchVerdict


class Deduplicator:
    """The event ids acknowledged in the last `window_s`, at most `max_ids` of them.

    Past `max_ids` the oldest ids are forgotten first, so memory stays bounded (about 200
    bytes per id) and a flood of new ids only shortens the window, never blocks ingestion.
    """

    def __init__(self, *, window_s: float, max_ids: int) -> None:
        self.window_s = window_s
        self.max_ids = max_ids
        # uuid.int -> expiry (s). Insertion order is acknowledgement order, so the oldest is
        # first; the int, not the UUID object, keeps entries small and hashing in C.
        self._expiry_s: OrderedDict[int, float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._expiry_s)

    def seen(self, event: WireEvent, now_s: float) -> bool:
        expiry_s = self._expiry_s.get(event.event_id.int)
        return expiry_s is not None and expiry_s > now_s

    def drop_seen(self, verdict: BatchVerdict, now_s: float) -> tuple[BatchVerdict, int]:
        """`verdict` without the valid events acknowledged within the window; and how many.

        Dead letters are kept: they carry no promise of an id and are rare.
        """
        if not self._expiry_s:
            return verdict, 0
        keep = [i for i, event in enumerate(verdict.valid) if not self.seen(event, now_s)]
        duplicates = len(verdict.valid) - len(keep)
        if not duplicates:
            return verdict, 0
        new_position = {old: new for new, old in enumerate(keep)}
        annotated = [
            (new_position[position], schema, properties)
            for position, schema, properties in verdict.annotated
            if position in new_position
        ]
        valid = [verdict.valid[i] for i in keep]
        return BatchVerdict(valid, verdict.invalid, annotated), duplicates

    def remember(self, events: Iterable[WireEvent], now_s: float) -> None:
        """Record ids the sink acknowledged at `now_s`; forget expired and excess ones."""
        expiry_s = now_s + self.window_s
        entries = self._expiry_s
        for event in events:
            key = event.event_id.int
            if key in entries:
                entries.move_to_end(key)  # keeps the oldest-first order true
            entries[key] = expiry_s
        while entries and (len(entries) > self.max_ids or next(iter(entries.values())) <= now_s):
            entries.popitem(last=False)
