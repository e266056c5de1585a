"""Enrichment: clock-skew correction, client IP (trusted proxies, anonymised), user agent.

Pure stage tests call `enrich` and `ClientIdentifier` directly; the HTTP tests drive the real
handler so that what a record holds is what the collector writes.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import uuid
from typing import Any

import msgspec
import pytest

from collector.client_ip import ClientIdentifier, RequestContext, anonymize, parse_networks
from collector.enrichment import clock_skew, enrich
from collector.model import WireEvent
from collector.settings import Settings, SettingsError, load_settings
from collector.sinks import MemorySink
from event_schemas import SchemaRegistry
from tests.conftest import FIXED_NOW, HttpClient, start_collector
from tests.factories import track_played

JSON = {"Content-Type": "application/json"}
OCCURRED = dt.datetime(2026, 11, 26, 11, 0, 0, tzinfo=dt.UTC)


def wire_event() -> WireEvent:
    return WireEvent(
        event="track_played",
        version=1,
        event_id=uuid.uuid4(),
        occurred_at=OCCURRED,
        properties=msgspec.Raw(b"{}"),
        user_id="u",
    )


def written(event: WireEvent) -> dict[str, Any]:
    value: dict[str, Any] = msgspec.json.decode(msgspec.json.encode(event))
    return value


# --- clock skew -------------------------------------------------------------------------------


def test_client_clock_behind_moves_the_event_forward_and_keeps_the_original() -> None:
    event = wire_event()
    # the client's clock says 11:59:55 when ours says 12:00:05: it is 10 s behind
    enrich([event], received_at=FIXED_NOW, sent_at="2026-11-26T11:59:55Z")
    value = written(event)
    assert value["occurred_at"] == "2026-11-26T11:00:00Z"  # as sent
    assert value["timestamp"] == "2026-11-26T11:00:10Z"  # on the server's clock
    assert value["sent_at"] == "2026-11-26T11:59:55Z"
    assert value["received_at"] == "2026-11-26T12:00:05Z"


def test_client_clock_ahead_with_an_offset_moves_the_event_back() -> None:
    event = wire_event()
    # 14:00:35+02:00 is 12:00:35Z: the client is 30 s ahead
    enrich([event], received_at=FIXED_NOW, sent_at="2026-11-26T14:00:35.000+02:00")
    assert written(event)["timestamp"] == "2026-11-26T10:59:30Z"


@pytest.mark.parametrize(
    "sent_at",
    [None, "2026-11-26T11:59:55", "yesterday", "2026-13-01T00:00:00Z"],
    ids=["absent", "no-offset", "not-a-time", "bad-month"],
)
def test_without_a_valid_sent_at_the_event_time_is_as_sent(sent_at: str | None) -> None:
    event = wire_event()
    enrich([event], received_at=FIXED_NOW, sent_at=sent_at)
    value = written(event)
    assert value["timestamp"] == value["occurred_at"] == "2026-11-26T11:00:00Z"
    assert value["sent_at"] is None
    assert clock_skew(sent_at, FIXED_NOW) is None


def test_zero_skew_still_writes_the_corrected_time() -> None:
    event = wire_event()
    enrich([event], received_at=FIXED_NOW, sent_at="2026-11-26T12:00:05Z")
    assert written(event)["timestamp"] == "2026-11-26T11:00:00Z"


def test_every_event_of_a_batch_gets_the_same_skew() -> None:
    events = [wire_event() for _ in range(3)]
    events[1].occurred_at = OCCURRED - dt.timedelta(minutes=5)
    enrich(events, received_at=FIXED_NOW, sent_at="2026-11-26T12:00:00Z")
    assert [e.timestamp - e.occurred_at for e in events] == [dt.timedelta(seconds=5)] * 3


# --- absurd times (issue #12): the receipt instead, never an error ------------------------------

MAX = dt.datetime.max.replace(tzinfo=dt.UTC)
MIN = dt.datetime.min.replace(tzinfo=dt.UTC)
AHEAD = dt.timezone(dt.timedelta(hours=23, minutes=59))
BEHIND = dt.timezone(dt.timedelta(hours=-23, minutes=-59))


@pytest.mark.parametrize(
    ("occurred_at", "sent_at"),
    [
        (dt.datetime(9999, 12, 31, 23, 59, 59, tzinfo=dt.UTC), "2026-11-26T12:00:01Z"),
        (OCCURRED, "9999-12-31T23:59:59Z"),  # the sum falls before year 1
        (OCCURRED, "0001-01-01T00:00:00Z"),  # the sum lands in year 4051
        (OCCURRED, "9999-12-31T23:59:59.999999-23:59"),
        (OCCURRED, "0001-01-01T00:00:00+23:59"),
        (MAX, "0001-01-01T00:00:00Z"),  # past year 9999: OverflowError
        (MIN, "9999-12-31T23:59:59Z"),  # before year 1: OverflowError
        (dt.datetime.max.replace(tzinfo=BEHIND), None),  # as sent, 1 day past 9999 in UTC
        (dt.datetime.min.replace(tzinfo=AHEAD), None),  # as sent, before 0001-01-01Z
        (dt.datetime(9999, 12, 31, 23, 59, 59, tzinfo=dt.UTC), None),
        (FIXED_NOW + dt.timedelta(hours=23, seconds=1), None),
    ],
)
def test_an_absurd_event_time_becomes_the_receive_time(
    occurred_at: dt.datetime, sent_at: str | None
) -> None:
    event = wire_event()
    event.occurred_at = occurred_at
    enrich([event], received_at=FIXED_NOW, sent_at=sent_at)
    value = written(event)
    assert value["timestamp"] == value["received_at"] == "2026-11-26T12:00:05Z"
    assert value["occurred_at"] == msgspec.json.decode(msgspec.json.encode(occurred_at))


@pytest.mark.parametrize(
    ("occurred_at", "sent_at", "expected"),
    [
        # up to 23 h ahead of the receipt is kept (a local time labelled UTC, a drifting clock)
        (FIXED_NOW + dt.timedelta(hours=23), None, "2026-11-27T11:00:05Z"),
        # an old event is kept however old, down to the first instant of year 1 in UTC
        (dt.datetime(1, 1, 1, 23, 59, tzinfo=AHEAD), None, "0001-01-01T23:59:00+23:59"),
        (MIN, None, "0001-01-01T00:00:00Z"),
        (dt.datetime(1, 1, 1, tzinfo=BEHIND), None, "0001-01-01T00:00:00-23:59"),
        # a client clock far off in either direction, consistently: the correction works
        (
            dt.datetime(9999, 12, 31, 23, 59, 50, tzinfo=dt.UTC),
            "9999-12-31T23:59:59Z",
            "2026-11-26T11:59:56Z",
        ),
        (dt.datetime(1, 1, 1, tzinfo=dt.UTC), "0001-01-01T00:00:09Z", "2026-11-26T11:59:56Z"),
        (
            dt.datetime(9999, 12, 31, 23, 59, 50, tzinfo=BEHIND),
            "9999-12-31T23:59:59-23:59",
            "2026-11-25T12:00:56-23:59",  # 11:59:56Z, written in the offset as sent
        ),
    ],
)
def test_times_at_the_range_ends_that_make_sense_are_kept(
    occurred_at: dt.datetime, sent_at: str | None, expected: str
) -> None:
    event = wire_event()
    event.occurred_at = occurred_at
    enrich([event], received_at=FIXED_NOW, sent_at=sent_at)
    assert written(event)["timestamp"] == expected


# --- client IP --------------------------------------------------------------------------------


ZONES = [dt.UTC, AHEAD, BEHIND, dt.timezone(dt.timedelta(hours=5, minutes=30))]
TICK = dt.timedelta(microseconds=1)


def latest_kept(received_at: dt.datetime) -> dt.datetime:
    try:
        return received_at + dt.timedelta(hours=23)
    except OverflowError:
        return MAX


def near_the_bounds(received_at: dt.datetime) -> list[dt.datetime]:
    """Each bound and one microsecond either side, on every zone's clock that can hold it."""
    latest = latest_kept(received_at)
    moments = []
    for zone in ZONES:
        for instant in (MIN, latest):
            for step in (-TICK, dt.timedelta(0), TICK):
                with contextlib.suppress(OverflowError):
                    moments.append((instant + step).astimezone(zone))
        moments += [dt.datetime.min.replace(tzinfo=zone), dt.datetime.max.replace(tzinfo=zone)]
    return moments


@pytest.mark.parametrize(
    "received_at", [FIXED_NOW, dt.datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=dt.UTC)]
)
def test_the_range_check_is_exact_on_every_offset_in_a_mixed_batch(
    received_at: dt.datetime,
) -> None:
    """The hot path compares on each event's own clock; it must agree with the plain UTC
    compare at every bound, whatever offsets a batch mixes (zones change from event to event)."""
    moments = near_the_bounds(received_at)
    events = []
    for moment in moments:
        event = wire_event()
        event.occurred_at = moment
        events.append(event)
    enrich(events, received_at=received_at)
    latest = latest_kept(received_at)
    for moment, event in zip(moments, events, strict=True):
        kept = MIN <= moment <= latest  # the plain compare: converts each to UTC
        assert event.timestamp == (moment if kept else received_at), moment.isoformat()


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("203.0.113.77", "203.0.113.0"),
        ("2001:db8:abcd:12:34::1", "2001:db8:abcd::"),
    ],
)
def test_anonymise_keeps_the_network_part(address: str, expected: str) -> None:
    assert str(anonymize(ipaddress.ip_address(address))) == expected


def test_direct_client_forwarded_for_is_ignored() -> None:
    clients = ClientIdentifier(parse_networks("10.0.0.0/8"), anonymize=False)
    context = clients.context("198.51.100.9", ["1.2.3.4"], "agent/1")
    assert context == RequestContext("198.51.100.9", "agent/1")


def test_no_trusted_proxies_means_the_socket_peer() -> None:
    clients = ClientIdentifier(anonymize=False)
    assert clients.context("10.1.2.3", ["1.2.3.4"]).ip == "10.1.2.3"


def test_trusted_proxy_takes_the_rightmost_untrusted_hop() -> None:
    clients = ClientIdentifier(parse_networks("10.0.0.0/8, 192.168.1.7"), anonymize=False)
    # spoofed left-most entry, then the real client, then our own second proxy
    headers = ["6.6.6.6, 198.51.100.9", "192.168.1.7"]
    assert clients.context("10.0.0.2", headers).ip == "198.51.100.9"


def test_trusted_proxy_chain_of_only_proxies_gives_the_leftmost() -> None:
    clients = ClientIdentifier(parse_networks("10.0.0.0/8"), anonymize=False)
    assert clients.context("10.0.0.2", ["10.0.0.5, 10.0.0.3"]).ip == "10.0.0.5"


def test_unparsable_hop_stops_at_the_last_address_we_can_vouch_for() -> None:
    clients = ClientIdentifier(parse_networks("10.0.0.0/8"), anonymize=False)
    assert clients.context("10.0.0.2", ["198.51.100.9, garbage, 10.0.0.3"]).ip == "10.0.0.3"
    assert clients.context("10.0.0.2", []).ip == "10.0.0.2"


def test_ipv4_mapped_peer_is_an_ipv4_client() -> None:
    clients = ClientIdentifier()
    assert clients.context("::ffff:203.0.113.77").ip == "203.0.113.0"


def test_unknown_peer_gives_no_ip() -> None:
    assert ClientIdentifier().context(None, ["1.2.3.4"], None) == RequestContext(None, None)


def test_bad_trusted_proxies_setting_names_the_variable() -> None:
    with pytest.raises(SettingsError, match=r"CAPTURE_TRUSTED_PROXIES.*`10\.0\.0\.300`"):
        load_settings({"CAPTURE_TRUSTED_PROXIES": "10.0.0.1, 10.0.0.300"})


def test_ip_anonymize_can_be_turned_off_from_the_environment() -> None:
    assert load_settings({"CAPTURE_IP_ANONYMIZE": "false"}).ip_anonymize is False
    assert load_settings({}).ip_anonymize is True


# --- through the HTTP edge --------------------------------------------------------------------


async def post_one(client: HttpClient, event: dict[str, Any], **headers: str) -> None:
    body = msgspec.json.encode({"sent_at": "2026-11-26T12:00:01Z", "batch": [event]})
    response = await client.post("/v1/batch", data=body, headers={**JSON, **headers})
    payload = msgspec.json.decode(await response.read())
    assert (response.status, payload["accepted"]) == (200, 1), payload


async def collector_with(
    memory_sink: MemorySink, schemas: SchemaRegistry, **settings: Any
) -> HttpClient:
    return await start_collector(Settings(sink="memory", **settings), memory_sink, schemas)


async def test_records_carry_skew_corrected_time_ip_and_agent(
    collector: HttpClient, memory_sink: MemorySink
) -> None:
    await post_one(collector, track_played(), **{"User-Agent": "capture-sdk-python/0.1"})
    value = msgspec.json.decode(memory_sink.records[0].value)
    assert value["occurred_at"] == "2026-11-26T12:00:00.123000Z"
    assert value["timestamp"] == "2026-11-26T12:00:04.123000Z"  # +4 s: 12:00:05 - 12:00:01
    assert value["sent_at"] == "2026-11-26T12:00:01Z"
    assert value["ip"] == "127.0.0.0"  # the loopback peer, anonymised by default
    assert value["user_agent"] == "capture-sdk-python/0.1"


async def test_client_values_for_server_owned_fields_are_overwritten(
    collector: HttpClient, memory_sink: MemorySink
) -> None:
    event = track_played(
        received_at="1999-01-01T00:00:00Z",
        timestamp={"not": "a time"},  # any JSON: it must not fail the event, only be replaced
        sent_at="1999-01-01T00:00:00Z",
        ip="8.8.8.8",
        user_agent="forged",
    )
    await post_one(collector, event, **{"User-Agent": "real/1"})
    value = msgspec.json.decode(memory_sink.records[0].value)
    assert value["received_at"] == "2026-11-26T12:00:05Z"
    assert value["timestamp"] == "2026-11-26T12:00:04.123000Z"
    assert value["sent_at"] == "2026-11-26T12:00:01Z"  # the batch's, not the event's
    assert value["ip"] == "127.0.0.0"
    assert value["user_agent"] == "real/1"


async def test_no_user_agent_header_writes_null_even_if_the_client_sent_one(
    collector: HttpClient, memory_sink: MemorySink
) -> None:
    # aiohttp's client adds its own User-Agent unless told to skip it
    body = msgspec.json.encode({"batch": [track_played(user_agent="forged")]})
    response = await collector.post(
        "/v1/batch", data=body, headers=JSON, skip_auto_headers=["User-Agent"]
    )
    assert response.status == 200
    value = msgspec.json.decode(memory_sink.records[0].value)
    assert value["user_agent"] is None
    assert value["sent_at"] is None  # no sent_at in the batch: no correction
    assert value["timestamp"] == value["occurred_at"]


async def test_forwarded_for_from_a_trusted_proxy_gives_the_client_ip(
    memory_sink: MemorySink, schemas: SchemaRegistry
) -> None:
    client = await collector_with(
        memory_sink, schemas, trusted_proxies="127.0.0.1", ip_anonymize=False
    )
    try:
        await post_one(client, track_played(), **{"X-Forwarded-For": "6.6.6.6, 198.51.100.9"})
    finally:
        await client.close()
    assert msgspec.json.decode(memory_sink.records[0].value)["ip"] == "198.51.100.9"


async def test_forwarded_for_from_an_untrusted_peer_is_ignored(
    collector: HttpClient, memory_sink: MemorySink
) -> None:
    await post_one(collector, track_played(), **{"X-Forwarded-For": "198.51.100.9"})
    assert msgspec.json.decode(memory_sink.records[0].value)["ip"] == "127.0.0.0"


@pytest.mark.parametrize("sent_at", ["0001-01-01T00:00:00Z", "9999-12-31T23:59:59Z"])
async def test_range_end_times_over_http_are_accepted_with_the_receive_time(
    collector: HttpClient, memory_sink: MemorySink, sent_at: str
) -> None:
    events = [track_played(), track_played(occurred_at="9999-12-31T23:59:59Z")]
    body = msgspec.json.encode({"sent_at": sent_at, "batch": events})
    response = await collector.post("/v1/batch", data=body, headers=JSON)
    assert response.status == 200, await response.text()
    values = [msgspec.json.decode(r.value) for r in memory_sink.records]
    assert [v["timestamp"] for v in values] == ["2026-11-26T12:00:05Z"] * 2
    assert [v["sent_at"] for v in values] == [sent_at] * 2  # kept as sent


@pytest.mark.parametrize(
    ("timestamp", "sent_at"),
    [
        ("9999-12-31T23:59:59Z", "2026-11-26T12:00:01Z"),
        ("2026-11-26T12:00:00Z", "9999-12-31T23:59:59Z"),
        ("2026-11-26T12:00:00Z", "0001-01-01T00:00:00Z"),
        ("0001-01-01T00:00:00+23:59", "2026-11-26T12:00:01Z"),
    ],
)
async def test_range_end_times_through_segment_are_accepted_with_the_receive_time(
    collector: HttpClient, memory_sink: MemorySink, timestamp: str, sent_at: str
) -> None:
    message = {
        "type": "track",
        "event": "Track Played",
        "userId": "u-1",
        "timestamp": timestamp,
        "properties": {"track_id": "t-1", "artist_id": "a-1", "position_ms": 1},
    }
    body = msgspec.json.encode({"batch": [message], "sentAt": sent_at})
    response = await collector.post("/compat/segment/v1/batch", data=body, headers=JSON)
    assert response.status == 200, await response.text()
    (record,) = memory_sink.records
    assert msgspec.json.decode(record.value)["timestamp"] == "2026-11-26T12:00:05Z"


@pytest.mark.parametrize("sent_at", [12345, True, [], {}])
async def test_a_native_sent_at_that_is_not_a_string_refuses_the_request(
    collector: HttpClient, memory_sink: MemorySink, sent_at: Any
) -> None:
    # as docs/architecture.md says: only a string (or null) is a sent_at at all
    body = msgspec.json.encode({"sent_at": sent_at, "batch": [track_played()]})
    response = await collector.post("/v1/batch", data=body, headers=JSON)
    assert response.status == 400
    assert (await response.json())["error"] == "invalid_envelope"
    assert memory_sink.records == []


async def test_a_native_sent_at_string_that_is_no_time_is_ignored(
    collector: HttpClient, memory_sink: MemorySink
) -> None:
    body = msgspec.json.encode({"sent_at": "yesterday", "batch": [track_played()]})
    response = await collector.post("/v1/batch", data=body, headers=JSON)
    assert response.status == 200
    value = msgspec.json.decode(memory_sink.records[0].value)
    assert value["timestamp"] == value["occurred_at"]  # not corrected
    assert value["sent_at"] is None
