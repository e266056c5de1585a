"""The rest of the fault catalogue (issue 14), run by `make faults` only: longer outages, rolling
restarts, a paused leader, the collector itself killed or drained under load. Same load, same
oracle as the tier in test_broker_faults.py; the verdicts go to docs/reliability.md. Where the
issue names the SDK (collector killed, every broker down), an SDK driver runs beside the raw one.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from devtools.kafka_cluster import KafkaCluster
from devtools.load import Calibration, Load
from devtools.oracle import Verdict
from devtools.sdk_load import SdkDriver
from tests.integration.faults.harness import (
    SDK_RATE_EPS,
    Body,
    Collector,
    Run,
    new_prefix,
    run_scenario,
    serve,
)
from tests.integration.faults.test_broker_faults import FAULT_S, assert_holds, leader_of_partition_0

pytestmark = [pytest.mark.kafka, pytest.mark.faults, pytest.mark.catalogue]

# The issue asks for 2 minutes with every broker down; shorter runs may set it lower.
ALL_DOWN_S = float(os.environ.get("EVENT_CAPTURE_ALL_DOWN_S", "120"))
COLLECTOR_KILLS = 20
PAUSE_S = 10.0
# The "steady load at about half of the cluster's measured maximum".
LOAD_SHARE = 0.5


async def scenario(
    name: str,
    cluster: KafkaCluster,
    tmp_path: Path,
    record: list[Verdict],
    body_for: Callable[[Collector], Body],
    *,
    load: Load,
    recover_from: str = "heal",
    sdk_retry_s: float | None = None,
) -> Verdict:
    """Run `body_for(collector)` (which returns the scenario body) against a fresh collector;
    with `sdk_retry_s`, an SDK driver (spool on, retrying a batch that long) runs too."""
    prefix = new_prefix(name.split()[0].lower()[:6])
    sdk = None
    with serve(cluster.bootstrap_servers, prefix, tmp_path) as collector:
        if sdk_retry_s is not None:
            sdk = SdkDriver(collector.url, tmp_path, rate_eps=SDK_RATE_EPS, max_retry_s=sdk_retry_s)
        body = body_for(collector)
        verdict, _ = await run_scenario(
            name,
            cluster,
            collector.url,
            prefix,
            body,
            load=load,
            recover_from=recover_from,
            sdk=sdk,
        )
    record.append(verdict)
    assert_holds(verdict)
    if sdk is not None:
        # every event the SDK accepted was delivered: none dropped, none left on disk
        assert not sdk.ledger.dropped, sdk.ledger.dropped_by_reason()
        assert not sdk.ledger.spooled_at_end, "the SDK's spool was not drained"
    return verdict


async def test_rolling_restart_of_every_broker(
    cluster: KafkaCluster,
    tmp_path: Path,
    record_verdict: list[Verdict],
    calibrated: Calibration,
) -> None:
    def body_for(_: Collector) -> Body:
        async def body(run: Run) -> None:
            run.ledger.mark("fault")
            for node in cluster.nodes:
                await asyncio.to_thread(node.stop)  # SIGTERM: controlled shutdown
                await asyncio.to_thread(node.start)
                await cluster.wait_healthy([run.topic])
            run.ledger.mark("heal")

        return body

    await scenario(
        "rolling restart (SIGTERM each broker)",
        cluster,
        tmp_path,
        record_verdict,
        body_for,
        load=calibrated.paced(LOAD_SHARE),
    )


async def test_every_broker_down_then_back(
    cluster: KafkaCluster,
    tmp_path: Path,
    record_verdict: list[Verdict],
    calibrated: Calibration,
) -> None:
    def body_for(_: Collector) -> Body:
        async def body(run: Run) -> None:
            for node in cluster.nodes:
                await asyncio.to_thread(node.kill)
            run.ledger.mark("fault")
            await asyncio.sleep(ALL_DOWN_S)
            assert run.ledger.acknowledged_since("fault") == 0
            assert run.ledger.statuses()[503] > 0
            run.ledger.mark("heal")
            for node in cluster.nodes:
                await asyncio.to_thread(node.process.launch)
            for node in cluster.nodes:
                await asyncio.to_thread(node.process.wait_listening)

        return body

    await scenario(
        f"every broker down {ALL_DOWN_S:.0f} s, SDK spool drains",
        cluster,
        tmp_path,
        record_verdict,
        body_for,
        load=calibrated.paced(LOAD_SHARE),
        sdk_retry_s=ALL_DOWN_S + 300,  # outlasts the outage: the client keeps its batches
    )


async def test_partition_leader_paused_then_resumed(
    cluster: KafkaCluster,
    tmp_path: Path,
    record_verdict: list[Verdict],
    calibrated: Calibration,
) -> None:
    def body_for(_: Collector) -> Body:
        async def body(run: Run) -> None:
            node = cluster.node(await leader_of_partition_0(run))
            node.pause()  # SIGSTOP: a GC pause or a frozen VM, sockets open
            run.ledger.mark("fault")
            await asyncio.sleep(PAUSE_S)
            node.resume()
            run.ledger.mark("heal")

        return body

    await scenario(
        f"partition leader SIGSTOPped {PAUSE_S:.0f} s",
        cluster,
        tmp_path,
        record_verdict,
        body_for,
        load=calibrated.paced(LOAD_SHARE),
        recover_from="fault",
    )


async def test_connections_reset_every_second(
    cluster: KafkaCluster,
    tmp_path: Path,
    record_verdict: list[Verdict],
    calibrated: Calibration,
) -> None:
    def body_for(_: Collector) -> Body:
        async def body(run: Run) -> None:
            run.ledger.mark("fault")
            for _ in range(int(FAULT_S)):
                for proxy in cluster.proxies:
                    proxy.reset_connections()
                await asyncio.sleep(1.0)
            run.ledger.mark("heal")

        return body

    await scenario(
        "broker connections reset each second",
        cluster,
        tmp_path,
        record_verdict,
        body_for,
        load=calibrated.paced(LOAD_SHARE),
    )


async def test_bandwidth_capped_to_every_broker(
    cluster: KafkaCluster,
    tmp_path: Path,
    record_verdict: list[Verdict],
    calibrated: Calibration,
) -> None:
    def body_for(_: Collector) -> Body:
        async def body(run: Run) -> None:
            for proxy in cluster.proxies:
                proxy.set_bandwidth(32 * 1024)
            run.ledger.mark("fault")
            await asyncio.sleep(FAULT_S)
            for proxy in cluster.proxies:
                proxy.heal()
            run.ledger.mark("heal")

        return body

    await scenario(
        "32 KiB/s to every broker",
        cluster,
        tmp_path,
        record_verdict,
        body_for,
        load=calibrated.paced(LOAD_SHARE),
    )


async def test_collector_sigkilled_repeatedly(
    cluster: KafkaCluster,
    tmp_path: Path,
    record_verdict: list[Verdict],
    calibrated: Calibration,
) -> None:
    def body_for(collector: Collector) -> Body:
        async def body(run: Run) -> None:
            run.ledger.mark("fault")
            for _ in range(COLLECTOR_KILLS):
                await asyncio.to_thread(collector.kill)
                await asyncio.to_thread(collector.start)  # same port: the driver retries
                await asyncio.sleep(0.5)
            run.ledger.mark("heal")

        return body

    await scenario(
        f"collector SIGKILLed {COLLECTOR_KILLS} times, SDK retrying",
        cluster,
        tmp_path,
        record_verdict,
        body_for,
        load=calibrated.paced(LOAD_SHARE),
        sdk_retry_s=120,
    )


async def test_collector_sigterm_drains_under_load(
    cluster: KafkaCluster,
    tmp_path: Path,
    record_verdict: list[Verdict],
    calibrated: Calibration,
) -> None:
    def body_for(collector: Collector) -> Body:
        async def body(run: Run) -> None:
            run.ledger.mark("fault")
            assert await asyncio.to_thread(collector.terminate) == 0
            run.ledger.mark("heal")
            await asyncio.to_thread(collector.start)

        return body

    await scenario(
        "collector SIGTERM drain",
        cluster,
        tmp_path,
        record_verdict,
        body_for,
        load=calibrated.paced(LOAD_SHARE),
    )


async def test_topic_deleted_while_written(
    cluster: KafkaCluster,
    tmp_path: Path,
    record_verdict: list[Verdict],
    calibrated: Calibration,
) -> None:
    async def body(run: Run) -> None:
        await cluster.delete_topic(run.topic)
        run.ledger.mark("fault")
        # the collector's next writes create it again (auto-create, RF 3, min ISR 2)
        deadline = asyncio.get_running_loop().time() + 60
        while run.topic in await cluster.topic_names():
            assert asyncio.get_running_loop().time() < deadline, "the topic was never deleted"
            await asyncio.sleep(0.1)
        while run.topic not in await cluster.topic_names():
            assert asyncio.get_running_loop().time() < deadline, "the topic never came back"
            await asyncio.sleep(0.1)
        run.ledger.mark("heal")

    prefix = new_prefix("delete")
    with serve(cluster.bootstrap_servers, prefix, tmp_path) as collector:
        verdict, _ = await run_scenario(
            "event topic deleted while written",
            cluster,
            collector.url,
            prefix,
            body,
            load=calibrated.paced(LOAD_SHARE),
            destroyed_until="heal",
        )
    record_verdict.append(verdict)
    assert_holds(verdict)
    assert (await cluster.topic_config(f"{prefix}.track_played"))["min.insync.replicas"] == "2"
