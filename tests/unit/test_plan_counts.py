"""Plan.count_events (collector/reload.py): one counter update per (name, version) of a
batch, labelled by the plan, with the labelled counters cached per plan and metrics only for
what the plan has, so a client's names cannot grow the cache."""

from __future__ import annotations

from typing import Any

import msgspec
from prometheus_client import CollectorRegistry

from collector.metrics import Metrics
from collector.model import WireEvent
from collector.reload import UNKNOWN_EVENT_LABEL, build_plan
from collector.settings import Settings
from event_schemas import load_registry
from tests.factories import page_viewed, track_played


def events(*docs: dict[str, Any]) -> list[WireEvent]:
    return [msgspec.json.decode(msgspec.json.encode(d), type=WireEvent) for d in docs]


def counted(metrics: Metrics, event: str, version: str, outcome: str) -> float | None:
    labels = {"event": event, "version": version, "outcome": outcome}
    return metrics.registry.get_sample_value("capture_events_total", labels)


def test_counts_by_name_and_version_labelled_by_the_plan() -> None:
    plan = build_plan(load_registry(), Settings())
    metrics = Metrics(CollectorRegistry())
    batch = events(
        track_played(),
        page_viewed(),
        track_played(version=2),
        track_played(),
        track_played(event="made_up"),
        track_played(version=99),
        track_played(event="also_made_up", version=7),
    )
    for _ in range(3):  # the second and third calls go through the cached counters
        plan.count_events(metrics, batch, "accepted")
    assert counted(metrics, "track_played", "1", "accepted") == 6
    assert counted(metrics, "track_played", "2", "accepted") == 3
    assert counted(metrics, "page_viewed", "1", "accepted") == 3
    assert counted(metrics, "track_played", UNKNOWN_EVENT_LABEL, "accepted") == 3
    assert counted(metrics, UNKNOWN_EVENT_LABEL, UNKNOWN_EVENT_LABEL, "accepted") == 6
    plan.count_events(metrics, batch[:1], "failed")
    assert counted(metrics, "track_played", "1", "failed") == 1
    assert counted(metrics, "track_played", "1", "accepted") == 6  # outcomes kept apart
    # only what the plan has is cached: made-up names and versions are not kept
    cached = set(plan._event_counters[metrics])
    assert cached == {
        ("track_played", 1, "accepted"),
        ("track_played", 2, "accepted"),
        ("page_viewed", 1, "accepted"),
        ("track_played", 1, "failed"),
    }


def test_another_metrics_object_gets_its_own_counters() -> None:
    plan = build_plan(load_registry(), Settings())
    first, second = Metrics(CollectorRegistry()), Metrics(CollectorRegistry())
    plan.count_events(first, events(track_played()), "accepted")
    plan.count_events(second, events(track_played(), track_played()), "accepted")
    assert counted(first, "track_played", "1", "accepted") == 1
    assert counted(second, "track_played", "1", "accepted") == 2
