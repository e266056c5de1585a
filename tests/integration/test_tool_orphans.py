"""HAProxy, Prometheus and Chromium started by the dev tools die with the Python process that
started them: a SIGKILLed test run must not leave them holding ports (one orphaned Chromium
was found that way). The Kafka JVMs' guardian has its own test (test_kafka_broker_tool.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.waiting import process_alive, wait_process_gone

ROOT = Path(__file__).resolve().parents[2]

STARTERS = {
    "haproxy": """
        from devtools.haproxy import HAProxy
        from devtools.ports import free_port
        tool = HAProxy([f"127.0.0.1:{free_port()}"])
        tool.start()
        print(tool.pid, flush=True)
    """,
    "prometheus": """
        from devtools.prometheus import PrometheusServer
        tool = PrometheusServer({"none": []})
        tool.start()
        print(tool._process.pid, flush=True)
    """,
    "chromium": """
        import asyncio
        from devtools.chromium import Chromium
        async def main():
            tool = Chromium()
            await tool.start()
            print(tool._process.pid, flush=True)
            await asyncio.sleep(120)
        asyncio.run(main())
    """,
}


@pytest.mark.parametrize("tool", sorted(STARTERS))
def test_the_tool_dies_with_the_process_that_started_it(tool: str) -> None:
    code = textwrap.dedent(STARTERS[tool]) + "\nimport time\ntime.sleep(120)\n"
    parent = subprocess.Popen(
        [sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert parent.stdout is not None
    line = parent.stdout.readline()
    if not line:
        parent.wait()
        assert parent.stderr is not None
        pytest.fail(f"{tool} did not start: {parent.stderr.read().decode()[-2000:]}")
    pid = int(line)
    try:
        assert process_alive(pid)
        parent.kill()
        parent.wait()
        assert wait_process_gone(pid, timeout_s=15), f"{tool} outlived the process that started it"
    finally:
        parent.stdout.close()
        if parent.stderr is not None:
            parent.stderr.close()
        if process_alive(pid):
            os.killpg(pid, signal.SIGKILL)
