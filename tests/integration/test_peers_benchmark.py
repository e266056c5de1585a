"""benchmarks/peers.py: the stand-in sink counts every SDK's events from its bodies, and the
comparison run checks delivered == tracked per SDK, over loopback, with all four real SDKs."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from benchmarks import peers
from benchmarks.sdk import Call


def test_the_sink_counts_the_events_in_each_sdks_body() -> None:
    ours = gzip.compress(b'{"sent_at":"t","batch":[{"event":"a"},{"event":"b"}]}')
    segment = json.dumps({"batch": [{"type": "track"}] * 3, "writeKey": "k"}).encode()
    posthog = json.dumps({"api_key": "k", "batch": [{"event": "e"}] * 4}).encode()
    snowplow = json.dumps({"schema": "iglu:payload_data", "data": [{"e": "ue"}] * 5}).encode()
    assert peers.count_events(ours, gzipped=True) == 2
    assert peers.count_events(segment, gzipped=False) == 3
    assert peers.count_events(posthog, gzipped=False) == 4
    assert peers.count_events(snowplow, gzipped=False) == 5
    with pytest.raises(ValueError, match="not a batch"):
        peers.count_events(b"[1,2]", gzipped=False)


def test_every_sdk_delivers_every_event_to_the_sink(tmp_path: Path) -> None:
    result = peers.run(events=300, work_dir=tmp_path)
    assert set(result["sdks"]) == set(peers.SDKS)
    for name, row in result["sdks"].items():
        assert row["flushed"], name
        assert row["delivered"] == 300, (name, row)
        assert row["delivered_all"], name
        assert row["sdk_failures"] == 0, name
        assert row["requests"] >= 1, name
        assert 0 < row["track_median_us"] <= row["track_p99_us"], name
    # Snowplow's default batch is 10 events; Segment's and PostHog's 100, ours 500
    assert result["sdks"]["snowplow"]["requests"] >= 30
    assert result["sdks"]["capture_sdk_batch100"]["requests"] >= 3
    assert result["sdks"]["capture_sdk"]["requests"] >= 1
    for key in ("ratios_ours_over_peer", "ratios_ours_batch100_over_peer"):
        assert set(result[key]) == {"segment", "posthog", "snowplow"}


class _Lossy(peers.Ours):
    """Our SDK, but every third event is never tracked: the sink must see the shortfall."""

    name = "capture_sdk"

    def __init__(self, url: str, events: int) -> None:
        super().__init__(url, events)
        self.seen = 0

    def track(self, call: Call) -> None:
        self.seen += 1
        if self.seen % 3:
            super().track(call)


def test_a_shortfall_at_the_sink_is_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(peers.SDKS, "capture_sdk", _Lossy)
    result = peers.run(events=90, work_dir=tmp_path, sdks=("capture_sdk",))
    row = result["sdks"]["capture_sdk"]
    assert row["flushed"]
    assert (row["delivered"], row["delivered_all"]) == (60, False)
