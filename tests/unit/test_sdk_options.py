"""Issue #6 options, on both clients: batching by bytes, `too_large`, `disabled`, sampling."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import msgspec
import pytest

from capture_sdk import AsyncClient, Client, ClientStats, ConfigurationError, DroppedEvent
from capture_sdk._intake import is_sampled_in, sample_thresholds
from capture_sdk.testing import AsyncRecordingTransport, RecordingTransport

Kind = Literal["thread", "async"]
KINDS = pytest.mark.parametrize("kind", ["thread", "async"])
Tracking = Callable[[Client | AsyncClient], None]


class Run(msgspec.Struct):
    stats: ClientStats
    batches: list[list[dict[str, Any]]]
    dropped: list[DroppedEvent]

    @property
    def events(self) -> list[dict[str, Any]]:
        return [event for batch in self.batches for event in batch]


def run(kind: Kind, track: Tracking, **options: Any) -> Run:
    """Make a client of `kind` on a recording transport, let `track` use it, shut it down."""
    dropped: list[DroppedEvent] = []
    if kind == "thread":
        transport = RecordingTransport()
        client = Client(transport=transport, on_error=dropped.extend, **options)
        track(client)
        assert client.shutdown(10)
        return Run(client.stats(), transport.batches, dropped)
    async_transport = AsyncRecordingTransport()

    async def main() -> ClientStats:
        client = AsyncClient(transport=async_transport, on_error=dropped.extend, **options)
        track(client)
        assert await client.shutdown(10)
        return client.stats()

    return Run(asyncio.run(main()), async_transport.batches, dropped)


def pages(count: int, path_bytes: int = 10) -> Tracking:
    def track(client: Client | AsyncClient) -> None:
        for i in range(count):
            client.track("page_viewed", {"path": f"/{i:0{path_bytes}d}"}, anonymous_id="a")

    return track


# --- batching by bytes ----------------------------------------------------------------------


@KINDS
def test_a_batch_closes_early_at_max_batch_bytes(kind: Kind) -> None:
    result = run(kind, pages(40, path_bytes=200), max_batch_bytes=2_000, flush_interval_s=60)
    assert [e["properties"]["path"] for e in result.events] == [f"/{i:0200d}" for i in range(40)]
    assert len(result.batches) >= 40 * 400 // 2_000  # each event's JSON is over 400 bytes
    for batch in result.batches:
        joined = b",".join(msgspec.json.encode(event) for event in batch)
        assert len(joined) <= 2_000
    assert result.stats.sent == 40


@KINDS
def test_an_event_over_max_event_bytes_is_dropped_as_too_large(kind: Kind) -> None:
    ids: list[str] = []

    def track(client: Client | AsyncClient) -> None:
        ids.append(client.track("page_viewed", {"path": "/small"}, anonymous_id="a"))
        ids.append(client.track("page_viewed", {"path": "/" + "x" * 2_000}, anonymous_id="a"))
        ids.append(client.track("page_viewed", {"path": "/small2"}, anonymous_id="a"))

    result = run(kind, track, max_event_bytes=1_000)
    assert [e["event_id"] for e in result.events] == [ids[0], ids[2]]
    assert result.stats.dropped["too_large"] == 1
    assert [(d.event_id, d.reason) for d in result.dropped] == [(ids[1], "too_large")]
    assert "max_event_bytes=1000" in result.dropped[0].detail


@KINDS
def test_with_the_spool_a_too_large_event_is_dropped_at_track_and_never_spooled(
    kind: Kind, tmp_path: Path
) -> None:
    seen: dict[str, int] = {}

    def track(client: Client | AsyncClient) -> None:
        client.track("page_viewed", {"path": "/" + "y" * 2_000}, anonymous_id="a")
        client.track("page_viewed", {"path": "/fits"}, anonymous_id="a")
        # counted before anything was sent: the caller's thread knew the size
        seen["too_large"] = client.stats().dropped["too_large"]
        on_disk = b"".join(p.read_bytes() for p in tmp_path.glob("*.seg"))
        seen["spooled_big"] = on_disk.count(b"yyyy")
        seen["spooled_small"] = on_disk.count(b"/fits")

    result = run(kind, track, max_event_bytes=1_000, spool_dir=tmp_path, flush_interval_s=60)
    assert seen == {"too_large": 1, "spooled_big": 0, "spooled_small": 1}
    assert [e["properties"]["path"] for e in result.events] == ["/fits"]


@KINDS
def test_an_event_over_max_batch_bytes_but_within_max_event_bytes_goes_alone(kind: Kind) -> None:
    def track(client: Client | AsyncClient) -> None:
        client.track("page_viewed", {"path": "/a"}, anonymous_id="a")
        client.track("page_viewed", {"path": "/" + "z" * 3_000}, anonymous_id="a")
        client.track("page_viewed", {"path": "/b"}, anonymous_id="a")

    result = run(kind, track, max_batch_bytes=1_000, flush_interval_s=60)
    sizes = [len(batch) for batch in result.batches]
    assert sizes == [1, 1, 1]
    assert result.stats.sent == 3


@pytest.mark.parametrize("cls", [Client, AsyncClient])
@pytest.mark.parametrize("option", ["max_batch_bytes", "max_event_bytes"])
def test_byte_limits_must_be_positive(cls: type[Client | AsyncClient], option: str) -> None:
    options: dict[str, Any] = {option: 0}
    with pytest.raises(ConfigurationError, match=option):
        cls("http://127.0.0.1:1", **options)


# --- disabled -------------------------------------------------------------------------------


def test_a_disabled_client_starts_nothing_queues_nothing_and_counts_nothing(
    tmp_path: Path,
) -> None:
    threads_before = set(threading.enumerate())
    transport = RecordingTransport()
    spool_dir = tmp_path / "spool"
    client = Client(transport=transport, spool_dir=spool_dir, disabled=True)
    assert client.track("page_viewed", {"path": "/"}, anonymous_id="a") == ""
    assert set(threading.enumerate()) == threads_before  # no worker thread
    assert client.flush(1)
    assert client.shutdown(1)
    assert transport.attempts == 0
    assert not spool_dir.exists()
    assert client.stats() == ClientStats(
        enqueued=0, sent=0, rejected=0, retried=0, dropped=client.stats().dropped, queue_depth=0
    )
    assert set(client.stats().dropped.values()) == {0}


async def test_a_disabled_async_client_starts_no_task_and_counts_nothing(tmp_path: Path) -> None:
    tasks_before = asyncio.all_tasks()
    transport = AsyncRecordingTransport()
    spool_dir = tmp_path / "spool"
    async with AsyncClient(transport=transport, spool_dir=spool_dir, disabled=True) as client:
        assert client.track("page_viewed", {"path": "/"}, anonymous_id="a") == ""
        assert asyncio.all_tasks() == tasks_before
        assert await client.flush(1)
    assert transport.attempts == 0
    assert not spool_dir.exists()
    stats = client.stats()
    assert (stats.enqueued, stats.sent, stats.queue_depth, stats.sampled_out) == (0, 0, 0, 0)
    assert set(stats.dropped.values()) == {0}


# --- sampling -------------------------------------------------------------------------------


@KINDS
def test_sampling_keeps_a_deterministic_share_by_event_id_and_counts_the_rest(
    kind: Kind,
) -> None:
    ids: list[str] = []

    def track(client: Client | AsyncClient) -> None:
        for i in range(2_000):
            ids.append(client.track("page_viewed", {"path": f"/{i}"}, anonymous_id="a"))
        for i in range(50):
            client.track("signed_up", {"plan": "free"}, user_id=f"u{i}")

    result = run(kind, track, sample_rates={"page_viewed": 0.25, "signed_up": 1.0})
    threshold = sample_thresholds({"page_viewed": 0.25})["page_viewed"]
    expected = [event_id for event_id in ids if is_sampled_in(event_id, threshold)]
    sent_pages = [e["event_id"] for e in result.events if e["event"] == "page_viewed"]
    assert sent_pages == expected  # exactly the ids the rule keeps, in order
    assert 350 < len(expected) < 650  # about a quarter (binomial, sd ~19)
    assert sum(e["event"] == "signed_up" for e in result.events) == 50
    assert result.stats.sampled_out == 2_000 - len(expected)
    assert result.stats.enqueued == len(expected) + 50
    assert result.dropped == []  # sampled out is not a drop
    assert set(result.stats.dropped.values()) == {0}


def test_the_sampling_rule_is_stable_and_exact_at_the_ends() -> None:
    assert sample_thresholds({"a": 1.0, "b": 0.0}) == {"b": 0}
    event_id = "0190f1d2-3c4b-7d5e-8f60-123456789abc"
    half = sample_thresholds({"x": 0.5})["x"]
    assert is_sampled_in(event_id, half) is (0x123456789ABC < 1 << 47)
    assert not is_sampled_in("0190f1d2-3c4b-7d5e-8f60-000000000000", 0)


@pytest.mark.parametrize("rate", [-0.1, 1.5, "0.5", True])
def test_a_sample_rate_outside_0_1_is_a_configuration_error(rate: object) -> None:
    with pytest.raises(ConfigurationError, match="sample_rates"):
        Client("http://127.0.0.1:1", sample_rates={"page_viewed": rate})  # type: ignore[dict-item]
