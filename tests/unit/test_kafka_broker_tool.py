"""The Kafka dev tool's own helpers (devtools/kafka.py), where a slip costs a flaky CI run."""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from devtools.kafka import new_cluster_id
from devtools.processes import guard, release
from tests.waiting import process_alive, wait_process_gone

ROOT = Path(__file__).resolve().parents[2]


def test_cluster_ids_never_look_like_an_option() -> None:
    # one raw id in 64 starts with `-`; 2,000 draws meet one with certainty if unfiltered
    ids = {new_cluster_id() for _ in range(2_000)}
    assert len(ids) == 2_000
    assert not any(cluster_id.startswith("-") for cluster_id in ids)
    assert all(len(base64.urlsafe_b64decode(cluster_id + "==")) == 16 for cluster_id in ids)


def test_a_guarded_process_dies_with_the_python_process_that_started_it() -> None:
    # what a SIGKILLed test run does to its brokers: the parent goes, the JVM must go too
    parent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                """
                import subprocess, sys, time
                from devtools.processes import guard
                child = subprocess.Popen(["sleep", "120"], start_new_session=True)
                guardian = guard(child)
                print(child.pid, guardian.pid, flush=True)
                time.sleep(120)
                """
            ),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
    )
    assert parent.stdout is not None
    child_pid, guardian_pid = map(int, parent.stdout.readline().split())
    try:
        assert process_alive(child_pid)
        parent.kill()
        parent.wait()
        assert wait_process_gone(child_pid), "the guarded process outlived its parent"
        assert wait_process_gone(guardian_pid)
    finally:
        parent.stdout.close()
        for pid in (child_pid, guardian_pid):
            if process_alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_a_released_guardian_leaves_the_process_alone() -> None:
    child = subprocess.Popen(["sleep", "120"], start_new_session=True)
    try:
        guardian = guard(child)
        release(guardian)
        time.sleep(0.3)
        assert child.poll() is None
    finally:
        child.kill()
        child.wait()
