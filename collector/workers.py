"""Run several collector processes on one port (SO_REUSEPORT), so every core takes requests.

The parent only forks, forwards SIGTERM/SIGINT/SIGHUP and restarts a worker that died; it never
serves requests itself, and builds nothing before the fork that a worker would share. It owns
the metrics directory of prometheus_client's multiprocess mode, so /metrics in any worker sums
all of them: a fresh one per run, removed at exit.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Callable

from collector.metrics import enable_multiprocess, worker_exited

log = logging.getLogger(__name__)

# A worker that keeps dying is restarted at most this often.
RESTART_BACKOFF_S = 1.0


def run_workers(count: int, serve_one: Callable[[int], int]) -> int:
    """Fork `count` workers running `serve_one(index)`; return when all have exited."""
    # Fresh on every start: files left by an earlier run would be summed into this one's.
    metrics_dir = tempfile.mkdtemp(prefix="capture-metrics-")
    try:
        enable_multiprocess(metrics_dir)
        return _supervise(count, serve_one, metrics_dir)
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)


def _supervise(count: int, serve_one: Callable[[int], int], metrics_dir: str) -> int:
    children: dict[int, int] = {}  # pid -> worker index
    stopping = False

    def spawn(index: int) -> None:
        pid = os.fork()
        if pid == 0:  # the worker
            for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                signal.signal(signum, signal.SIG_DFL)  # the worker's app installs its own
            code = 1
            try:
                code = serve_one(index)
            finally:
                os._exit(code)
        children[pid] = index

    def stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for pid in list(children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    def reload(signum: int, _frame: object) -> None:
        for pid in list(children):  # each worker reloads its own tracking plan
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGHUP)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGHUP, reload)
    for first in range(count):
        spawn(first)
    worst = 0
    last_restart = 0.0
    while children:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        if pid not in children:
            continue
        index = children.pop(pid)
        worker_exited(pid, metrics_dir)
        code = os.waitstatus_to_exitcode(status)
        if stopping:
            worst = max(worst, code if code > 0 else 0)
            continue
        log.error("collector worker %d (pid %d) exited with %d; restarting it", index, pid, code)
        time.sleep(max(0.0, last_restart + RESTART_BACKOFF_S - time.monotonic()))
        last_restart = time.monotonic()
        spawn(index)
    return worst
