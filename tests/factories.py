"""Test data: events in the wire format, valid by default, with overrides per test."""

from __future__ import annotations

import gzip
import uuid
from typing import Any

import msgspec


def track_played(**overrides: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "event": "track_played",
        "version": 1,
        "event_id": str(uuid.uuid4()),
        "occurred_at": "2026-11-26T12:00:00.123Z",
        "user_id": "u-42",
        "properties": {"track_id": "t-1", "artist_id": "a-1", "position_ms": 1200},
    }
    event.update(overrides)
    return event


def page_viewed(**overrides: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "event": "page_viewed",
        "version": 1,
        "event_id": str(uuid.uuid4()),
        "occurred_at": "2026-11-26T12:00:00Z",
        "anonymous_id": "anon-1",
        "properties": {"path": "/artist/a-1"},
    }
    event.update(overrides)
    return event


def batch_body(*events: dict[str, Any], compress: bool = False) -> bytes:
    body = msgspec.json.encode({"sent_at": "2026-11-26T12:00:01Z", "batch": list(events)})
    return gzip.compress(body) if compress else body
