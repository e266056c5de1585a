"""The worker's batch encoding (capture_sdk._delivery.encode_batch) and the ledger's settling
of a batch (capture_sdk._ledger.Batch), checked against plain reference definitions.

encode_batch writes every event of a chunk into one growing buffer; these tests hold it to
what encoding each event alone and joining them gives: the same bytes, the same cuts at
max_batch_bytes, the same drops, and nothing left behind by an event that failed half way.
"""

from __future__ import annotations

import random
from typing import Any

import msgspec
import pytest

from capture_sdk._delivery import SizeLimits, encode_batch, queue_event, wire_event
from capture_sdk._events import DroppedEvent, QueuedEvent
from capture_sdk._ledger import Ledger
from capture_sdk._outcomes import Counters, Outcomes
from capture_sdk._transport import Response
from capture_sdk._validation import LocalValidator

OFF = LocalValidator("off", None)
OK = Response(200, b'{"accepted":0,"rejected":[]}')


def event(properties: dict[str, Any]) -> QueuedEvent:
    return queue_event("page_viewed", properties, 1, None, "anon-1", None, None)


def reference(events: list[QueuedEvent]) -> list[bytes]:
    return [msgspec.json.encode(wire_event(e)) for e in events]


class Drops:
    def __init__(self) -> None:
        self.seen: list[tuple[str, list[QueuedEvent]]] = []

    def __call__(self, events: list[QueuedEvent], reason: str, detail: str) -> None:
        self.seen.append((reason, events))


def reference_chunks(
    batch: list[QueuedEvent], limits: SizeLimits
) -> tuple[list[tuple[list[QueuedEvent], bytes]], list[QueuedEvent]]:
    """The rules, one event at a time: too large ones dropped, and a chunk cut before the
    event that would take its JSON (events joined by commas) past max_batch_bytes."""
    chunks: list[tuple[list[QueuedEvent], list[bytes]]] = []
    too_large: list[QueuedEvent] = []
    for e in batch:
        payload = msgspec.json.encode(wire_event(e))
        if len(payload) > limits.max_event_bytes:
            too_large.append(e)
            continue
        if chunks:
            events, parts = chunks[-1]
            if len(b",".join([*parts, payload])) <= limits.max_batch_bytes:
                events.append(e)
                parts.append(payload)
                continue
        chunks.append(([e], [payload]))
    return [(events, b",".join(parts)) for events, parts in chunks], too_large


@pytest.mark.parametrize(
    ("seed", "count", "max_path", "max_batch_bytes", "max_event_bytes"),
    [
        pytest.param(5, 300, 600, 4_000, 32 * 1024, id="many-chunks"),
        pytest.param(6, 500, 300, 512 * 1024, 32 * 1024, id="one-chunk"),
        pytest.param(10, 500, 100, 30_000, 32 * 1024, id="groups-and-cuts"),
        pytest.param(7, 400, 1_500, 512 * 1024, 1_000, id="some-too-large"),
        pytest.param(8, 400, 900, 20_000, 1_200, id="groups-over-max-event-bytes"),
        pytest.param(9, 200, 40_000, 100_000, 32 * 1024, id="large-events"),
    ],
)
def test_chunks_are_what_encoding_each_event_alone_gives(
    seed: int, count: int, max_path: int, max_batch_bytes: int, max_event_bytes: int
) -> None:
    rng = random.Random(seed)
    batch = [event({"path": "/" + "p" * rng.randrange(0, max_path), "n": i}) for i in range(count)]
    limits = SizeLimits(max_batch_bytes=max_batch_bytes, max_event_bytes=max_event_bytes)
    drops = Drops()
    chunks = encode_batch(batch, msgspec.json.Encoder(), drops, OFF, limits)
    expected, too_large = reference_chunks(batch, limits)
    assert [len(events) for events, _ in chunks] == [len(events) for events, _ in expected]
    assert chunks == expected
    assert drops.seen == ([("too_large", too_large)] if too_large else [])


def same_size_events(count: int) -> tuple[list[QueuedEvent], int]:
    events = [event({"path": "/same", "n": 1_000 + i}) for i in range(count)]
    sizes = {len(msgspec.json.encode(wire_event(e))) for e in events}
    assert len(sizes) == 1  # a fixed-length id and time: every event's JSON is as long
    return events, sizes.pop()


@pytest.mark.parametrize(
    ("fit", "slack", "expected"),
    [
        pytest.param(64, 0, [64, 64, 2], id="a-group-that-fits-to-the-byte"),
        pytest.param(64, -1, [63, 63, 4], id="a-group-one-byte-over"),
        pytest.param(10, 0, [10] * 13, id="single-events-to-the-byte"),
        pytest.param(10, -1, [9] * 14 + [4], id="single-events-one-byte-over"),
    ],
)
def test_a_chunk_holds_what_fits_in_max_batch_bytes_to_the_byte(
    fit: int, slack: int, expected: list[int]
) -> None:
    batch, size = same_size_events(130)
    limits = SizeLimits(max_batch_bytes=fit * size + (fit - 1) + slack)
    chunks = encode_batch(batch, msgspec.json.Encoder(), Drops(), OFF, limits)
    assert [len(events) for events, _ in chunks] == expected
    assert chunks == reference_chunks(batch, limits)[0]


def test_spooled_events_are_cut_to_the_byte_too() -> None:
    record = b'{"spooled":"' + b"s" * 50 + b'"}'
    batch = [msgspec.structs.replace(event({"n": i}), encoded=record, segment=1) for i in range(10)]
    limits = SizeLimits(max_batch_bytes=3 * len(record) + 2)  # three, and their two commas
    chunks = encode_batch(batch, msgspec.json.Encoder(), Drops(), OFF, limits)
    assert [len(events) for events, _ in chunks] == [3, 3, 3, 1]
    assert chunks[0][1] == b",".join([record] * 3)


def test_an_event_that_fails_half_way_leaves_nothing_in_its_chunk() -> None:
    good = [event({"path": f"/{i}"}) for i in range(4)]
    # msgspec writes `"properties":{"a":1,` before it meets the object it cannot encode
    bad = event({"a": 1, "b": object()})
    big = event({"path": "/" + "x" * 3_000})
    batch = [good[0], bad, good[1], big, good[2], bad, good[3]]
    drops = Drops()
    limits = SizeLimits(max_batch_bytes=512 * 1024, max_event_bytes=1_000)
    [(events, payload)] = encode_batch(batch, msgspec.json.Encoder(), drops, OFF, limits)
    assert events == good
    assert payload == b",".join(reference(good))
    assert [e["properties"] for e in msgspec.json.decode(b"[" + payload + b"]")] == [
        {"path": f"/{i}"} for i in range(4)
    ]
    assert drops.seen == [("unserializable", [bad, bad]), ("too_large", [big])]


def test_a_spooled_event_goes_as_encoded_at_track() -> None:
    fresh = event({"path": "/fresh"})
    spooled = msgspec.structs.replace(
        event({"path": "/ignored"}), encoded=b'{"spooled":true}', segment=3
    )
    [(events, payload)] = encode_batch(
        [spooled, fresh, spooled], msgspec.json.Encoder(), Drops(), OFF, SizeLimits()
    )
    assert events == [spooled, fresh, spooled]
    assert payload == b'{"spooled":true},' + reference([fresh])[0] + b',{"spooled":true}'


def test_an_event_over_max_batch_bytes_goes_in_a_chunk_of_its_own() -> None:
    small, large = event({"path": "/s"}), event({"path": "/" + "l" * 2_000})
    limits = SizeLimits(max_batch_bytes=1_000, max_event_bytes=32 * 1024)
    chunks = encode_batch([small, large, small], msgspec.json.Encoder(), Drops(), OFF, limits)
    assert [events for events, _ in chunks] == [[small], [large], [small]]
    assert [payload for _, payload in chunks] == reference([small, large, small])


# --- the ledger: every event settled exactly once -------------------------------------------


def ledger() -> tuple[Ledger, Counters, list[DroppedEvent]]:
    counters = Counters()
    dropped: list[DroppedEvent] = []
    return Ledger(Outcomes(counters, dropped.extend), lambda: None), counters, dropped


def test_a_batch_delivered_whole_is_counted_once_and_then_holds_nothing() -> None:
    book, counters, dropped = ledger()
    events = [event({"n": i}) for i in range(5)]
    batch = book.claim(list(events))
    batch.delivered(events, OK)
    batch.delivered(events, OK)  # a second answer for the same events settles nothing
    batch.give_up(events, "shutdown", "late")
    batch.close("internal_error", "left unsettled")
    assert (counters.sent, dropped) == (5, [])
    assert book.held == 0
    assert book.settle_all("shutdown", "end") == 0


def test_a_batch_settled_in_parts_counts_each_event_once() -> None:
    book, counters, dropped = ledger()
    events = [event({"n": i}) for i in range(6)]
    batch = book.claim(list(events))
    batch.delivered(events[:2], OK)  # one chunk of the batch
    rejected = Response(200, b'{"accepted":1,"rejected":[{"index":0,"reason":"schema"}]}')
    batch.delivered(events[1:4], rejected)  # events[1] was settled already: not again
    batch.drop(events[3:5], "collector_refused", "HTTP 400")  # events[3] also settled
    batch.close("shutdown", "end")  # what is left: events[5]
    assert counters.sent == 4  # events 0, 1, then 2 and 3 of the second answer
    assert [(d.event_id, d.reason) for d in dropped] == [
        (events[4].event_id, "collector_refused"),
        (events[5].event_id, "shutdown"),
    ]
    assert counters.rejected == 0  # its rejection named events[1], settled before
    assert book.held == 0
