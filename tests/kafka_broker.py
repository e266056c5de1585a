"""A real single-node Apache Kafka broker (KRaft) for tests, benchmarks and local use.

Maven fetches the broker's jars from Maven Central once into a cache; each broker gets a fresh
work directory, formats its storage, listens on free loopback ports and is stopped cleanly.
This module never fakes a broker: if Java or the jars are missing, starting fails loudly.

    python -m tests.kafka_broker run     # start one, print its address, stop on Ctrl-C
"""

from __future__ import annotations

import argparse
import base64
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

POM = Path(__file__).resolve().parent / "kafka" / "pom.xml"
KAFKA_VERSION = "4.1.1"
# A broker that has not opened its listener by then is treated as failed to start.
START_TIMEOUT_S = 90.0
# Kafka flushes and closes its logs on SIGTERM; a controlled shutdown of one node is quick.
STOP_TIMEOUT_S = 30.0
JVM_HEAP = "-Xmx512m"

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
    base = os.environ.get("EVENT_CAPTURE_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "event-capture"
    )
    return Path(base) / f"kafka-{KAFKA_VERSION}"


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


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _port_open(port: int) -> bool:
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


class KafkaBroker:
    """One broker process. `stop()` then `start()` restarts it on the same ports and data."""

    def __init__(self, work_dir: Path | None = None) -> None:
        self.libs = ensure_jars()
        self._owns_work_dir = work_dir is None
        self.work_dir = work_dir or Path(tempfile.mkdtemp(prefix="kafka-broker-"))
        self.port = free_port()
        self.controller_port = free_port()
        self._process: subprocess.Popen[bytes] | None = None
        self._formatted = False

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def log_file(self) -> Path:
        return self.work_dir / "logs" / "broker.log"

    def _java(self, main_class: str, *args: str) -> list[str]:
        java = shutil.which("java")
        if java is None:
            raise RuntimeError("Java 17 (`java`) is needed to run the Kafka broker")
        logs = self.work_dir / "logs"
        return [
            java,
            JVM_HEAP,
            "-XX:+UseSerialGC",
            "-Xshare:auto",
            f"-Dkafka.logs.dir={logs}",
            f"-Dlog4j2.configurationFile={self.libs / 'log4j2.yaml'}",
            "-cp",
            f"{self.libs}/*",
            main_class,
            *args,
        ]

    def _write_config(self) -> Path:
        properties = {
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
        config = self.work_dir / "server.properties"
        config.write_text("".join(f"{k}={v}\n" for k, v in properties.items()))
        return config

    def start(self) -> None:
        if self._process is not None:
            return
        self.work_dir.mkdir(parents=True, exist_ok=True)
        (self.work_dir / "logs").mkdir(exist_ok=True)
        config = self._write_config()
        if not self._formatted:
            cluster_id = new_cluster_id()
            subprocess.run(
                self._java(
                    "kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(config)
                ),
                check=True,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            self._formatted = True
        stdout = (self.work_dir / "logs" / "stdout.log").open("ab")
        self._process = subprocess.Popen(
            self._java("kafka.Kafka", str(config)),
            stdout=stdout,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        stdout.close()
        deadline = time.monotonic() + START_TIMEOUT_S
        while not _port_open(self.port):
            if self._process.poll() is not None:
                self._process = None
                raise RuntimeError(f"Kafka broker exited at start; see {self.log_file}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"Kafka broker did not listen within {START_TIMEOUT_S}s")
            time.sleep(0.2)

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        # The listener must be gone before a restart can bind the same port again.
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while _port_open(self.port) and time.monotonic() < deadline:
            time.sleep(0.1)

    def close(self) -> None:
        self.stop()
        if self._owns_work_dir:
            shutil.rmtree(self.work_dir, ignore_errors=True)

    def __enter__(self) -> KafkaBroker:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run a local single-node Kafka broker (KRaft).")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("fetch", help="download the broker's jars into the cache and exit")
    sub.add_parser("run", help="start a broker, print its address, stop it on Ctrl-C")
    args = parser.parse_args(argv)
    if args.command == "fetch":
        print(ensure_jars())
        return 0
    with KafkaBroker() as broker:
        print(f"kafka broker listening on {broker.bootstrap_servers} (logs: {broker.log_file})")
        sys.stdout.flush()
        stop_signals = {signal.SIGINT, signal.SIGTERM}
        signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)
        signal.sigwait(stop_signals)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
