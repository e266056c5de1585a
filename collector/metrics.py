"""Prometheus metrics for the collector, on a registry the app is given (none are global).

Label values are bounded: routes are the app's own, statuses are HTTP codes, event names and
versions come from the tracking plan (anything else is `_unknown`), outcomes, reasons and
error types are fixed sets. This module defines and exposes metrics; it must not observe any.
"""

from __future__ import annotations

import asyncio
import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    values,
)
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

# prometheus_client's own switch for multiprocess mode (`capture serve --workers N`).
MULTIPROC_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"
SCRAPE_CONTENT_TYPE = CONTENT_TYPE_LATEST

SIZE_BUCKETS_BYTES = (256, 1024, 4096, 16_384, 65_536, 262_144, 1_048_576, 4_194_304, 16_777_216)
BATCH_BUCKETS_EVENTS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 5000)
# The reasons the Kafka sink reports a producer restart with (sinks/kafka_batches.py).
PRODUCER_RESTART_REASONS = ("sender_cancelled", "sender_died", "fatal_error")
SINK_ERROR_TYPES = ("retriable", "fatal")


class Metrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        # Set in every worker when the supervisor turned multiprocess mode on before forking.
        self.multiprocess_dir = os.environ.get(MULTIPROC_DIR_ENV) or None
        self.requests = Counter(
            "capture_http_requests",
            "HTTP requests answered, by route and status.",
            ["route", "status"],
            registry=registry,
        )
        self.request_seconds = Histogram(
            "capture_http_request_duration_seconds",
            "Time from request start to response, by route.",
            ["route"],
            registry=registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.request_body_bytes = Histogram(
            "capture_http_request_body_bytes",
            "Batch request body sizes: as sent (compressed) and after gzip inflation.",
            ["form"],  # sent | inflated
            registry=registry,
            buckets=SIZE_BUCKETS_BYTES,
        )
        # bound once: the hot path observes both on every batch request
        self.body_sent_bytes = self.request_body_bytes.labels("sent")
        self.body_inflated_bytes = self.request_body_bytes.labels("inflated")
        self.batch_events = Histogram(
            "capture_batch_events",
            "Events per decoded batch request.",
            registry=registry,
            buckets=BATCH_BUCKETS_EVENTS,
        )
        self.events = Counter(
            "capture_events",
            "Events by name, version and outcome: accepted, rejected (dead-lettered), failed.",
            ["event", "version", "outcome"],
            registry=registry,
        )
        self.rejections = Counter(
            "capture_events_rejected",
            "Events dead-lettered, by rejection reason.",
            ["reason"],
            registry=registry,
        )
        self.request_errors = Counter(
            "capture_request_errors",
            "Requests refused as a whole, by reason code.",
            ["reason"],
            registry=registry,
        )
        self.sink_publish_seconds = Histogram(
            "capture_sink_publish_duration_seconds",
            "Time the sink took to acknowledge one request's records.",
            ["sink"],
            registry=registry,
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5),
        )
        self.sink_errors = Counter(
            "capture_sink_errors",
            "Records the sink did not acknowledge, by sink and error type (retriable, fatal,"
            " or a bounded sink-specific type).",
            ["sink", "type"],
            registry=registry,
        )
        self.producer_restarts = Counter(
            "capture_kafka_producer_restarts",
            "Times the Kafka producer was torn down and started again, by reason.",
            ["reason"],
            registry=registry,
        )
        self.dedup_hits = Counter(
            "capture_dedup_hits",
            "Events dropped as duplicates of an event_id seen recently (acknowledged, not sent).",
            registry=registry,
        )
        # topics come from the plan (its events, template and fan-out rules): bounded
        self.hot_key_overflow = Counter(
            "capture_hot_key_overflow",
            "Events of hot keys written to the overflow topic instead of `topic`, by `topic`.",
            ["topic"],
            registry=registry,
        )
        # source names come from the config file, so the label stays bounded
        self.source_refusals = Counter(
            "capture_source_refusals",
            "Requests refused by write-key checks (401, 403, 429), by source (`_unknown` when"
            " no known key was sent) and reason.",
            ["source", "reason"],
            registry=registry,
        )
        # Gauges say how workers combine in multiprocess mode: bytes add up; readiness is the
        # worst live worker's; the plan size is the newest plan any live worker serves.
        self.inflight_bytes = Gauge(
            "capture_inflight_bytes",
            "Request bytes being processed now (refused with 503 past max_inflight_bytes).",
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.sink_ready = Gauge(
            "capture_sink_ready",
            "1 when the last readiness check of the sink passed.",
            ["sink"],
            registry=registry,
            multiprocess_mode="livemin",
        )
        self.schema_reloads = Counter(
            "capture_schema_reloads",
            "Tracking plan reloads (SIGHUP), by outcome: ok, or failed (the old plan serves).",
            ["outcome"],
            registry=registry,
        )
        self.schema_event_versions = Gauge(
            "capture_schema_event_versions",
            "Event versions in the tracking plan being served.",
            registry=registry,
            multiprocess_mode="livemax",
        )
        # Read when scraped (a task leak shows as growth under steady load; issue 14's soak).
        self.asyncio_tasks = Gauge(
            "capture_asyncio_tasks",
            "asyncio tasks alive on the event loop, counted when scraped.",
            registry=registry,
            multiprocess_mode="livesum",
        )

    def _count_tasks(self) -> None:
        try:
            self.asyncio_tasks.set(len(asyncio.all_tasks()))
        except RuntimeError:  # scraped with no running loop (a test calling scrape() directly)
            return

    def count_sink_from_zero(self, sink: str) -> None:
        """Export the sink's error and restart counters at 0 before anything happened.

        A series that first appears at 1 gives rate() and increase() nothing to compare with,
        so the first error or producer restart of a process would be invisible to the
        dashboard and to the CaptureProducerRestarts alert (issue 15).
        """
        for error_type in SINK_ERROR_TYPES:
            self.sink_errors.labels(sink, error_type)
        if sink == "kafka":
            for reason in PRODUCER_RESTART_REASONS:
                self.producer_restarts.labels(reason)

    def scrape(self) -> bytes:
        """The text exposition: this registry, or every worker's files in multiprocess mode."""
        self._count_tasks()
        if self.multiprocess_dir is None:
            return generate_latest(self.registry)
        # A fresh registry per scrape, as prometheus_client's multiprocess mode requires.
        merged = CollectorRegistry()
        MultiProcessCollector(merged, path=self.multiprocess_dir)  # type: ignore[no-untyped-call]
        return generate_latest(merged)


def enable_multiprocess(directory: str) -> None:
    """Turn on multiprocess mode for metrics created from now on, in this process and its forks.

    prometheus_client picks its value class once, at import, from the environment; the
    supervisor decides on workers later, so it sets the variable and picks the class again.
    Call it before forking and before any worker creates its Metrics.
    """
    os.environ[MULTIPROC_DIR_ENV] = directory
    values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]


def worker_exited(pid: int, directory: str) -> None:
    """Drop a dead worker's live gauges; its counters and histograms keep counting in sums."""
    mark_process_dead(pid, directory)  # type: ignore[no-untyped-call]
