"""Dev tool: a real Prometheus (Debian's package, `scripts/ops-deps.sh`) scraping collectors.

Each server gets its own config and TSDB in a temporary directory and listens on a free
loopback port; `query` goes through the HTTP API. It never fakes Prometheus: without the
binary, starting fails loudly.

    python -m devtools.prometheus run --target 127.0.0.1:8080   # address printed, Ctrl-C stops
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from devtools.ports import free_port
from devtools.processes import guard, release, terminate

ALERTS = Path(__file__).resolve().parent.parent / "deploy" / "prometheus" / "alerts.yml"
# Prometheus replays no WAL on a fresh TSDB; on a loaded 2-core machine it is ready in seconds.
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 15.0
QUERY_TIMEOUT_S = 10.0


class PromQLError(Exception):
    """The HTTP API refused a query (a parse or evaluation error); the message is its own."""


class PrometheusServer:
    """Scrapes `targets` (job name -> host:port list) every `scrape_interval_s`, evaluating
    `rule_files` as often; `stop()` ends the process and removes its directory."""

    def __init__(
        self,
        targets: Mapping[str, Sequence[str]],
        *,
        scrape_interval_s: float = 1.0,
        rule_files: Sequence[Path] = (),
    ) -> None:
        if shutil.which("prometheus") is None:
            raise RuntimeError("`prometheus` is not on PATH; run scripts/ops-deps.sh")
        self.work_dir = Path(tempfile.mkdtemp(prefix="prometheus-"))
        self.port = free_port()
        interval = f"{round(scrape_interval_s * 1000)}ms"  # Prometheus durations are integers
        self._config = {
            "global": {"scrape_interval": interval, "evaluation_interval": interval},
            "rule_files": [str(path) for path in rule_files],
            "scrape_configs": [
                {"job_name": job, "static_configs": [{"targets": list(addresses)}]}
                for job, addresses in targets.items()
            ],
        }
        self._process: subprocess.Popen[bytes] | None = None
        self._guardian: subprocess.Popen[bytes] | None = None  # kills it if we die first

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_file(self) -> Path:
        return self.work_dir / "prometheus.log"

    def start(self) -> None:
        config = self.work_dir / "prometheus.yml"
        config.write_text(json.dumps(self._config))  # JSON is YAML
        with self.log_file.open("ab") as log:
            self._process = subprocess.Popen(
                [
                    "prometheus",
                    f"--config.file={config}",
                    f"--storage.tsdb.path={self.work_dir / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._guardian = guard(self._process)
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self._ready():
            if self._process.poll() is not None:
                self._process = None
                release(self._guardian)
                self._guardian = None
                raise RuntimeError(f"prometheus exited at start; see {self.log_file}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"prometheus not ready within {START_TIMEOUT_S}s")
            time.sleep(0.1)

    def _ready(self) -> bool:
        try:
            # S310: a loopback http:// URL this class builds itself
            ready_url = f"{self.url}/-/ready"
            with urllib.request.urlopen(ready_url, timeout=1) as response:  # noqa: S310
                return bool(response.status == 200)
        except OSError:
            return False

    def api(self, path: str, **params: str) -> Any:
        """The `data` of a GET on /api/v1/<path>; PromQLError when the API says error."""
        url = f"{self.url}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=QUERY_TIMEOUT_S) as response:  # noqa: S310
                body = json.load(response)
        except urllib.error.HTTPError as exc:  # 400/422 carry the error in a JSON body
            body = json.load(exc)
        if body.get("status") != "success":
            raise PromQLError(f"{body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query now: its series (a vector's samples; a scalar is one series)."""
        data = self.api("query", query=expr)
        if data["resultType"] in ("scalar", "string"):
            return [{"metric": {}, "value": data["result"]}]
        result: list[dict[str, Any]] = data["result"]
        return result

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            terminate(process, STOP_TIMEOUT_S)
        guardian, self._guardian = self._guardian, None
        release(guardian)
        shutil.rmtree(self.work_dir, ignore_errors=True)

    def __enter__(self) -> PrometheusServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m devtools.prometheus")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="scrape collectors with the alerts of deploy/")
    run.add_argument("--target", action="append", required=True, help="host:port of a collector")
    args = parser.parse_args(argv)
    with PrometheusServer({"capture": args.target}, rule_files=[ALERTS]) as server:
        print(server.url, flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            signal.pause()


if __name__ == "__main__":
    main()
