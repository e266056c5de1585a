"""Routing is pure: records, keys and headers from validated events."""

from __future__ import annotations

import datetime as dt
import uuid

import msgspec
import pytest

from collector.enrichment import enrich
from collector.model import WireEvent
from collector.routing import RouteTable, Topics, route

NOW = dt.datetime(2026, 11, 26, 12, 0, 5, tzinfo=dt.UTC)


def event(
    name: str, version: int, user_id: str | None = None, anonymous_id: str | None = None
) -> WireEvent:
    return WireEvent(
        event=name,
        version=version,
        event_id=uuid.uuid4(),
        occurred_at=NOW,
        properties=msgspec.Raw(b'{"a":1}'),
        user_id=user_id,
        anonymous_id=anonymous_id,
    )


@pytest.mark.parametrize(("name", "version"), [("a", 1), ("track_played", 12), ("x" * 64, 9999)])
def test_event_id_header_matches_the_value(name: str, version: int) -> None:
    events = [event(name, version, user_id="u"), event(name, version, anonymous_id="a")]
    enrich(events, received_at=NOW)
    records = route(events, [], table=RouteTable(Topics(prefix="p.")), received_at=NOW)
    for source, record in zip(events, records, strict=True):
        headers = dict(record.headers)
        value = msgspec.json.decode(record.value)
        assert headers["event_id"] == str(source.event_id).encode() == value["event_id"].encode()
        assert headers["version"] == str(version).encode()
        assert record.topic == f"p.{name}"
        assert value["received_at"] == "2026-11-26T12:00:05Z"
        assert record.timestamp_ms == int(NOW.timestamp() * 1000)
    assert [r.key for r in records] == [b"u", b"a"]
