"""event_id dedup: bounded window and memory, remembered only once the sink acknowledged."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest
from prometheus_client.parser import text_string_to_metric_families

from collector.dedup import Deduplicator
from collector.model import WireEvent
from collector.settings import Settings
from collector.sinks import MemorySink
from collector.validation import BatchVerdict
from event_schemas import SchemaRegistry
from tests.conftest import HttpClient, start_collector
from tests.factories import batch_body, track_played

JSON = {"Content-Type": "application/json"}


def wire_event() -> WireEvent:
    return WireEvent(
        event="track_played",
        version=1,
        event_id=uuid.uuid4(),
        occurred_at=dt.datetime(2026, 11, 26, tzinfo=dt.UTC),
        properties=msgspec.Raw(b"{}"),
        user_id="u",
    )


def test_an_acknowledged_id_is_a_duplicate_within_the_window_only() -> None:
    dedup = Deduplicator(window_s=60, max_ids=10)
    event = wire_event()
    assert not dedup.seen(event, 100.0)
    dedup.remember([event], 100.0)
    assert dedup.seen(event, 159.9)
    assert not dedup.seen(event, 160.0)


def test_memory_is_bounded_by_forgetting_the_oldest_ids() -> None:
    dedup = Deduplicator(window_s=3600, max_ids=3)
    events = [wire_event() for _ in range(5)]
    for second, event in enumerate(events):
        dedup.remember([event], float(second))
    assert len(dedup) == 3
    assert [dedup.seen(e, 10.0) for e in events] == [False, False, True, True, True]


def test_expired_ids_are_purged_when_new_ones_arrive() -> None:
    dedup = Deduplicator(window_s=10, max_ids=100)
    dedup.remember([wire_event(), wire_event()], 0.0)
    dedup.remember([wire_event()], 20.0)
    assert len(dedup) == 1


def test_seeing_an_id_again_renews_it_and_keeps_the_oldest_first() -> None:
    dedup = Deduplicator(window_s=10, max_ids=2)
    first, second, third = wire_event(), wire_event(), wire_event()
    dedup.remember([first, second], 0.0)
    dedup.remember([first], 5.0)  # renewed: `second` is now the oldest
    dedup.remember([third], 6.0)
    assert (dedup.seen(first, 6.0), dedup.seen(second, 6.0), dedup.seen(third, 6.0)) == (
        True,
        False,
        True,
    )


def test_drop_seen_keeps_annotations_pointing_at_the_right_events() -> None:
    dedup = Deduplicator(window_s=60, max_ids=10)
    events = [wire_event() for _ in range(3)]
    dedup.remember([events[0]], 0.0)
    marker_1: Any = object()
    marker_2: Any = object()
    verdict = BatchVerdict(events, [], [(0, marker_1, marker_1), (2, marker_2, marker_2)])
    fresh, duplicates = dedup.drop_seen(verdict, 1.0)
    assert duplicates == 1
    assert fresh.valid == events[1:]
    assert fresh.annotated == [(1, marker_2, marker_2)]


async def start(memory_sink: MemorySink, schemas: SchemaRegistry, **settings: Any) -> HttpClient:
    return await start_collector(Settings(sink="memory", **settings), memory_sink, schemas)


async def post(client: HttpClient, body: bytes) -> tuple[int, Any]:
    response = await client.post("/v1/batch", data=body, headers=JSON)
    return response.status, msgspec.json.decode(await response.read())


async def dedup_hits(client: HttpClient) -> float:
    """The counter as Prometheus scrapes it."""
    text = await (await client.get("/metrics")).text()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "capture_dedup_hits_total":
                return sample.value
    raise AssertionError("capture_dedup_hits_total is not exposed")


@pytest.fixture
async def dedup_collector(
    memory_sink: MemorySink, schemas: SchemaRegistry
) -> AsyncIterator[HttpClient]:
    client = await start(memory_sink, schemas, dedup_window_s=300, dedup_max_ids=1000)
    yield client
    await client.close()


async def test_the_same_batch_twice_is_published_once_and_counted(
    dedup_collector: HttpClient, memory_sink: MemorySink
) -> None:
    body = batch_body(track_played(), track_played())
    assert await post(dedup_collector, body) == (200, {"accepted": 2, "rejected": []})
    assert await post(dedup_collector, body) == (200, {"accepted": 2, "rejected": []})
    assert len(memory_sink.topic("events.track_played")) == 2
    assert await dedup_hits(dedup_collector) == 2


async def test_a_retry_after_a_503_is_published(
    dedup_collector: HttpClient, memory_sink: MemorySink
) -> None:
    body = batch_body(track_played())
    memory_sink.available = False
    status, _ = await post(dedup_collector, body)
    assert status == 503
    memory_sink.available = True
    status, payload = await post(dedup_collector, body)
    assert (status, payload["accepted"]) == (200, 1)
    assert len(memory_sink.topic("events.track_played")) == 1
    assert await dedup_hits(dedup_collector) == 0


async def test_only_the_repeated_events_of_a_mixed_batch_are_dropped(
    dedup_collector: HttpClient, memory_sink: MemorySink
) -> None:
    seen = track_played()
    assert (await post(dedup_collector, batch_body(seen)))[0] == 200
    new = track_played()
    assert (await post(dedup_collector, batch_body(seen, new)))[0] == 200
    ids = [msgspec.json.decode(r.value)["event_id"] for r in memory_sink.records]
    assert ids == [seen["event_id"], new["event_id"]]
    assert await dedup_hits(dedup_collector) == 1


async def test_dedup_is_off_by_default(collector: HttpClient, memory_sink: MemorySink) -> None:
    body = batch_body(track_played())
    for _ in range(2):
        assert (await post(collector, body))[0] == 200
    assert len(memory_sink.records) == 2
    assert await dedup_hits(collector) == 0


async def test_a_duplicate_keyed_by_its_schema_field_is_dropped_too(
    dedup_collector: HttpClient, memory_sink: MemorySink
) -> None:
    # artist_profile_viewed declares x-partition-key: dropping an event must not shift the
    # schema-declared key onto another event's record
    keyed = track_played(
        event="artist_profile_viewed",
        properties={"artist_id": "artist-9", "section": "music"},
    )
    plain = track_played()
    assert (await post(dedup_collector, batch_body(keyed)))[0] == 200
    assert (await post(dedup_collector, batch_body(keyed, plain)))[0] == 200
    assert [(r.topic, r.key) for r in memory_sink.records] == [
        ("events.artist_profile_viewed", b"artist-9"),
        ("events.track_played", b"u-42"),
    ]
