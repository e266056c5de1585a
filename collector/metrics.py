"""Prometheus metrics for the collector, on a registry the app is given (none are global).

Label values are bounded: routes are the app's own, statuses are HTTP codes, event names come
from the tracking plan (anything else is `_unknown`), outcomes and reasons are fixed sets.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

UNKNOWN_EVENT_LABEL = "_unknown"


class Metrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
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
        self.events = Counter(
            "capture_events",
            "Events by name and outcome: accepted, rejected (dead-lettered), failed (sink).",
            ["event", "outcome"],
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
        self.inflight_bytes = Gauge(
            "capture_inflight_bytes",
            "Request bytes being processed now (refused with 503 past max_inflight_bytes).",
            registry=registry,
        )
        self.sink_ready = Gauge(
            "capture_sink_ready",
            "1 when the last readiness check of the sink passed.",
            ["sink"],
            registry=registry,
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
        )
