"""Dev tool: real Apache Kafka (KRaft) processes for tests, benchmarks and people.

Maven fetches the broker's jars from Maven Central once into a cache; every process gets a work
directory, formats its storage, listens on free loopback ports and is stopped cleanly. It never
fakes a broker: if Java or the jars are missing, starting fails loudly.

    python -m devtools.kafka run                     # one broker, address printed, Ctrl-C stops
    python -m devtools.kafka cluster run --nodes 3   # three brokers behind fault proxies
"""

from __future__ import annotations

import argparse
import base64
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Mapping
from pathlib import Path

from collector.cache import cache_root
from devtools.ports import free_port
from devtools.processes import guard, release, terminate

POM = Path(__file__).resolve().parent / "maven" / "kafka-pom.xml"
KAFKA_VERSION = "4.1.1"
# A process that has not opened its listener by then is treated as failed to start.
START_TIMEOUT_S = 90.0
# Kafka flushes and closes its logs on SIGTERM; a controlled shutdown of one node is quick.
STOP_TIMEOUT_S = 30.0
# The machines have 2 cores and several JVMs may share them: small heaps, the serial collector.
BROKER_HEAP = "-Xmx512m"

LOG4J2_CONFIG = """\
Configuration:
  name: test-broker
  Appenders:
    File:
      name: file
      fileName: "${sys:kafka.logs.dir}/broker.log"
      PatternLayout:
        pattern: "[%d] %p %m (%c)%n"
  Loggers:
    Root:
      level: INFO
      AppenderRef:
        - ref: file
"""


def cache_dir() -> Path:
    """Where the broker's jars are kept between runs (override with EVENT_CAPTURE_CACHE)."""
    return cache_root() / f"kafka-{KAFKA_VERSION}"


def ensure_jars() -> Path:
    """Return the directory holding the broker's jars, fetching them with Maven if needed."""
    libs = cache_dir() / "libs"
    marker = libs / ".complete"
    if marker.exists():
        return libs
    if shutil.which("mvn") is None:
        raise RuntimeError("Maven (`mvn`) is needed to fetch the Kafka broker's jars")
    cache_dir().mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix="libs-", dir=cache_dir()))
    subprocess.run(
        [
            "mvn",
            "-q",
            "-B",
            "-Dstyle.color=never",
            "-f",
            str(POM),
            f"-Dkafka.version={KAFKA_VERSION}",
            "dependency:copy-dependencies",
            f"-DoutputDirectory={staging}",
            "-DincludeScope=runtime",
        ],
        check=True,
    )
    (staging / "log4j2.yaml").write_text(LOG4J2_CONFIG)
    (staging / ".complete").write_text(KAFKA_VERSION)
    # Rename so that a concurrent or interrupted fetch never leaves a half-filled cache.
    if libs.exists():
        shutil.rmtree(staging)
    else:
        staging.rename(libs)
    return libs


def port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def new_cluster_id() -> str:
    """A random KRaft cluster id that StorageTool's argument parser accepts: one starting with
    `-` (1 in 64 of them) would be read as an option (Kafka's own Uuid.randomUuid skips those).
    """
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


class KafkaProcess:
    """One Kafka JVM (broker, controller or both) with its own work directory and ports.

    Storage is formatted on the first start only, so `stop()`/`kill()` then `start()` brings it
    back on the same ports and the same data. `listen_port` is the port that tells it is up.
    """

    def __init__(
        self,
        work_dir: Path,
        properties: Mapping[str, str],
        *,
        cluster_id: str,
        listen_port: int,
        heap: str = BROKER_HEAP,
        name: str = "kafka",
    ) -> None:
        self.libs = ensure_jars()
        self.work_dir = work_dir
        self.properties = dict(properties)
        self.cluster_id = cluster_id
        self.listen_port = listen_port
        self.heap = heap
        self.name = name
        self._process: subprocess.Popen[bytes] | None = None
        self._guardian: subprocess.Popen[bytes] | None = None
        self._formatted = False

    @property
    def log_file(self) -> Path:
        return self.work_dir / "logs" / "broker.log"

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def _java(self, main_class: str, *args: str) -> list[str]:
        java = shutil.which("java")
        if java is None:
            raise RuntimeError("Java 17 (`java`) is needed to run the Kafka broker")
        return [
            java,
            self.heap,
            "-XX:+UseSerialGC",
            "-Xshare:auto",
            f"-Dkafka.logs.dir={self.work_dir / 'logs'}",
            f"-Dlog4j2.configurationFile={self.libs / 'log4j2.yaml'}",
            "-cp",
            f"{self.libs}/*",
            main_class,
            *args,
        ]

    def launch(self) -> None:
        """Start the JVM without waiting for it (see `wait_listening`)."""
        if self._process is not None:
            return
        (self.work_dir / "logs").mkdir(parents=True, exist_ok=True)
        config = self.work_dir / "server.properties"
        config.write_text("".join(f"{k}={v}\n" for k, v in self.properties.items()))
        if not self._formatted:
            format_command = self._java(
                "kafka.tools.StorageTool", "format", "-t", self.cluster_id, "-c", str(config)
            )
            subprocess.run(
                format_command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
            )
            self._formatted = True
        with (self.work_dir / "logs" / "stdout.log").open("ab") as stdout:
            self._process = subprocess.Popen(
                self._java("kafka.Kafka", str(config)),
                stdout=stdout,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._guardian = guard(self._process)

    def wait_listening(self, timeout_s: float = START_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout_s
        while not port_open(self.listen_port):
            if self._process is None or self._process.poll() is not None:
                self._process = None
                self._release_guardian()
                raise RuntimeError(f"{self.name} exited at start; see {self.log_file}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{self.name} did not listen within {timeout_s}s")
            time.sleep(0.2)

    def start(self) -> None:
        self.launch()
        self.wait_listening()

    def signal(self, signum: signal.Signals) -> None:
        """Send `signum` (SIGSTOP, SIGCONT, ...) to the running JVM."""
        if self._process is None:
            raise RuntimeError(f"{self.name} is not running")
        self._process.send_signal(signum)

    def kill(self) -> None:
        """SIGKILL: no flush, no controlled shutdown, as a crashed machine."""
        process, self._process = self._process, None
        if process is None:
            return
        process.send_signal(signal.SIGCONT)  # a stopped JVM must not outlive its kill
        process.kill()
        process.wait()
        self._release_guardian()
        self._wait_port_closed()

    def stop(self) -> None:
        """SIGTERM (a controlled shutdown), SIGKILL if it does not exit in time."""
        process, self._process = self._process, None
        if process is None:
            return
        process.send_signal(signal.SIGCONT)  # SIGTERM waits forever on a stopped process
        terminate(process, STOP_TIMEOUT_S)
        self._release_guardian()
        self._wait_port_closed()

    def _release_guardian(self) -> None:
        guardian, self._guardian = self._guardian, None
        release(guardian)

    def _wait_port_closed(self) -> None:
        # The listener must be gone before a restart can bind the same port again.
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while port_open(self.listen_port) and time.monotonic() < deadline:
            time.sleep(0.1)


class KafkaBroker:
    """One combined broker+controller node. `stop()` then `start()` restarts it on the same
    ports and data."""

    def __init__(self, work_dir: Path | None = None) -> None:
        self._owns_work_dir = work_dir is None
        self.work_dir = work_dir or Path(tempfile.mkdtemp(prefix="kafka-broker-"))
        self.port = free_port()
        self.controller_port = free_port()
        self._jvm = KafkaProcess(
            self.work_dir,
            self._properties(),
            cluster_id=new_cluster_id(),
            listen_port=self.port,
            name="Kafka broker",
        )
        self.libs = self._jvm.libs

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def log_file(self) -> Path:
        return self._jvm.log_file

    @property
    def _process(self) -> subprocess.Popen[bytes] | None:
        # the running JVM, for tests that signal it directly (SIGSTOP a broker mid-request)
        return self._jvm._process

    def _properties(self) -> dict[str, str]:
        return {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@127.0.0.1:{self.controller_port}",
            "listeners": (
                f"PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}"
            ),
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": str(self.work_dir / "data"),
            "num.partitions": "3",
            "auto.create.topics.enable": "true",
            "offsets.topic.replication.factor": "1",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
        }

    def start(self) -> None:
        self._jvm.start()

    def stop(self) -> None:
        self._jvm.stop()

    def close(self) -> None:
        self.stop()
        if self._owns_work_dir:
            shutil.rmtree(self.work_dir, ignore_errors=True)

    def __enter__(self) -> KafkaBroker:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def wait_for_stop_signal() -> None:
    stop_signals = {signal.SIGINT, signal.SIGTERM}
    signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)
    signal.sigwait(stop_signals)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run a local Kafka broker or cluster (KRaft).")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("fetch", help="download the broker's jars into the cache and exit")
    sub.add_parser("run", help="start one broker, print its address, stop it on Ctrl-C")
    cluster = sub.add_parser("cluster", help="a multi-broker cluster behind fault proxies")
    cluster_sub = cluster.add_subparsers(dest="cluster_command", required=True)
    cluster_run = cluster_sub.add_parser("run", help="start it, print the bootstrap address")
    cluster_run.add_argument("--nodes", type=int, default=3, help="brokers (default 3)")
    args = parser.parse_args(argv)
    if args.command == "fetch":
        print(ensure_jars())
        return 0
    if args.command == "cluster":
        # imported here: the cluster module imports this one
        from devtools.kafka_cluster import run_cluster

        return run_cluster(args.nodes)
    with KafkaBroker() as broker:
        print(f"kafka broker listening on {broker.bootstrap_servers} (logs: {broker.log_file})")
        sys.stdout.flush()
        wait_for_stop_signal()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
