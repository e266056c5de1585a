"""Run several collector processes on one port (SO_REUSEPORT), so every core takes requests.

The parent only forks, forwards SIGTERM/SIGINT/SIGHUP and restarts a worker that died; it never
serves requests itself, and builds nothing before the fork that a worker would share.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

# A worker that keeps dying is restarted at most this often.
RESTART_BACKOFF_S = 1.0


def run_workers(count: int, serve_one: Callable[[int], int]) -> int:
    """Fork `count` workers running `serve_one(index)`; return when all have exited."""
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
        code = os.waitstatus_to_exitcode(status)
        if stopping:
            worst = max(worst, code if code > 0 else 0)
            continue
        log.error("collector worker %d (pid %d) exited with %d; restarting it", index, pid, code)
        time.sleep(max(0.0, last_restart + RESTART_BACKOFF_S - time.monotonic()))
        last_restart = time.monotonic()
        spawn(index)
    return worst
