"""Review of issue 17's SDK changes: one event the encoder cannot turn into a WireEvent (its
context is not a mapping) is dropped alone as `unserializable`; the events batched with it are
still encoded and sent, as when each event was encoded alone."""

from __future__ import annotations

from typing import Any

import msgspec

from capture_sdk._delivery import SizeLimits, encode_batch, queue_event
from capture_sdk._events import QueuedEvent
from capture_sdk._validation import LocalValidator


def test_bad_context_drops_only_its_event() -> None:
    good = [queue_event("page_viewed", {"i": i}, 1, None, "anon-1", None, None) for i in range(5)]
    bad_context: Any = ["not", "a", "mapping"]
    bad = queue_event("page_viewed", {"i": 99}, 1, None, "anon-1", None, bad_context)
    seen: list[tuple[str, list[QueuedEvent]]] = []

    def drop(events: list[QueuedEvent], reason: str, detail: str) -> None:
        seen.append((reason, events))

    batch = [*good[:2], bad, *good[2:]]
    chunks = encode_batch(
        batch, msgspec.json.Encoder(), drop, LocalValidator("off", None), SizeLimits()
    )
    assert seen == [("unserializable", [bad])]
    assert [events for events, _ in chunks] == [good]
    sent = msgspec.json.decode(b"[" + chunks[0][1] + b"]")
    assert [e["properties"]["i"] for e in sent] == [0, 1, 2, 3, 4]
