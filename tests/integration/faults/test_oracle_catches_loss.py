"""The oracle's own test: a collector that acknowledges before the sink did loses data, and the
oracle must say so (issue 14: "a scenario that does lose data is caught").

The collector here is the real app in-process with a test-only sink wrapper that answers OK at
once and publishes in the background, ignoring the outcome: what "ack before the sink acks"
means. Kafka is cut off (every proxy drops) while the load runs, so what it acknowledged then
never lands.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from collector.settings import Settings
from collector.sinks.base import Outcome, Record, Sink
from collector.sinks.kafka import KafkaSink
from devtools.kafka_cluster import KafkaCluster
from devtools.oracle import Verdict
from event_schemas import SchemaRegistry
from tests.conftest import start_collector
from tests.integration.faults.harness import Run, new_prefix, run_scenario

pytestmark = [pytest.mark.kafka, pytest.mark.faults]

CUT_OFF_S = 6.0


class AckBeforeSinkAcks(Sink):
    """Answers OK before the wrapped sink has answered anything: the bug the oracle must catch."""

    name = "ack-before-sink"

    def __init__(self, inner: Sink) -> None:
        self._inner = inner
        self._background: set[asyncio.Task[list[Outcome]]] = set()

    async def start(self) -> None:
        await self._inner.start()

    async def stop(self, *, timeout_s: float | None = None) -> None:
        await asyncio.gather(*self._background, return_exceptions=True)
        await self._inner.stop(timeout_s=timeout_s)

    async def ready(self) -> bool:
        return await self._inner.ready()

    async def publish(self, records: Sequence[Record], *, timeout_s: float) -> list[Outcome]:
        task = asyncio.create_task(self._inner.publish(records, timeout_s=timeout_s))
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return [Outcome.OK] * len(records)


async def test_the_oracle_catches_a_collector_that_acks_before_the_sink(
    cluster: KafkaCluster, schemas: SchemaRegistry, record_verdict: list[Verdict]
) -> None:
    async def body(run: Run) -> None:
        for proxy in cluster.proxies:
            proxy.drop()
        run.ledger.mark("fault")
        await asyncio.sleep(CUT_OFF_S)
        for proxy in cluster.proxies:
            proxy.heal()
        run.ledger.mark("heal")

    prefix = new_prefix("eager")
    settings = Settings(
        sink="kafka",
        kafka_bootstrap_servers=cluster.bootstrap_servers,
        topic_prefix=f"{prefix}.",
        dead_letter_topic=f"{prefix}._invalid",
        sink_timeout_s=2.0,
    )
    sink = AckBeforeSinkAcks(KafkaSink(cluster.bootstrap_servers, request_timeout_ms=2_000))
    http = await start_collector(settings, sink, schemas)
    try:
        base = str(http.make_url("/")).rstrip("/")
        verdict, _ = await run_scenario(
            "oracle check: collector acks before the sink", cluster, base, prefix, body
        )
    finally:
        await http.close()
    record_verdict.append(verdict)
    assert verdict.lost > 0
    assert any("acknowledged events are not in Kafka" in p for p in verdict.problems)
    # what Kafka does hold was all sent: only the acknowledgement was a lie
    assert not any("never sent" in p for p in verdict.problems)
