"""Sinks take the collector's records: `kafka` (production), `file` (embedded), `memory` (tests)."""

from __future__ import annotations

from collections.abc import Callable

from collector.settings import Settings
from collector.sinks.base import Outcome, Record, Sink
from collector.sinks.file import FileSink
from collector.sinks.memory import MemorySink


def build_sink(
    settings: Settings, *, on_producer_restart: Callable[[str], None] | None = None
) -> Sink:
    """The sink `settings` name; `on_producer_restart(reason)` is told of Kafka producer
    restarts (the Metrics counter in the app; nothing in tests that need no metrics)."""
    kind = settings.sink_kind
    if kind == "file":
        return FileSink(settings.data_dir)
    if kind == "memory":
        return MemorySink()
    from collector.sinks.kafka import KafkaSink  # aiokafka only when used

    assert settings.kafka_bootstrap_servers is not None  # load_settings guarantees it
    return KafkaSink(
        settings.kafka_bootstrap_servers,
        client_id=settings.kafka_client_id,
        compression_type=None
        if settings.kafka_compression == "none"
        else settings.kafka_compression,
        linger_ms=settings.kafka_linger_ms,
        request_timeout_ms=settings.kafka_request_timeout_ms,
        on_producer_restart=on_producer_restart,
    )


__all__ = ["FileSink", "MemorySink", "Outcome", "Record", "Sink", "build_sink"]
