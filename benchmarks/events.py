"""Realistic mixed events of the bundled tracking plan, for every benchmark to share.

Builds request bodies only; never sends anything.
"""

from __future__ import annotations

import random
import uuid
from typing import Any

import msgspec

CONTEXT = {
    "library": {"name": "capture-sdk-python", "version": "0.1.0"},
    "runtime": {"name": "cpython", "version": "3.11.7"},
}
SOURCES = ["album", "playlist", "radio", "search", "artist_page"]


def mixed_event(i: int, rng: random.Random) -> dict[str, Any]:
    """Event i of a mix: track plays dominate, as they do in a music product."""
    base: dict[str, Any] = {
        "event_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        "occurred_at": "2026-11-26T12:00:00.123+00:00",
        "user_id": f"user-{rng.randrange(100_000)}",
        "context": CONTEXT,
    }
    kind = i % 10
    track = f"{rng.getrandbits(64):016x}{rng.getrandbits(32):06x}"
    if kind < 4:
        props = {
            "track_id": track,
            "artist_id": f"artist-{rng.randrange(5000)}",
            "position_ms": rng.randrange(400_000),
            "duration_ms": 240_000,
            "source": rng.choice(SOURCES),
        }
        return {"event": "track_played", "version": 1, **base, "properties": props}
    if kind < 6:
        props = {
            "track_id": track,
            "artist_id": f"artist-{rng.randrange(5000)}",
            "position_ms": rng.randrange(400_000),
            "shuffle": rng.random() < 0.5,
        }
        return {"event": "track_played", "version": 2, **base, "properties": props}
    if kind < 8:
        props = {
            "path": f"/artist/{rng.randrange(5000)}/audience",
            "title": "Audience",
            "referrer": None,
        }
        return {"event": "page_viewed", "version": 1, **base, "properties": props}
    if kind < 9:
        props = {
            "artist_id": f"artist-{rng.randrange(5000)}",
            "section": "audience",
            "range_days": 28,
        }
        return {"event": "artist_profile_viewed", "version": 1, **base, "properties": props}
    tracks = [{"track_id": f"t{j}", "position": j, "added": True} for j in range(5)]
    props = {
        "playlist_id": f"pl-{rng.randrange(1000)}",
        "snapshot_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        "owner": {"user_id": "curator-3", "display_name": "Curator"},
        "tracks": tracks,
    }
    return {"event": "playlist_updated", "version": 1, **base, "properties": props}


def mixed_batch(size: int, seed: int, *, invalid_every: int = 0) -> list[dict[str, Any]]:
    """`size` events; with `invalid_every` = n, every n-th event breaks its schema."""
    rng = random.Random(seed)
    events = [mixed_event(i, rng) for i in range(size)]
    if invalid_every:
        for event in events[invalid_every - 1 :: invalid_every]:
            event["properties"] = {**event["properties"], "unexpected": 1}
    return events


def batch_body(events: list[dict[str, Any]]) -> bytes:
    return msgspec.json.encode({"sent_at": "2026-11-26T12:00:01.000Z", "batch": events})
