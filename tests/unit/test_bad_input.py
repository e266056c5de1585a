"""Hostile and broken requests against the real app: each gets a 4xx with a JSON error (or a
dead letter with its reason) and the collector goes on answering 200 to a good batch.
"""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest

from collector.settings import Settings
from collector.sinks import MemorySink
from event_schemas import SchemaRegistry
from tests.conftest import HttpClient, start_collector
from tests.factories import batch_body, track_played

JSON = {"Content-Type": "application/json"}
GZIP_JSON = {"Content-Type": "application/json", "Content-Encoding": "gzip"}
DEEP = 100_000


async def post(client: HttpClient, body: bytes, headers: dict[str, str]) -> tuple[int, Any]:
    response = await client.post("/v1/batch", data=body, headers=headers)
    assert response.content_type == "application/json"
    return response.status, msgspec.json.decode(await response.read())


async def assert_still_healthy(client: HttpClient) -> None:
    status, payload = await post(client, batch_body(track_played()), JSON)
    assert (status, payload["accepted"]) == (200, 1)


def event_bytes(
    properties: bytes = b'{"track_id":"t","artist_id":"a","position_ms":1}', **raw: bytes
) -> bytes:
    """One track_played event with some members spliced in as raw JSON text."""
    fields = {
        "event": b'"track_played"',
        "version": b"1",
        "event_id": b'"0193a0b4-7c1e-7cc0-8000-000000000001"',
        "occurred_at": b'"2026-11-26T12:00:00Z"',
        "user_id": b'"u-1"',
        "properties": properties,
        **raw,
    }
    return b"{" + b",".join(b'"%s":%s' % (k.encode(), v) for k, v in fields.items()) + b"}"


def batch_of(*events: bytes) -> bytes:
    return b'{"batch":[' + b",".join(events) + b"]}"


def nested(levels: int) -> bytes:
    return b'{"a":' * levels + b"1" + b"}" * levels


REQUEST_ERRORS = [
    pytest.param(batch_of(event_bytes(nested(DEEP))), 400, "too_deep", id="deep-properties"),
    pytest.param(batch_of(event_bytes(context=nested(DEEP))), 400, "too_deep", id="deep-context"),
    pytest.param(batch_of(b"[" * DEEP + b"]" * DEEP), 400, "too_deep", id="deep-envelope-element"),
    pytest.param(
        b'{"extra":' + nested(DEEP) + b',"batch":[]}', 400, "too_deep", id="deep-unknown-field"
    ),
    # under Python's recursion limit, so msgspec parses it: the depth limit must still hold
    pytest.param(batch_of(event_bytes(context=nested(40))), 400, "too_deep", id="context-40"),
    pytest.param(batch_of(event_bytes(b'{"a":NaN}')), 400, "malformed_json", id="nan"),
    pytest.param(batch_of(event_bytes(context=b"Infinity")), 400, "malformed_json", id="inf"),
    pytest.param(batch_of(event_bytes(b'{"a":"\xff\xfe"}')), 400, "malformed_json", id="utf8-raw"),
    pytest.param(
        batch_of(event_bytes(b'{"track_id":"\xc3","artist_id":"a","position_ms":1}')),
        400,
        "malformed_json",
        id="utf8-typed-property",
    ),
    pytest.param(
        batch_of(event_bytes(user_id=b'"\xed\xa0\x80"')), 400, "malformed_json", id="surrogate"
    ),
]


@pytest.mark.parametrize(("body", "status", "reason"), REQUEST_ERRORS)
async def test_bad_json_gets_a_4xx_json_error_and_nothing_is_published(
    collector: HttpClient, memory_sink: MemorySink, body: bytes, status: int, reason: str
) -> None:
    got_status, payload = await post(collector, body, JSON)
    assert (got_status, payload["error"]) == (status, reason), payload
    assert payload["detail"]
    assert memory_sink.records == []
    await assert_still_healthy(collector)


PROPS = b'"track_id":"t","artist_id":"a","position_ms":1'
EVENT_REJECTIONS = [
    # duration_ms has a maximum in the plan; 10^400 must fail it, not overflow anything
    pytest.param(
        b"{" + PROPS + b',"duration_ms":1' + b"0" * 400 + b"}",
        "invalid_properties",
        id="int-10^400",
    ),
    pytest.param(b"{" + PROPS + b',"duration_ms":1e400}', "invalid_properties", id="1e400"),
    pytest.param(
        b'{"track_id":"' + b"x" * 200_000 + b'","artist_id":"a","position_ms":1}',
        "event_too_large",
        id="huge-string",
    ),
    # msgspec checks every occurrence of a duplicate key, so a consumer that reads the first
    # one (properties are forwarded as sent) never sees a value that was not validated
    pytest.param(b"{" + PROPS + b',"position_ms":-1}', "invalid_properties", id="dup-key-bad"),
]


@pytest.mark.parametrize(("properties", "reason"), EVENT_REJECTIONS)
async def test_bad_values_dead_letter_their_event_only(
    collector: HttpClient, memory_sink: MemorySink, properties: bytes, reason: str
) -> None:
    good = msgspec.json.encode(track_played())
    status, payload = await post(collector, batch_of(good, event_bytes(properties)), JSON)
    assert status == 200
    assert payload["accepted"] == 1
    [rejected] = payload["rejected"]
    assert (rejected["index"], rejected["reason"]) == (1, reason)
    [dead] = memory_sink.topic("events._invalid")
    # the event is kept as sent (1e400 included): read the dead letter without parsing it
    letter = msgspec.json.decode(dead.value, type=dict[str, msgspec.Raw])
    assert msgspec.json.decode(letter["reason"]) == reason
    await assert_still_healthy(collector)


async def test_huge_identity_string_fails_its_event_not_the_request(
    collector: HttpClient, memory_sink: MemorySink
) -> None:
    body = batch_of(event_bytes(user_id=b'"' + b"u" * 500_000 + b'"'))
    status, payload = await post(collector, body, JSON)
    assert (status, payload["rejected"][0]["reason"]) == (200, "invalid_event")
    assert len(memory_sink.topic("events._invalid")) == 1


async def test_huge_number_in_context_is_passed_through_as_sent(
    collector: HttpClient, memory_sink: MemorySink
) -> None:
    # context is not typed: a JSON number of any size is valid JSON; the record keeps its text
    big = b"1" + b"0" * 400
    status, payload = await post(collector, batch_of(event_bytes(context=b'{"n":%s}' % big)), JSON)
    assert (status, payload["accepted"]) == (200, 1)
    assert b'"context":{"n":' + big + b"}" in memory_sink.records[0].value


async def test_huge_integer_where_the_plan_sets_no_maximum_is_dead_lettered(
    collector: HttpClient, memory_sink: MemorySink
) -> None:
    """position_ms has only a minimum: the loader bounds it to int64 above, because consumers
    downstream cannot read a wider integer and properties are forwarded as sent."""
    good = msgspec.json.encode(track_played())
    status, payload = await post(
        collector, batch_of(event_bytes(b"{" + PROPS + b"0" * 400 + b"}"), good), JSON
    )
    assert (status, payload["accepted"]) == (200, 1)
    (rejected,) = payload["rejected"]
    assert (rejected["index"], rejected["reason"]) == (0, "invalid_properties")
    assert rejected["errors"][0]["path"] == "$.properties.position_ms"
    assert [record.topic for record in memory_sink.records] == [
        "events.track_played",
        "events._invalid",
    ]
    # the widest int64 still passes
    status, payload = await post(
        collector, batch_of(event_bytes(b"{" + PROPS[:-1] + b"%d}" % (2**63 - 1))), JSON
    )
    assert (status, payload["accepted"]) == (200, 1)


async def test_duplicate_keys_every_one_validated_the_last_wins(
    collector: HttpClient, memory_sink: MemorySink
) -> None:
    """As in Python's json and JSON.parse, the last duplicate wins; the envelope is
    re-encoded with one key, properties are forwarded as sent (each occurrence validated)."""
    body = batch_of(
        event_bytes(b"{" + PROPS + b',"position_ms":5}', user_id=b'"first","user_id":"last"')
    )
    status, payload = await post(collector, body, JSON)
    assert (status, payload["accepted"]) == (200, 1)
    record = memory_sink.records[0]
    assert record.key == b"last"
    assert msgspec.json.decode(record.value)["properties"]["position_ms"] == 5


async def test_gzip_bomb_is_413_and_the_collector_stays_up(
    memory_sink: MemorySink, schemas: SchemaRegistry
) -> None:
    client = await start_collector(
        Settings(sink="memory", max_decompressed_bytes=1_000_000), memory_sink, schemas
    )
    try:
        bomb = gzip.compress(b'{"batch":[' + b" " * 200_000_000 + b"]}", compresslevel=9)
        assert len(bomb) < 1_000_000 < 200_000_000
        status, payload = await post(client, bomb, GZIP_JSON)
        assert (status, payload["error"]) == (413, "body_too_large")
        assert "decompressed" in payload["detail"]
        await assert_still_healthy(client)
    finally:
        await client.close()


async def test_concatenated_gzip_members_are_one_body(
    collector: HttpClient, memory_sink: MemorySink
) -> None:
    body = batch_body(track_played(), track_played())
    half = len(body) // 2
    status, payload = await post(
        collector, gzip.compress(body[:half]) + gzip.compress(body[half:]), GZIP_JSON
    )
    assert (status, payload["accepted"]) == (200, 2)
    assert len(memory_sink.records) == 2


@pytest.mark.parametrize(
    ("headers", "status", "reason"),
    [
        pytest.param({}, 415, "unsupported_content_type", id="no-content-type"),
        pytest.param(
            {"Content-Type": "application/x-www-form-urlencoded"},
            415,
            "unsupported_content_type",
            id="form",
        ),
        pytest.param(
            {**JSON, "Content-Encoding": "deflate"}, 415, "unsupported_encoding", id="deflate"
        ),
        pytest.param(
            {**JSON, "Content-Encoding": "gzip, br"}, 415, "unsupported_encoding", id="stacked"
        ),
    ],
)
async def test_wrong_headers_get_415(
    collector: HttpClient, headers: dict[str, str], status: int, reason: str
) -> None:
    response = await collector.post(
        "/v1/batch",
        data=batch_body(track_played()),
        headers=headers,
        skip_auto_headers=["Content-Type"],  # "no-content-type" really sends none
    )
    payload = msgspec.json.decode(await response.read())
    assert (response.status, payload["error"]) == (status, reason)
    await assert_still_healthy(collector)


async def test_too_many_events_is_413_for_the_whole_request(
    memory_sink: MemorySink, schemas: SchemaRegistry
) -> None:
    client = await start_collector(
        Settings(sink="memory", max_batch_events=3), memory_sink, schemas
    )
    try:
        status, payload = await post(client, batch_body(*[track_played() for _ in range(4)]), JSON)
        assert (status, payload["error"]) == (413, "too_many_events")
        assert memory_sink.records == []
        status, payload = await post(client, batch_body(*[track_played() for _ in range(3)]), JSON)
        assert (status, payload["accepted"]) == (200, 3)
    finally:
        await client.close()


async def test_event_over_max_event_bytes_is_dead_lettered(
    memory_sink: MemorySink, schemas: SchemaRegistry
) -> None:
    client = await start_collector(
        Settings(sink="memory", max_event_bytes=200), memory_sink, schemas
    )
    try:
        small = track_played()
        large = track_played(context={"pad": "x" * 200})
        status, payload = await post(client, batch_body(small, large), JSON)
        assert status == 200
        assert payload["accepted"] == 1
        [rejected] = payload["rejected"]
        assert (rejected["index"], rejected["reason"]) == (1, "event_too_large")
        assert rejected["event_id"] == large["event_id"]
        [dead] = memory_sink.topic("events._invalid")
        assert msgspec.json.decode(dead.value)["event"]["event_id"] == large["event_id"]
    finally:
        await client.close()


@pytest.fixture
async def slow_collector(
    memory_sink: MemorySink, schemas: SchemaRegistry
) -> AsyncIterator[HttpClient]:
    client = await start_collector(
        Settings(sink="memory", body_read_timeout_s=0.3), memory_sink, schemas
    )
    yield client
    await client.close()


async def test_a_body_that_trickles_in_gets_408_and_connection_close(
    slow_collector: HttpClient, memory_sink: MemorySink
) -> None:
    body = batch_body(track_played())
    reader, writer = await asyncio.open_connection("127.0.0.1", slow_collector.port)
    head = (
        f"POST /v1/batch HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    writer.write(head.encode() + body[:10])
    await writer.drain()

    async def trickle() -> None:  # a byte at a time, never finishing in time
        for byte in body[10:]:
            await asyncio.sleep(0.05)
            writer.write(bytes([byte]))

    trickling = asyncio.create_task(trickle())
    try:
        status_line = await asyncio.wait_for(reader.readline(), timeout=30)
        assert status_line.startswith(b"HTTP/1.1 408 ")
        headers = {}
        while (line := await reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode().partition(":")
            headers[name.strip().lower()] = value.strip()
        assert headers["connection"].lower() == "close"
        payload = msgspec.json.decode(await reader.readexactly(int(headers["content-length"])))
        assert payload["error"] == "body_timeout"
    finally:
        trickling.cancel()
        writer.close()
    assert memory_sink.records == []
    await assert_still_healthy(slow_collector)
