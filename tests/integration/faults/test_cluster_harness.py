"""The cluster harness itself (devtools/kafka_cluster.py): what it promises the fault scenarios.

Clients see only the proxies, topics really get RF 3 and min ISR 2, and a broker comes back
after SIGKILL or SIGSTOP on the same ports with its data (issue 14).
"""

from __future__ import annotations

import asyncio
import signal

import pytest
from aiokafka import AIOKafkaProducer

from devtools.kafka_cluster import KafkaCluster
from devtools.oracle import read_back
from tests.integration.faults.harness import new_prefix

pytestmark = [pytest.mark.kafka, pytest.mark.faults]


async def test_clients_are_advertised_the_proxies_and_checks_the_brokers(
    cluster: KafkaCluster,
) -> None:
    proxy_ports = {node.proxy.port for node in cluster.nodes if node.proxy is not None}
    assert len(proxy_ports) == 3
    producer = AIOKafkaProducer(bootstrap_servers=cluster.bootstrap_servers)
    await producer.start()
    try:
        advertised = {broker.port for broker in producer.client.cluster.brokers()}
    finally:
        await producer.stop()
    assert advertised == proxy_ports
    direct = {broker["port"] for broker in (await cluster.metadata())["brokers"]}
    assert direct == {node.internal_port for node in cluster.nodes}


async def test_topics_get_replication_3_and_min_isr_2_however_created(
    cluster: KafkaCluster,
) -> None:
    prefix = new_prefix("cfg")
    created, auto = f"{prefix}.created", f"{prefix}.auto"
    await cluster.create_topics([created])
    producer = AIOKafkaProducer(bootstrap_servers=cluster.bootstrap_servers, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(auto, b"auto-created by the first write")
    finally:
        await producer.stop()
    await cluster.wait_healthy([created, auto])
    for topic in (created, auto):
        assert (await cluster.topic_config(topic))["min.insync.replicas"] == "2"
        meta = await cluster.metadata([topic])
        assert all(len(p["replicas"]) == 3 for p in meta["topics"][0]["partitions"])


async def test_a_broker_killed_or_paused_comes_back_with_its_data(cluster: KafkaCluster) -> None:
    topic = f"{new_prefix('back')}.t"
    await cluster.create_topics([topic], partitions=1)
    await cluster.wait_healthy([topic])
    leader = cluster.node((await cluster.leaders(topic))[0])
    producer = AIOKafkaProducer(bootstrap_servers=cluster.bootstrap_servers, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"v", headers=[("event_id", b"before")])
    finally:
        await producer.stop()
    ports = (leader.process.listen_port, leader.internal_port)

    await asyncio.to_thread(leader.kill)
    assert not leader.process.running
    await asyncio.to_thread(leader.start)
    assert (leader.process.listen_port, leader.internal_port) == ports
    await cluster.wait_healthy([topic])  # back in the ISR: it kept its log

    leader.pause()
    await asyncio.sleep(1.0)
    assert leader.process.running  # stopped, not dead
    leader.process.signal(signal.SIGCONT)
    await cluster.wait_healthy([topic])
    contents = await read_back(cluster.direct_bootstrap_servers, [topic], "none")
    assert contents.events == {"before": 1}
