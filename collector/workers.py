"""Run several collector processes on one port (SO_REUSEPORT), so every core takes requests.

The parent only forks, forwards SIGTERM/SIGINT/SIGHUP and restarts a worker that died; it never
serves requests itself, and builds nothing before the fork that a worker would share. Workers
never outlive it: each is sent SIGTERM when the parent dies, however it died. It owns
the metrics directory of prometheus_client's multiprocess mode, so /metrics in any worker sums
all of them: a fresh one per run, removed at exit.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable

from collector.metrics import enable_multiprocess, worker_exited

log = logging.getLogger(__name__)

# A worker that keeps dying is restarted at most this often.
RESTART_BACKOFF_S = 1.0
# What a worker exits with when it refused to start (`capture serve`'s exit code for a bad
# setting, e.g. the port taken after the parent's check): restarting it would fail the same
# way every second, so the parent stops the others and exits with it.
START_REFUSED = 2
# prctl(2): the signal a process gets when the thread that forked it dies (Linux).
PR_SET_PDEATHSIG = 1
# How often the portable fallback looks whether the parent is still there.
PARENT_WATCH_S = 1.0


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

    parent = os.getpid()

    def spawn(index: int) -> None:
        pid = os.fork()
        if pid == 0:  # the worker
            code = 1
            try:
                for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                    signal.signal(signum, signal.SIG_DFL)  # the worker's app installs its own
                exit_with_parent(parent)
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
        if code == START_REFUSED:
            log.error("collector worker %d (pid %d) refused to start; stopping", index, pid)
            stop(signal.SIGTERM, None)
            worst = START_REFUSED
            continue
        log.error("collector worker %d (pid %d) exited with %d; restarting it", index, pid, code)
        time.sleep(max(0.0, last_restart + RESTART_BACKOFF_S - time.monotonic()))
        last_restart = time.monotonic()
        spawn(index)
    return worst


def exit_with_parent(parent: int) -> None:
    """SIGTERM this worker (a graceful drain) once `parent` is gone, however it died.

    A supervisor killed with SIGKILL runs no handler: without this its workers would keep
    serving as orphans, holding the port, and a new `capture serve` would share it with them.
    """
    if not _set_parent_death_signal(signal.SIGTERM):
        threading.Thread(
            target=_watch_parent, args=(parent,), name="capture-parent-watch", daemon=True
        ).start()
    # The parent may have died between the fork and here, before the signal was armed.
    if os.getppid() != parent:
        os.kill(os.getpid(), signal.SIGTERM)


def _set_parent_death_signal(signum: int) -> bool:
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    return bool(libc.prctl(PR_SET_PDEATHSIG, int(signum), 0, 0, 0) == 0)


def _watch_parent(parent: int) -> None:
    # An orphan is re-parented (to init or a subreaper), so its parent id changes.
    while os.getppid() == parent:
        time.sleep(PARENT_WATCH_S)
    os.kill(os.getpid(), signal.SIGTERM)
