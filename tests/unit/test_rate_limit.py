"""Per-key token buckets: a flood from one key gets 429 + Retry-After, other keys go on."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import msgspec

from collector.ratelimit import RateLimiter, TokenBucket
from collector.sinks import MemorySink
from collector.sources import build_sources, key_digest
from event_schemas import SchemaRegistry
from tests.conftest import FIXED_NOW
from tests.factories import batch_body, track_played
from tests.unit.test_auth import start_with_config

NOISY_KEY = "sk_noisy_0123456789abcdef"
QUIET_KEY = "sk_quiet_0123456789abcdef"
TOML = f"""
[[sources]]
name = "noisy"
kind = "server"
key = "{NOISY_KEY}"
events = "*"
rate_limit_per_s = 0.5
burst = 3

[[sources]]
name = "quiet"
kind = "server"
key = "{QUIET_KEY}"
events = "*"
rate_limit_per_s = 0.5
burst = 3
"""


def test_bucket_allows_a_burst_then_refills_at_its_rate() -> None:
    bucket = TokenBucket(rate_per_s=2.0, burst=3, now_s=100.0)
    assert [bucket.take(100.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take(100.0) == 0.5  # one token comes back after 1 / rate
    assert bucket.take(100.5) == 0.0
    assert bucket.take(100.5) > 0.0
    # a long pause refills up to the burst, not beyond it
    assert [bucket.take(1000.0) for _ in range(4)][-1] > 0.0


def test_bucket_survives_a_clock_that_steps_back() -> None:
    bucket = TokenBucket(rate_per_s=1.0, burst=1, now_s=100.0)
    assert bucket.take(100.0) == 0.0
    assert bucket.take(50.0) > 0.0  # no refill, and no negative elapsed time
    assert bucket.take(101.0) == 0.0


def test_limiter_keeps_one_bucket_per_key_on_the_injected_clock() -> None:
    now_s = [0.0]
    sources = build_sources(msgspec.toml.decode(TOML), path="x.toml", environ={})
    limiter = RateLimiter(sources, lambda: now_s[0])
    noisy, quiet = key_digest(NOISY_KEY), key_digest(QUIET_KEY)
    assert [limiter.wait_s(noisy) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.wait_s(noisy) == 2.0
    assert limiter.wait_s(quiet) == 0.0
    now_s[0] = 2.0
    assert limiter.wait_s(noisy) == 0.0
    assert limiter.wait_s(key_digest("sk_unknown_0123456789abcdef")) == 0.0


async def test_flood_from_one_key_is_429_while_another_key_is_served(
    tmp_path: Path, memory_sink: MemorySink, schemas: SchemaRegistry
) -> None:
    now = [FIXED_NOW]
    client = await start_with_config(tmp_path, TOML, memory_sink, schemas, clock=lambda: now[0])
    try:

        async def send(key: str) -> tuple[int, dict[str, str], bytes]:
            headers = {"Content-Type": "application/json", "Authorization": f"Bearer {key}"}
            response = await client.post(
                "/v1/batch", data=batch_body(track_played()), headers=headers
            )
            return response.status, dict(response.headers), await response.read()

        statuses = [(await send(NOISY_KEY))[0] for _ in range(10)]
        assert statuses == [200, 200, 200] + [429] * 7
        status, headers, raw = await send(NOISY_KEY)
        assert status == 429
        assert msgspec.json.decode(raw)["error"] == "rate_limited"
        assert headers["Retry-After"] == "2"
        assert NOISY_KEY.encode() not in raw
        assert (await send(QUIET_KEY))[0] == 200
        assert len(memory_sink.records) == 4  # nothing from the refused requests
        now[0] = FIXED_NOW + dt.timedelta(seconds=2)  # one token back
        assert (await send(NOISY_KEY))[0] == 200
        metrics = await (await client.get("/metrics")).text()
        assert 'capture_source_refusals_total{reason="rate_limited",source="noisy"} 8.0' in (
            metrics
        )
    finally:
        await client.close()
