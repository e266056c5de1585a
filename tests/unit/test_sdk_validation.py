"""Local validation in the SDK: strict raises at track(), drop counts and never sends."""

from __future__ import annotations

import pytest

from capture_sdk import AsyncClient, Client, ConfigurationError, DroppedEvent, InvalidEventError
from capture_sdk.testing import AsyncRecordingTransport, RecordingTransport
from event_schemas.typed import TrackPlayedV2

GOOD = {"track_id": "t", "artist_id": "a", "position_ms": 1}
BAD = {"track_id": "t", "artist_id": "a", "position_ms": -1}


def test_strict_raises_at_track_naming_the_field() -> None:
    client = Client(transport=RecordingTransport(), validation="strict")
    try:
        with pytest.raises(InvalidEventError, match=r"`\$\.properties\.position_ms`"):
            client.track("track_played", BAD, user_id="u")
        with pytest.raises(InvalidEventError, match="unknown event `nope`"):
            client.track("nope", {}, user_id="u")
        with pytest.raises(InvalidEventError, match="has no version 7"):
            client.track("track_played", GOOD, version=7, user_id="u")
        with pytest.raises(InvalidEventError, match="position_ms"):
            client.track(TrackPlayedV2(track_id="t", artist_id="a", position_ms=-5), user_id="u")
        client.track("track_played", GOOD, user_id="u")
        assert client.stats().enqueued == 1
    finally:
        client.shutdown(5)


def test_drop_counts_invalid_events_and_sends_the_rest() -> None:
    transport = RecordingTransport()
    dropped: list[DroppedEvent] = []
    client = Client(transport=transport, validation="drop", on_error=dropped.extend)
    bad = client.track("track_played", BAD, user_id="u")  # never raises in production mode
    good = client.track("track_played", GOOD, user_id="u")
    assert client.shutdown(5)
    assert [e["event_id"] for e in transport.events] == [good]
    assert [(d.event_id, d.reason) for d in dropped] == [(bad, "invalid")]
    assert "$.properties.position_ms" in dropped[0].detail
    assert client.stats().dropped["invalid"] == 1


def test_off_leaves_validation_to_the_collector() -> None:
    transport = RecordingTransport()
    client = Client(transport=transport)
    client.track("track_played", BAD, user_id="u")
    assert client.shutdown(5)
    assert len(transport.events) == 1


def test_unknown_mode_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="validation"):
        Client(transport=RecordingTransport(), validation="loose")  # type: ignore[arg-type]


async def test_async_client_validates_the_same_way() -> None:
    strict = AsyncClient(transport=AsyncRecordingTransport(), validation="strict")
    with pytest.raises(InvalidEventError, match="position_ms"):
        strict.track("track_played", BAD, user_id="u")
    await strict.shutdown(5)

    transport = AsyncRecordingTransport()
    dropped: list[DroppedEvent] = []
    client = AsyncClient(transport=transport, validation="drop", on_error=dropped.extend)
    client.track("track_played", BAD, user_id="u")
    good = client.track("track_played", GOOD, user_id="u")
    assert await client.shutdown(5)
    assert [e["event_id"] for e in transport.events] == [good]
    assert [d.reason for d in dropped] == ["invalid"]
