"""The hot-key overflow lane (issue 15, section 3): the detector, its settings and topics.

A key past `hot_key_rate_per_s` (with `hot_key_burst`) in one topic has its further records
written to `<topic>_overflow`; memory stays bounded under a flood of distinct keys; the log
line comes at most once per key per minute; every overflow topic is checked with the plan.
"""

from __future__ import annotations

import gc
import hashlib
import logging
import tracemalloc
from pathlib import Path

import msgspec
import pytest

from collector.app import create_app
from collector.hotkeys import (
    DIGEST_BYTES,
    LOG_INTERVAL_S,
    MAX_KEY_BYTES_TRACKED,
    HotKeys,
    overflow_topic,
)
from collector.settings import Settings, SettingsError
from collector.sinks.base import Record
from collector.sinks.file import FileSink, topic_path
from collector.sinks.memory import MemorySink
from event_schemas import SchemaRegistry
from event_schemas.topics import MAX_TOPIC_CHARS
from tests.conftest import start_collector
from tests.factories import batch_body, page_viewed, track_played
from tests.unit.test_replay_file import run, values

DLQ = "events._invalid"
JSON = {"Content-Type": "application/json"}
LONG_KEY_BYTES = 16_384


def record(key: bytes | None, topic: str = "events.track_played") -> Record:
    return Record(topic, key, b"{}", [], 0)


def detector(rate_per_s: float = 10.0, burst: int = 5, max_keys: int = 1000) -> HotKeys:
    return HotKeys(rate_per_s=rate_per_s, burst=burst, max_keys=max_keys, dead_letter_topic=DLQ)


def topics(records: list[Record]) -> list[str]:
    return [r.topic for r in records]


def test_a_key_past_its_burst_goes_to_the_overflow_topic_and_back_as_tokens_refill() -> None:
    hot = detector(rate_per_s=8.0, burst=5)
    out, diverted = hot.divert([record(b"u1") for _ in range(8)], now_s=100.0)
    normal, lane = "events.track_played", "events.track_played_overflow"
    assert topics(out) == [normal] * 5 + [lane] * 3  # the first `burst` stay, in order
    assert diverted == {normal: 3}
    # 1/8 s at 8/s is one token: one more record in the normal topic, the next overflows
    out, _ = hot.divert([record(b"u1"), record(b"u1")], now_s=100.125)
    assert topics(out) == [normal, lane]
    # another key, and the same key in another topic, have buckets of their own
    out, diverted = hot.divert([record(b"u2"), record(b"u1", "events.page_viewed")], now_s=100.1)
    assert topics(out) == [normal, "events.page_viewed"]
    assert not diverted


def test_a_key_at_the_threshold_never_overflows() -> None:
    hot = detector(rate_per_s=10.0, burst=2)
    for i in range(200):  # 10 events/s exactly, for 20 s
        out, diverted = hot.divert([record(b"steady")], now_s=i / 10)
        assert not diverted, i
        assert topics(out) == ["events.track_played"]


def test_dead_letters_and_keyless_records_are_never_diverted() -> None:
    hot = detector(rate_per_s=1.0, burst=1)
    batch = [record(b"u1", DLQ) for _ in range(5)] + [record(None) for _ in range(5)]
    out, diverted = hot.divert(batch, now_s=0.0)
    assert out == batch
    assert not diverted


def test_memory_stays_bounded_under_a_flood_of_distinct_keys() -> None:
    hot = detector(rate_per_s=1.0, burst=2, max_keys=1000)
    victim = [record(b"victim")] * 3  # 3 events/s against 1/s: hot after its burst of 2
    for second in range(200):  # 100k distinct keys, 500 a second, each seen once
        flood = [record(b"flood-%d" % i) for i in range(second * 500, second * 500 + 500)]
        _, diverted = hot.divert([*flood, *victim], now_s=float(second))
        assert len(hot) <= 1000
        # the flood never overflows; the key seen every second stays tracked (least recently
        # seen is forgotten first), so it keeps overflowing: 3 events, 1 token a second
        assert diverted == {"events.track_played": 1 if second == 0 else 2}, second


def test_memory_per_tracked_key_does_not_grow_with_the_keys_length() -> None:
    # a schema's x-partition-key may be any string its schema allows, up to the event's
    # size: max_keys of them must not keep max_keys copies of such keys alive (review R3)
    max_keys = 500
    hot = detector(rate_per_s=1.0, burst=2, max_keys=max_keys)
    gc.collect()
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        for start in range(0, 4 * max_keys, 100):
            batch = [record(b"%06d" % i + b"k" * LONG_KEY_BYTES) for i in range(start, start + 100)]
            hot.divert(batch, now_s=0.0)
            del batch
        gc.collect()
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(hot) == max_keys
    # the keys themselves would be 500 x 16 KiB = 8 MiB; a bucket costs a few hundred bytes
    assert held - before < max_keys * 1024


def test_long_keys_keep_buckets_of_their_own() -> None:
    hot = detector(rate_per_s=1.0, burst=1)
    long_key = b"k" * LONG_KEY_BYTES
    out, _ = hot.divert([record(long_key), record(long_key)], now_s=0.0)
    assert topics(out) == ["events.track_played", "events.track_played_overflow"]
    # another long key, a short one equal to the long key's digest, and its first 64 bytes
    # are other keys: none shares the hot key's empty bucket
    digest = hashlib.blake2b(long_key, digest_size=DIGEST_BYTES).digest()
    others = [long_key[:-1] + b"x", digest, long_key[:MAX_KEY_BYTES_TRACKED]]
    out, diverted = hot.divert([record(key) for key in others], now_s=0.0)
    assert not diverted, topics(out)


def test_the_log_line_comes_at_most_once_per_key_per_minute(
    caplog: pytest.LogCaptureFixture,
) -> None:
    hot = detector(rate_per_s=1.0, burst=1)
    caplog.set_level(logging.WARNING, logger="collector.hotkeys")
    for second in range(int(LOG_INTERVAL_S)):  # hot for a minute: one line
        hot.divert([record(b"u1")] * 10, now_s=float(second))
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1
    assert "'u1'" in lines[0]
    assert "events.track_played_overflow" in lines[0]
    hot.divert([record(b"u1")] * 10, now_s=LOG_INTERVAL_S)  # a minute later: one more
    hot.divert([record(b"u2")] * 10, now_s=LOG_INTERVAL_S)  # another key: its own line
    assert len(caplog.records) == 3


def test_a_long_key_is_cut_in_the_log(caplog: pytest.LogCaptureFixture) -> None:
    hot = detector(rate_per_s=1.0, burst=1)
    caplog.set_level(logging.WARNING, logger="collector.hotkeys")
    hot.divert([record(b"x" * 10_000 + b"\n")] * 2, now_s=0.0)
    (line,) = [r.getMessage() for r in caplog.records]
    assert len(line) < 400
    assert "\n" not in line


# ---- the overflow topics are checked with the plan ------------------------------------------


def hot(**overrides: object) -> Settings:
    return msgspec.structs.replace(Settings(sink="memory", hot_key_rate_per_s=1.0), **overrides)


def test_an_overflow_topic_that_is_another_topic_is_refused(
    schemas: SchemaRegistry, tmp_path: Path
) -> None:
    config = tmp_path / "collector.toml"
    config.write_text(
        '[[routing.fanout]]\nevents = ["page_viewed"]\ntopic = "events.track_played_overflow"\n'
    )
    for settings in [
        hot(config_file=str(config)),
        hot(dead_letter_topic="events.track_played_overflow"),
    ]:
        with pytest.raises(SettingsError, match=r"CAPTURE_HOT_KEY_RATE_PER_S.*track_played"):
            create_app(settings, schemas=schemas)
        # with the lane off the same settings serve: the check is the lane's own
        create_app(msgspec.structs.replace(settings, hot_key_rate_per_s=0.0), schemas=schemas)


def test_an_overflow_topic_too_long_for_kafka_is_refused(schemas: SchemaRegistry) -> None:
    longest = max(len(event) for event in schemas.events())
    # the longest event topic just fits Kafka's limit; its overflow topic does not
    prefix = "p" * (MAX_TOPIC_CHARS - longest - 1) + "."
    create_app(Settings(sink="memory", topic_prefix=prefix), schemas=schemas)
    with pytest.raises(SettingsError, match=rf"CAPTURE_HOT_KEY_RATE_PER_S.*{MAX_TOPIC_CHARS}"):
        create_app(hot(topic_prefix=prefix), schemas=schemas)


# ---- through the app: metric, file sink, replay ---------------------------------------------


async def test_a_hot_users_events_go_to_the_overflow_topic_and_are_counted(
    schemas: SchemaRegistry,
) -> None:
    sink = MemorySink()
    settings = hot(hot_key_rate_per_s=1.0, hot_key_burst=3)
    client = await start_collector(settings, sink, schemas)  # a fixed clock: no refill
    try:
        events = [track_played(user_id="hot") for _ in range(5)]
        calm = page_viewed(user_id="calm")
        response = await client.post("/v1/batch", data=batch_body(*events, calm), headers=JSON)
        assert response.status == 200
        assert (await response.json())["accepted"] == 6
        metrics = await (await client.get("/metrics")).text()
    finally:
        await client.close()
    ids = [msgspec.json.decode(r.value)["event_id"] for r in sink.topic("events.track_played")]
    lane = sink.topic(overflow_topic("events.track_played"))
    assert ids == [e["event_id"] for e in events[:3]]
    assert [msgspec.json.decode(r.value)["event_id"] for r in lane] == [
        e["event_id"] for e in events[3:]
    ]
    assert all(r.key == b"hot" for r in lane)
    assert len(sink.topic("events.page_viewed")) == 1
    assert not sink.topic("events.page_viewed_overflow")
    assert 'capture_hot_key_overflow_total{topic="events.track_played"} 2.0' in metrics


async def test_the_file_sink_writes_the_overflow_topic_and_replay_reads_it_as_the_event(
    schemas: SchemaRegistry, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    settings = hot(sink="file", data_dir=str(data), hot_key_burst=2)
    client = await start_collector(settings, FileSink(data), schemas)
    events = [track_played(user_id="hot") for _ in range(4)]
    try:
        response = await client.post("/v1/batch", data=batch_body(*events), headers=JSON)
        assert response.status == 200
    finally:
        await client.close()
    assert topic_path(data, "events.track_played_overflow").is_file()
    out = tmp_path / "replayed.jsonl"
    code, counts, err = await run(
        "--data-dir", str(data), "--event", "track_played", "--dedup", "--out", str(out)
    )
    assert code == 0, err
    assert sorted(v["event_id"] for v in values(out)) == sorted(e["event_id"] for e in events)
    assert counts["read"] == 4
