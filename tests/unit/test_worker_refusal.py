"""A worker that refuses to start (exit 2) stops the supervisor, not a restart loop (issue 12)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from devtools.ports import free_port

# Runs in a fresh interpreter: the supervisor forks and takes SIGTERM/SIGINT/SIGHUP.
SCRIPT = textwrap.dedent(
    """
    import sys, time
    from collector.workers import run_workers

    def serve_one(index):
        if index == 0:
            print("refused", flush=True)
            return 2  # what `capture serve` answers for a setting that cannot work
        time.sleep(60)  # a healthy worker: serves until the parent's SIGTERM
        return 0

    sys.exit(run_workers(2, serve_one))
    """
)


def test_a_worker_refusing_to_start_stops_all_with_exit_2() -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        capture_output=True,
        text=True,
        timeout=30,  # restarting the refused worker every second would never end
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert done.stdout.count("refused") == 1  # started once, never restarted


# `capture serve` with the file sink's start or stop failing with OSError; the parent picks the
# port and stops the collector with SIGTERM once it listens.
SERVE = textwrap.dedent(
    """
    import os, signal, socket, sys, threading, time
    from collector import cli
    from collector.sinks.file import FileSink

    data_dir, port, failing = sys.argv[1], int(sys.argv[2]), sys.argv[3]

    async def broken(self, *args, **kwargs):
        raise OSError(5, "Input/output error")

    setattr(FileSink, failing, broken)

    def stop_once_listening():
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=stop_once_listening, daemon=True).start()
    sys.exit(cli.main(["serve", "--port", str(port), "--data-dir", data_dir]))
    """
)


def serve_with_a_failing_sink(tmp_path: Path, failing: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAPTURE_")}
    return subprocess.run(
        [sys.executable, "-c", SERVE, str(tmp_path / "data"), str(free_port()), failing],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_an_error_after_serving_is_a_crash_not_a_refused_start(tmp_path: Path) -> None:
    # exit 2 would make a worker supervisor stop every worker instead of restarting this one
    done = serve_with_a_failing_sink(tmp_path, "stop")  # the flush at shutdown fails
    assert done.returncode == 1, done.stderr
    assert "cannot start" not in done.stderr
    assert "stopped by an error after it started serving" in done.stderr
    assert "Input/output error" in done.stderr


def test_an_error_before_listening_is_still_a_refused_start(tmp_path: Path) -> None:
    done = serve_with_a_failing_sink(tmp_path, "start")
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines()[-1] == (
        "capture serve: cannot start: [Errno 5] Input/output error"
    )


# A supervisor whose workers print their pid and sleep; `watch` disables prctl, so the
# portable fallback (a thread watching the parent id) is what must stop them.
ORPHANS = textwrap.dedent(
    """
    import os, sys, time
    from collector import workers

    if sys.argv[1] == "watch":
        workers._set_parent_death_signal = lambda signum: False
        workers.PARENT_WATCH_S = 0.05

    def serve_one(index):
        os.write(1, b"%d\\n" % os.getpid())  # one write: the workers' lines never interleave
        time.sleep(120)
        return 0

    sys.exit(workers.run_workers(2, serve_one))
    """
)


def running(pid: int) -> bool:
    """A zombie (dead, not yet reaped by its new parent) counts as gone."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rpartition(")")[2].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("how", ["prctl", "watch"])
def test_workers_exit_when_the_supervisor_is_killed(how: str) -> None:
    parent = subprocess.Popen(
        [sys.executable, "-c", ORPHANS, how], stdout=subprocess.PIPE, text=True
    )
    assert parent.stdout is not None
    try:
        pids = [int(parent.stdout.readline()) for _ in range(2)]
    finally:
        parent.kill()  # SIGKILL: the supervisor runs no handler, forwards nothing
        parent.wait(timeout=30)
        parent.stdout.close()
    deadline = time.monotonic() + 30
    while orphans := [pid for pid in pids if running(pid)]:
        if time.monotonic() > deadline:
            for pid in orphans:
                os.kill(pid, signal.SIGKILL)
            raise AssertionError(f"workers {orphans} outlived their killed supervisor")
        time.sleep(0.05)
