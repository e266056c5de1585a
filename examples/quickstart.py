"""Quick-start demo: track a few events through the SDK and show where the collector put them.

Run against a collector on the file sink (`make run` starts one):
    python examples/quickstart.py --endpoint http://127.0.0.1:8080 --data-dir data
"""

from __future__ import annotations

import argparse
import uuid
from collections.abc import Sequence
from pathlib import Path

from capture_sdk import Client, DroppedEvent


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--endpoint", default="http://127.0.0.1:8080")
    parser.add_argument("--data-dir", default="data", help="the collector's file-sink directory")
    args = parser.parse_args(argv)

    dropped: list[DroppedEvent] = []
    client = Client(args.endpoint, on_error=dropped.extend, flush_interval_s=0.2)
    user = "listener-42"
    client.track(
        "track_played",
        {"track_id": "7ouMYWpwJ422jRcDASZB7P", "artist_id": "a-1", "position_ms": 183_000},
        version=1,
        user_id=user,
    )
    client.track(
        "track_played",
        {
            "track_id": "4iV5W9uYEdYUVa79Axb7Rh",
            "artist_id": "a-1",
            "position_ms": 5_200,
            "shuffle": True,
        },
        version=2,
        user_id=user,
    )
    client.track(
        "page_viewed", {"path": "/artist/a-1/audience", "title": "Audience"}, anonymous_id="anon-7"
    )
    client.track(
        "artist_profile_viewed",
        {"artist_id": "a-1", "section": "audience", "range_days": 28},
        user_id="artist-a-1",
    )
    client.track(
        "playlist_updated",
        {
            "playlist_id": "pl-1",
            "snapshot_id": str(uuid.uuid4()),
            "owner": {"user_id": "curator-3", "display_name": "Curator"},
            "tracks": [{"track_id": "7ouMYWpwJ422jRcDASZB7P", "position": 0, "added": True}],
        },
        user_id="curator-3",
    )
    # Invalid on purpose: a negative position. The collector dead-letters it with the reason.
    client.track(
        "track_played", {"track_id": "x", "artist_id": "a-1", "position_ms": -5}, user_id=user
    )
    delivered = client.shutdown(timeout_s=15)

    stats = client.stats()
    counts = f"enqueued={stats.enqueued} sent={stats.sent} rejected={stats.rejected}"
    print(f"sdk: {counts} flushed={delivered}")
    for event in dropped:
        errors = "; ".join(f"{e.path}: {e.message}" for e in event.errors)
        name = f"{event.event} v{event.version} {event.event_id}"
        print(f"sdk: {name} {event.reason}: {errors or event.detail}")
    data_dir = Path(args.data_dir)
    print(f"collector file sink ({data_dir.resolve()}):")
    for log_file in sorted(data_dir.glob("*.jsonl")):
        lines = log_file.read_bytes().count(b"\n")
        print(f"  {log_file.name:<40} {lines:>6} record(s)")
    return 0 if delivered and stats.sent == 5 else 1


if __name__ == "__main__":
    raise SystemExit(main())
