"""Dev tool: a multi-broker KRaft cluster on loopback, each broker behind a fault proxy.

Brokers 1..N and a dedicated controller quorum (node ids from 100) run from the same jars as
the single broker; topics get RF 3 and min.insync.replicas 2. Clients reach the brokers only
through the proxies (the advertised listener is the proxy's port); replication and controller
traffic stay direct. It must not touch anything outside its own work directory and ports.
"""

from __future__ import annotations

import asyncio
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError

from devtools.faultproxy import FaultProxy, ProxyHost
from devtools.kafka import KafkaProcess, new_cluster_id, wait_for_stop_signal
from devtools.ports import free_port

CONTROLLER_HEAP = "-Xmx256m"
FIRST_CONTROLLER_ID = 100
# A broker that stops heartbeating is fenced (its partitions get new leaders, it leaves every
# ISR) after this long; Kafka's default of 9 s would stall produce with acks=all for as long.
BROKER_SESSION_TIMEOUT_MS = 4_000
BROKER_HEARTBEAT_INTERVAL_MS = 500
# A follower that stops fetching leaves the ISR after this (Kafka's default is 30 s).
REPLICA_LAG_TIME_MAX_MS = 10_000
HEALTH_TIMEOUT_S = 120.0
METADATA_TIMEOUT_S = 30.0


class KafkaNode:
    """One broker: its process, its ports and its proxy. Kill, pause and restart it freely:
    it comes back on the same ports with the same data."""

    def __init__(
        self, node_id: int, process: KafkaProcess, proxy: FaultProxy | None, internal_port: int
    ) -> None:
        self.node_id = node_id
        self.process = process
        self.proxy = proxy
        self.internal_port = internal_port  # replication and our own checks, never proxied

    @property
    def pid(self) -> int | None:
        return self.process.pid

    def start(self) -> None:
        self.process.start()

    def stop(self) -> None:
        """SIGTERM: a controlled shutdown that hands leadership over first."""
        self.process.stop()

    def kill(self) -> None:
        self.process.kill()

    def pause(self) -> None:
        self.process.signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.process.signal(signal.SIGCONT)


class KafkaCluster:
    """`nodes` brokers and `controllers` dedicated controllers, started by `start()`.

    Dedicated controllers, not combined nodes: taking two of three brokers down must leave a
    controller that shrinks the ISR (so producers see NotEnoughReplicas), and Kafka advises
    against combined mode in production. One controller is the default on small machines.
    """

    def __init__(
        self,
        nodes: int = 3,
        *,
        controllers: int = 1,
        proxies: bool = True,
        work_dir: Path | None = None,
    ) -> None:
        self._owns_work_dir = work_dir is None
        self.work_dir = work_dir or Path(tempfile.mkdtemp(prefix="kafka-cluster-"))
        self.replication_factor = min(3, nodes)
        self.min_insync_replicas = 2 if self.replication_factor >= 3 else 1
        cluster_id = new_cluster_id()
        controller_ports = {FIRST_CONTROLLER_ID + i: free_port() for i in range(controllers)}
        voters = ",".join(f"{n}@127.0.0.1:{port}" for n, port in controller_ports.items())
        self.controllers = [
            KafkaProcess(
                self.work_dir / f"controller-{n}",
                self._controller_properties(n, port, voters),
                cluster_id=cluster_id,
                listen_port=port,
                heap=CONTROLLER_HEAP,
                name=f"Kafka controller {n}",
            )
            for n, port in controller_ports.items()
        ]
        self.proxy_host = ProxyHost() if proxies else None
        self.nodes: list[KafkaNode] = []
        for node_id in range(1, nodes + 1):
            client_port, internal_port = free_port(), free_port()
            proxy = None
            if self.proxy_host is not None:
                proxy = self.proxy_host.add(free_port(), client_port)
            advertised = client_port if proxy is None else proxy.port
            properties = self._broker_properties(
                node_id, client_port, internal_port, advertised, voters
            )
            process = KafkaProcess(
                self.work_dir / f"broker-{node_id}",
                properties,
                cluster_id=cluster_id,
                listen_port=client_port,
                name=f"Kafka broker {node_id}",
            )
            self.nodes.append(KafkaNode(node_id, process, proxy, internal_port))

    @property
    def bootstrap_servers(self) -> str:
        """What clients use: the proxies (or the brokers, without proxies)."""
        return ",".join(
            f"127.0.0.1:{n.proxy.port if n.proxy else n.process.listen_port}" for n in self.nodes
        )

    @property
    def direct_bootstrap_servers(self) -> str:
        """The brokers' internal listener, past every proxy: for checks that faults must not
        touch (reading topics back, health)."""
        return ",".join(f"127.0.0.1:{n.internal_port}" for n in self.nodes)

    def node(self, node_id: int) -> KafkaNode:
        return self.nodes[node_id - 1]

    @property
    def proxies(self) -> list[FaultProxy]:
        return [n.proxy for n in self.nodes if n.proxy is not None]

    def _common(self, node_id: int, voters: str) -> dict[str, str]:
        return {
            "node.id": str(node_id),
            "controller.quorum.voters": voters,
            "controller.listener.names": "CONTROLLER",
            "log.dirs": str(self.work_dir / f"data-{node_id}"),
            "broker.session.timeout.ms": str(BROKER_SESSION_TIMEOUT_MS),
            "broker.heartbeat.interval.ms": str(BROKER_HEARTBEAT_INTERVAL_MS),
            # two cores for everything: fewer threads than Kafka's defaults
            "num.network.threads": "2",
            "num.io.threads": "2",
            "background.threads": "2",
        }

    def _controller_properties(self, node_id: int, port: int, voters: str) -> dict[str, str]:
        return {
            **self._common(node_id, voters),
            # Kafka 4 writes the controller's min.insync.replicas into the metadata log as the
            # cluster-wide default, and that beats the brokers' own setting: without this line
            # every topic had min ISR 1, and acks=all was answered by a lone leader (found by
            # the two-brokers-down scenario; the harness test checks the effective value).
            "min.insync.replicas": str(self.min_insync_replicas),
            "default.replication.factor": str(self.replication_factor),
            "process.roles": "controller",
            "listeners": f"CONTROLLER://127.0.0.1:{port}",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT",
        }

    def _broker_properties(
        self, node_id: int, client_port: int, internal_port: int, advertised: int, voters: str
    ) -> dict[str, str]:
        rf, min_isr = str(self.replication_factor), str(self.min_insync_replicas)
        return {
            **self._common(node_id, voters),
            "process.roles": "broker",
            "listeners": (f"CLIENT://127.0.0.1:{client_port},INTERNAL://127.0.0.1:{internal_port}"),
            "advertised.listeners": (
                f"CLIENT://127.0.0.1:{advertised},INTERNAL://127.0.0.1:{internal_port}"
            ),
            "listener.security.protocol.map": (
                "CLIENT:PLAINTEXT,INTERNAL:PLAINTEXT,CONTROLLER:PLAINTEXT"
            ),
            "inter.broker.listener.name": "INTERNAL",
            "num.partitions": "3",
            "default.replication.factor": rf,
            "min.insync.replicas": min_isr,
            "auto.create.topics.enable": "true",
            "unclean.leader.election.enable": "false",
            "replica.lag.time.max.ms": str(REPLICA_LAG_TIME_MAX_MS),
            "offsets.topic.replication.factor": rf,
            "transaction.state.log.replication.factor": rf,
            "transaction.state.log.min.isr": min_isr,
            "share.coordinator.state.topic.replication.factor": rf,
            "share.coordinator.state.topic.min.isr": min_isr,
            "group.initial.rebalance.delay.ms": "0",
        }

    def start(self) -> None:
        """Start every process (controllers first) and wait until all brokers registered."""
        try:
            # all at once: brokers retry the controller until it is up, and JVM start-up is
            # most of the wait
            processes = [*self.controllers, *(node.process for node in self.nodes)]
            for process in processes:
                process.launch()
            for process in processes:
                process.wait_listening()
            asyncio.run(self.wait_healthy())
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        try:
            for node in self.nodes:
                node.stop()
            for controller in self.controllers:
                controller.stop()
            if self.proxy_host is not None:
                self.proxy_host.close()
                self.proxy_host = None
        finally:  # the processes are gone by now; their data must not outlive them
            if self._owns_work_dir:
                shutil.rmtree(self.work_dir, ignore_errors=True)

    def __enter__(self) -> KafkaCluster:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # state, asked through the brokers' internal listener (past the proxies)

    def admin(self) -> AIOKafkaAdminClient:
        return AIOKafkaAdminClient(
            bootstrap_servers=self.direct_bootstrap_servers, request_timeout_ms=5_000
        )

    async def metadata(self, topics: list[str] | None = None) -> dict[str, Any]:
        """Brokers and topics as the cluster describes them. With brokers down, the admin
        client may pick a dead one that the controller has not fenced yet: ask again."""
        deadline = time.monotonic() + METADATA_TIMEOUT_S
        while True:
            try:
                return await self._metadata_once(topics)
            except KafkaError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.2)

    async def _metadata_once(self, topics: list[str] | None) -> dict[str, Any]:
        admin = self.admin()
        await admin.start()
        try:
            cluster = await admin.describe_cluster()
            described = await admin.describe_topics(topics) if topics else []
        finally:
            await admin.close()
        return {"brokers": cluster["brokers"], "topics": described}

    async def create_topics(self, names: Iterable[str], *, partitions: int = 3) -> None:
        admin = self.admin()
        await admin.start()
        try:
            await admin.create_topics(
                [NewTopic(n, partitions, self.replication_factor) for n in names]
            )
        finally:
            await admin.close()

    async def delete_topic(self, topic: str) -> None:
        admin = self.admin()
        await admin.start()
        try:
            await admin.delete_topics([topic])
        finally:
            await admin.close()

    async def topic_names(self) -> set[str]:
        """Every topic (a metadata request for all topics creates none)."""
        admin = self.admin()
        await admin.start()
        try:
            return set(await admin.list_topics())
        finally:
            await admin.close()

    async def topic_config(self, topic: str) -> dict[str, str]:
        """The topic's effective configuration, as the brokers apply it."""
        admin = self.admin()
        await admin.start()
        try:
            responses = await admin.describe_configs(
                [ConfigResource(ConfigResourceType.TOPIC, topic)]
            )
        finally:
            await admin.close()
        # DescribeConfigs: resources of (error, message, type, name, [(name, value, ...)])
        entries = responses[0].resources[0][4]
        return {entry[0]: entry[1] for entry in entries}

    async def leaders(self, topic: str) -> dict[int, int]:
        """Partition -> the node id leading it (-1 while it has none)."""
        meta = await self.metadata([topic])
        return {p["partition"]: p["leader"] for p in meta["topics"][0]["partitions"]}

    async def wait_healthy(
        self, topics: list[str] | None = None, *, timeout_s: float = HEALTH_TIMEOUT_S
    ) -> None:
        """Until every broker is registered and every partition of `topics` has a leader and
        its full ISR."""
        deadline = time.monotonic() + timeout_s
        why = "not asked yet"
        while time.monotonic() < deadline:
            try:
                why = _unhealthy(await self.metadata(topics), len(self.nodes), topics or [])
            except Exception as exc:  # noqa: BLE001  # any failure to answer is "not yet"
                why = repr(exc)
            if not why:
                return
            await asyncio.sleep(0.5)
        states = "; ".join(
            f"broker {n.node_id} {'running' if n.process.running else 'exited'}"
            f", log {n.process.log_file}"
            for n in self.nodes
        )
        raise RuntimeError(f"cluster not healthy within {timeout_s}s: {why} ({states})")


def _unhealthy(meta: dict[str, Any], brokers: int, topics: list[str]) -> str:
    if len(meta["brokers"]) != brokers:
        ids = sorted(b["node_id"] for b in meta["brokers"])
        return f"{len(meta['brokers'])} of {brokers} brokers registered (node ids {ids})"
    found = {t["topic"]: t for t in meta["topics"]}
    for topic in topics:
        described = found.get(topic)
        if described is None or described["error_code"] != 0:
            return f"topic {topic} not described"
        for part in described["partitions"]:
            if part["leader"] < 0 or len(part["isr"]) != len(part["replicas"]):
                return f"{topic}[{part['partition']}] leader {part['leader']} isr {part['isr']}"
    return ""


def run_cluster(nodes: int) -> int:
    with KafkaCluster(nodes) as cluster:
        print(f"kafka cluster of {nodes} brokers; bootstrap servers {cluster.bootstrap_servers}")
        print(f"(each through a fault proxy; direct: {cluster.direct_bootstrap_servers})")
        print(f"work directory {cluster.work_dir}; Ctrl-C stops it")
        sys.stdout.flush()
        wait_for_stop_signal()
    return 0
