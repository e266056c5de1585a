"""Optional Prometheus export of `client.stats()`: a custom collector read at scrape time.

The only module that imports prometheus_client (`import capture_sdk` does not need it).
It reads the client's counters and never changes the client.

    from capture_sdk.prometheus import register
    register(client)  # into prometheus_client's default registry
"""

from __future__ import annotations

from collections.abc import Iterator

try:
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
    from prometheus_client.registry import REGISTRY, Collector, CollectorRegistry
except ModuleNotFoundError as exc:  # the SDK's distribution makes it an extra
    if exc.name != "prometheus_client":
        raise
    raise ImportError(
        "capture_sdk.prometheus needs prometheus_client: "
        "pip install 'event-capture-sdk[prometheus]'",
        name="prometheus_client",
    ) from exc

from capture_sdk._async_client import AsyncClient
from capture_sdk._client import Client

__all__ = ["StatsCollector", "register"]

PREFIX = "capture_sdk_"
# ClientStats fields exported as counters (name without _total, help text).
_COUNTERS = (
    ("enqueued", "Events accepted by track() and queued."),
    ("sent", "Events the collector acknowledged."),
    ("rejected", "Events the collector dead-lettered (schema validation); never retried."),
    (
        "retried",
        "Events sent again: each retry of a request counts every event in it (not a drop).",
    ),
    ("replayed", "Events read back from the disk spool at start."),
    ("sampled_out", "Events left out by sample_rates at track() (by design, not a drop)."),
    ("spooled", "Events given up by this process but kept in the disk spool for the next start."),
    ("spool_errors", "Events whose spool write failed; queued in memory only (not a drop)."),
)


class StatsCollector(Collector):
    """Exports one client's `stats()`: counters `capture_sdk_events_<field>_total`,
    `capture_sdk_events_dropped_total{reason}` and the gauge `capture_sdk_queue_depth`."""

    def __init__(self, client: Client | AsyncClient) -> None:
        self._client = client

    def describe(self) -> Iterator[Metric]:
        # the registry checks these names against the ones it has (one client per registry)
        return self.collect()

    def collect(self) -> Iterator[Metric]:
        stats = self._client.stats()
        for field, help_text in _COUNTERS:
            yield CounterMetricFamily(f"{PREFIX}events_{field}", help_text, getattr(stats, field))
        dropped = CounterMetricFamily(
            f"{PREFIX}events_dropped",
            "Events that will not be delivered, by reason (a bounded set).",
            labels=["reason"],
        )
        for reason, count in sorted(stats.dropped.items()):
            dropped.add_metric([reason], count)
        yield dropped
        yield GaugeMetricFamily(
            f"{PREFIX}queue_depth", "Events queued in memory, not yet sent.", stats.queue_depth
        )


def register(
    client: Client | AsyncClient, registry: CollectorRegistry | None = None
) -> StatsCollector:
    """Add a collector for `client` to `registry` (default: prometheus_client's global one).

    One client per registry: a second would export the same metric names (ValueError).
    """
    collector = StatsCollector(client)
    (REGISTRY if registry is None else registry).register(collector)
    return collector
