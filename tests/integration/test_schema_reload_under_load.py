"""`capture serve` reloads its tracking plan on SIGHUP while taking open-loop load.

Loopback only and bounded: ~2,000 events/s for ~6 s from one load generator process.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import msgspec

from benchmarks.loadgen import LoadGenerator, PoolSpec, StepResult, StepSpec
from devtools.ports import free_port
from event_schemas import PLAN_DIR, load_registry
from tests.factories import batch_body, page_viewed
from tests.waiting import wait_ready

CAPTURE = Path(sys.executable).with_name("capture")
RATE_EPS = 2_000
DURATION_S = 6.0

# page_viewed v2: v1 plus an optional `section` (BACKWARD compatible)
PAGE_VIEWED_V2 = {
    "type": "object",
    "properties": {
        "path": {"type": "string", "pattern": "^/", "maxLength": 2048},
        "title": {"type": "string", "maxLength": 512},
        "referrer": {"type": ["string", "null"], "maxLength": 2048, "x-pii": "hash"},
        "section": {"type": "string", "maxLength": 64},
    },
    "required": ["path"],
    "additionalProperties": False,
}
# a keyword the loader does not implement
BROKEN_V3 = {"type": "object", "properties": {"path": {"oneOf": [{"type": "string"}]}}}


def metric(port: int, line_start: str) -> float | None:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        text: str = reply.read().decode()
    for line in text.splitlines():
        if line.startswith(line_start + " "):
            return float(line.rsplit(" ", 1)[1])
    return None


def reloads(port: int, outcome: str) -> float:
    return metric(port, f'capture_schema_reloads_total{{outcome="{outcome}"}}') or 0.0


def wait_for_reloads(port: int, ok: float, failed: float, *, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while (reloads(port, "ok"), reloads(port, "failed")) != (ok, failed):
        assert time.monotonic() < deadline, (
            f"reloads never reached ok={ok} failed={failed}: "
            f"ok={reloads(port, 'ok')} failed={reloads(port, 'failed')}"
        )
        time.sleep(0.05)


def post(port: int, *events: dict[str, Any]) -> tuple[int, Any]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/batch",
        data=batch_body(*events),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=5) as reply:
        return reply.status, msgspec.json.decode(reply.read())


def test_sighup_reloads_the_plan_under_load_without_failing_a_request(tmp_path: Path) -> None:
    plan = tmp_path / "plan"
    shutil.copytree(PLAN_DIR, plan)
    port = free_port()
    env = {
        **os.environ,
        "CAPTURE_PORT": str(port),
        "CAPTURE_SINK": "file",
        "CAPTURE_DATA_DIR": str(tmp_path / "data"),
        "CAPTURE_SCHEMAS_DIR": str(plan),
    }
    env.pop("CAPTURE_KAFKA_BOOTSTRAP_SERVERS", None)
    log_path = tmp_path / "collector.log"
    with log_path.open("wb") as log_file:
        collector = subprocess.Popen(
            [str(CAPTURE), "serve"], env=env, cwd=tmp_path, stdout=log_file, stderr=log_file
        )
    try:
        wait_ready(port, collector)
        v2 = page_viewed(version=2, properties={"path": "/a", "section": "home"})
        status, body = post(port, v2)
        assert status == 200
        assert [r["reason"] for r in body["rejected"]] == ["unknown_event"]

        with LoadGenerator(workers=1, pool=PoolSpec(bodies=32, events_per_body=20)) as load:
            results: list[StepResult] = []
            spec = StepSpec(
                url=f"http://127.0.0.1:{port}/v1/batch",
                duration_s=DURATION_S,
                rate_eps=RATE_EPS,
                max_requests=1_000,
                request_timeout_s=5.0,
            )
            runner = threading.Thread(target=lambda: results.append(load.run(spec)))
            runner.start()
            try:
                time.sleep(1.0)
                # 1: nothing changed, the same plan again
                collector.send_signal(signal.SIGHUP)
                wait_for_reloads(port, ok=1, failed=0)
                # 2: a new compatible version
                (plan / "page_viewed" / "v2.json").write_bytes(msgspec.json.encode(PAGE_VIEWED_V2))
                collector.send_signal(signal.SIGHUP)
                wait_for_reloads(port, ok=2, failed=0)
                assert post(port, v2) == (200, {"accepted": 1, "rejected": []})
                # 3: a broken file: refused, the plan with v2 keeps serving
                (plan / "page_viewed" / "v3.json").write_bytes(msgspec.json.encode(BROKEN_V3))
                collector.send_signal(signal.SIGHUP)
                wait_for_reloads(port, ok=2, failed=1)
                assert post(port, v2)[1] == {"accepted": 1, "rejected": []}
                v3 = page_viewed(version=3)
                assert [r["reason"] for r in post(port, v3)[1]["rejected"]] == ["unknown_event"]
                # 4: the broken file gone: the plan loads again
                (plan / "page_viewed" / "v3.json").unlink()
                collector.send_signal(signal.SIGHUP)
                wait_for_reloads(port, ok=3, failed=1)
            finally:
                runner.join(timeout=DURATION_S + 60)
        assert not runner.is_alive()
        [result] = results
        # every request of the load answered 200, across all four reloads
        assert result.statuses == {"200": result.requests}, result.summary()
        assert result.requests >= RATE_EPS * DURATION_S / 20 * 0.9
        assert result.accepted_events > 0
        assert metric(port, 'capture_schema_reloads_total{outcome="failed"}') == 1.0
        assert metric(port, "capture_schema_event_versions") == len(load_registry(plan))
        assert post(port, v2)[1] == {"accepted": 1, "rejected": []}
    finally:
        collector.terminate()
        code = collector.wait(timeout=30)
    log = log_path.read_text()
    assert code == 0, log
    [refused] = [line for line in log.splitlines() if "reload refused" in line]
    assert "v3.json" in refused
    assert "oneOf" in refused
