"""The broker's own ceiling: Kafka's ProducerPerformance tool against the same broker, same run.

Runs `org.apache.kafka.tools.ProducerPerformance` from the broker's jar directory with
acks=all and parses its final summary line. Must not reconfigure or restart the broker.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from benchmarks import procs

MAIN_CLASS = "org.apache.kafka.tools.ProducerPerformance"
JVM_HEAP = "-Xmx512m"
# "500000 records sent, 98712.3 records/sec (41.52 MB/sec), 301.2 ms avg latency,
#  811.0 ms max latency, 290 ms 50th, 700 ms 95th, 790 ms 99th, 809 ms 99.9th."
SUMMARY = re.compile(
    r"(?P<records>\d+) records sent, (?P<records_per_s>[\d.]+) records/sec "
    r"\((?P<mib_per_s>[\d.]+) MB/sec\), (?P<avg_ms>[\d.]+) ms avg latency, "
    r"(?P<max_ms>[\d.]+) ms max latency, (?P<p50_ms>\d+) ms 50th, (?P<p95_ms>\d+) ms 95th, "
    r"(?P<p99_ms>\d+) ms 99th, (?P<p999_ms>\d+) ms 99.9th"
)


def parse_summary(output: str) -> dict[str, float] | None:
    """The last summary line of the tool's output (earlier lines are 5-second windows)."""
    matches = list(SUMMARY.finditer(output))
    if not matches:
        return None
    return {key: float(value) for key, value in matches[-1].groupdict().items()}


def run(
    *,
    libs: Path,
    bootstrap_servers: str,
    topic: str,
    num_records: int,
    record_bytes: int,
    work_dir: Path,
    extra_props: dict[str, str] | None = None,
    timeout_s: float = 300.0,
) -> dict[str, Any]:
    java = shutil.which("java")
    if java is None:
        raise RuntimeError("java is needed for Kafka's ProducerPerformance")
    props = {"bootstrap.servers": bootstrap_servers, "acks": "all", **(extra_props or {})}
    log_dir = work_dir / "producer-perf-logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    argv = [
        java,
        JVM_HEAP,
        f"-Dkafka.logs.dir={log_dir}",
        f"-Dlog4j2.configurationFile={libs / 'log4j2.yaml'}",
        "-cp",
        f"{libs}/*",
        MAIN_CLASS,
        "--topic",
        topic,
        "--num-records",
        str(num_records),
        "--record-size",
        str(record_bytes),
        "--throughput",
        "-1",
        "--producer-props",
        *(f"{k}={v}" for k, v in props.items()),
    ]
    log_path = work_dir / f"producer-perf-{topic}.log"
    started = time.monotonic()
    process = procs.start_group(argv, log_path=log_path)
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        pass
    finally:
        exit_code = procs.stop_group(process)
    output = log_path.read_text(errors="replace")
    summary = parse_summary(output)
    if exit_code != 0 or summary is None:
        raise RuntimeError(f"ProducerPerformance failed ({exit_code}): {procs.tail(log_path)}")
    return {
        "topic": topic,
        "num_records": num_records,
        "record_bytes": record_bytes,
        "producer_props": {k: v for k, v in props.items() if k != "bootstrap.servers"},
        "wall_s": round(time.monotonic() - started, 2),
        **summary,
    }
