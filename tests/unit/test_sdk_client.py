"""What only the thread-based `Client` has: its retry policy object and recording transport.

The behaviour both clients share (batching, retries, drops, bounded shutdown) is tested once
for both in test_sdk_behaviour.py.
"""

from __future__ import annotations

import gzip

from capture_sdk import RetryPolicy
from capture_sdk.testing import RecordingTransport


def test_retry_policy_honours_retry_after_as_a_floor_with_a_cap() -> None:
    policy = RetryPolicy(backoff_base_s=0.1, backoff_cap_s=1.0, retry_after_cap_s=5.0)
    for attempt in range(1, 10):
        assert 0 <= policy.delay_s(attempt) <= min(1.0, 0.1 * 2 ** (attempt - 1))
        assert policy.delay_s(attempt, retry_after_s=3.0) >= 3.0
        assert policy.delay_s(attempt, retry_after_s=3600) <= 5.0


def test_recording_transport_decodes_gzip() -> None:
    transport = RecordingTransport()
    body = gzip.compress(b'{"batch": [{"event": "x"}]}')
    response = transport.send(body, {"Content-Encoding": "gzip"})
    assert response.status == 200
    assert transport.events == [{"event": "x"}]
