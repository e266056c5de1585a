"""Broker faults under steady load through `capture serve`: the oracle must find nothing lost.

Each scenario runs the tier's load (harness.TIER_LOAD) against a real collector process on the
three-broker cluster, through the fault proxies, injects one fault, heals it, and holds the
oracle: acknowledged ⊆ Kafka, Kafka ⊆ sent, rejected only in the dead-letter topic (issue 14).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from devtools.kafka_cluster import KafkaCluster
from devtools.oracle import Verdict
from tests.integration.faults.harness import Run, new_prefix, run_scenario, serve, until

pytestmark = [pytest.mark.kafka, pytest.mark.faults]

# How long each fault lasts under load.
FAULT_S = 8.0


async def leader_of_partition_0(run: Run) -> int:
    return (await run.cluster.leaders(run.topic))[0]


def assert_holds(verdict: Verdict) -> None:
    assert verdict.ok, "\n".join(verdict.problems)
    assert verdict.lost == 0
    assert verdict.acknowledged > 0


async def test_partition_leader_sigkilled_then_restarted(
    cluster: KafkaCluster, tmp_path: Path, record_verdict: list[Verdict]
) -> None:
    async def body(run: Run) -> None:
        node = cluster.node(await leader_of_partition_0(run))
        await asyncio.to_thread(node.kill)
        run.ledger.mark("fault")
        await asyncio.sleep(FAULT_S)
        # the survivors take over: 200s again before the dead leader is back
        await until(
            lambda: run.ledger.acknowledged_since("fault") > 0,
            timeout_s=60,
            what="200s after the leader died",
        )
        run.ledger.mark("heal")
        await asyncio.to_thread(node.start)  # same ports, same data

    prefix = new_prefix("kill")
    with serve(cluster.bootstrap_servers, prefix, tmp_path) as collector:
        verdict, _ = await run_scenario(
            "partition leader SIGKILLed, restarted",
            cluster,
            collector.url,
            prefix,
            body,
            recover_from="fault",
        )
    record_verdict.append(verdict)
    assert_holds(verdict)


async def test_two_of_three_brokers_down_is_503_and_nothing_acknowledged(
    cluster: KafkaCluster, tmp_path: Path, record_verdict: list[Verdict]
) -> None:
    async def isr_below_minimum(run: Run) -> bool:
        meta = await cluster.metadata([run.topic])
        return all(len(p["isr"]) < 2 for p in meta["topics"][0]["partitions"])

    async def body(run: Run) -> None:
        survivor = await leader_of_partition_0(run)
        down = [n for n in cluster.nodes if n.node_id != survivor]
        for node in down:
            await asyncio.to_thread(node.kill)
        run.ledger.mark("fault")
        deadline = asyncio.get_running_loop().time() + 60
        while not await isr_below_minimum(run):
            assert asyncio.get_running_loop().time() < deadline, "ISR never shrank"
            await asyncio.sleep(0.2)
        run.ledger.mark("below_min_isr")
        await asyncio.sleep(FAULT_S)
        # requests started once the ISR was below min.insync.replicas: none acknowledged
        assert run.ledger.acknowledged_since("below_min_isr") == 0
        refused = [
            a
            for a in run.ledger.attempts
            if a.started_s >= run.ledger.marks["below_min_isr"] and a.status == 503
        ]
        assert refused, "the collector did not answer 503 while the ISR was below the minimum"
        run.ledger.mark("heal")  # recovery counts from the restart, start-up included
        for node in down:
            await asyncio.to_thread(node.start)

    prefix = new_prefix("isr")
    with serve(cluster.bootstrap_servers, prefix, tmp_path) as collector:
        verdict, _ = await run_scenario(
            "2 of 3 brokers down (ISR < min.insync.replicas)",
            cluster,
            collector.url,
            prefix,
            body,
        )
        log = collector.log_path.read_text(errors="replace")
    record_verdict.append(verdict)
    assert_holds(verdict)
    assert "NotEnoughReplicas" in log, "the brokers never refused with NotEnoughReplicas"


async def test_collector_cut_off_from_one_leader(
    cluster: KafkaCluster, tmp_path: Path, record_verdict: list[Verdict]
) -> None:
    async def body(run: Run) -> None:
        proxy = cluster.node(await leader_of_partition_0(run)).proxy
        assert proxy is not None
        proxy.blackhole()
        run.ledger.mark("fault")
        await asyncio.sleep(FAULT_S)
        proxy.heal()
        run.ledger.mark("heal")

    prefix = new_prefix("hole")
    with serve(cluster.bootstrap_servers, prefix, tmp_path) as collector:
        verdict, _ = await run_scenario(
            "collector blackholed from one leader", cluster, collector.url, prefix, body
        )
    record_verdict.append(verdict)
    assert_holds(verdict)
    # every batch has a record for partition 0, whose leader could not be reached
    assert verdict.statuses.get("503", 0) > 0


async def test_slow_link_to_every_broker(
    cluster: KafkaCluster, tmp_path: Path, record_verdict: list[Verdict]
) -> None:
    async def body(run: Run) -> None:
        for proxy in cluster.proxies:
            proxy.set_latency(0.25)  # each way: +500 ms per round trip
        run.ledger.mark("fault")
        before = len(run.ledger.acknowledged)
        await until(
            lambda: len(run.ledger.acknowledged) > before + 100,
            timeout_s=60,
            what="200s over the slow link",
        )
        slowest = max(
            a.finished_s - a.started_s
            for a in run.ledger.attempts
            if a.status == 200 and a.started_s >= run.ledger.marks["fault"]
        )
        assert slowest >= 0.5, "the added latency never showed"
        for proxy in cluster.proxies:
            proxy.heal()
        run.ledger.mark("heal")

    prefix = new_prefix("slow")
    with serve(cluster.bootstrap_servers, prefix, tmp_path) as collector:
        verdict, _ = await run_scenario(
            "+500 ms round trip to every broker", cluster, collector.url, prefix, body
        )
    record_verdict.append(verdict)
    assert_holds(verdict)
