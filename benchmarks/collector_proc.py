"""Run `capture serve` as a subprocess for a benchmark stage: free loopback port, own data dir.

Configures the collector only through its CAPTURE_* variables, like a deployment would, and
stops the whole process group afterwards. Must not import or patch collector internals.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from benchmarks import procs
from devtools.ports import free_port

READY_TIMEOUT_S = 60.0


@dataclass(frozen=True, slots=True)
class Collector:
    url: str  # base URL, no trailing slash
    process: subprocess.Popen[bytes]
    log_path: Path
    env: dict[str, str]  # the CAPTURE_* variables it was started with

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def batch_url(self) -> str:
        return self.url + "/v1/batch"


def capture_command() -> list[str]:
    script = Path(sys.executable).parent / "capture"
    if script.exists():
        return [str(script), "serve"]
    return [sys.executable, "-m", "collector.cli", "serve"]


def collector_env(
    *, port: int, sink: str, data_dir: Path, bootstrap_servers: str | None, workers: int | None
) -> dict[str, str]:
    env = {
        "CAPTURE_HOST": "127.0.0.1",
        "CAPTURE_PORT": str(port),
        "CAPTURE_SINK": sink,
        "CAPTURE_DATA_DIR": str(data_dir),
        "CAPTURE_LOG_LEVEL": "WARNING",
    }
    if bootstrap_servers is not None:
        env["CAPTURE_KAFKA_BOOTSTRAP_SERVERS"] = bootstrap_servers
    if workers is not None:
        env["CAPTURE_WORKERS"] = str(workers)
    return env


@contextmanager
def run_collector(
    *,
    sink: str,
    work_dir: Path,
    bootstrap_servers: str | None = None,
    workers: int | None = None,
) -> Iterator[Collector]:
    """Start a collector, wait for /readyz, yield it, and stop it (its workers too)."""
    port = free_port()
    capture_env = collector_env(
        port=port,
        sink=sink,
        data_dir=work_dir / "data",
        bootstrap_servers=bootstrap_servers,
        workers=workers,
    )
    # The harness's own CAPTURE_* environment must not leak into what is measured.
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAPTURE_")} | capture_env
    log_path = work_dir / "collector.log"
    with procs.running(capture_command(), log_path=log_path, env=env) as process:
        url = f"http://127.0.0.1:{port}"
        procs.wait_http_ok(url + "/readyz", process, timeout_s=READY_TIMEOUT_S, log_path=log_path)
        yield Collector(url=url, process=process, log_path=log_path, env=capture_env)
