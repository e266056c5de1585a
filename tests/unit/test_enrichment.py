"""Enrichment: clock-skew correction, client IP (trusted proxies, anonymised), user agent.

Pure stage tests call `enrich` and `ClientIdentifier` directly; the HTTP tests drive the real
handler so that what a record holds is what the collector writes.
"""

from __future__ import annotations

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


# --- client IP --------------------------------------------------------------------------------


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
