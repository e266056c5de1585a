"""Start and stop the external processes of a run: each in its own process group, bounded waits.

Every process started here is stopped by `stop_group` (SIGTERM to the group, then SIGKILL).
Must not leave a process behind on any path, and must not wait without a deadline.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

STOP_TIMEOUT_S = 15.0
POLL_S = 0.1


class StartError(RuntimeError):
    """A process exited or did not become ready in time; the message points at its log."""


def start_group(
    argv: Sequence[str], *, log_path: Path, env: Mapping[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start `argv` as the leader of a new process group, output to `log_path`."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        return subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None,
            start_new_session=True,
        )


def stop_group(process: subprocess.Popen[bytes], timeout_s: float = STOP_TIMEOUT_S) -> int:
    """SIGTERM the whole group, wait up to `timeout_s`, then SIGKILL it. Returns the exit code."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=timeout_s)
    # Workers of the group may outlive their leader; none may outlive the run.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    return process.wait(timeout=timeout_s)


@contextlib.contextmanager
def running(
    argv: Sequence[str], *, log_path: Path, env: Mapping[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    process = start_group(argv, log_path=log_path, env=env)
    try:
        yield process
    finally:
        stop_group(process)


def wait_http_ok(
    url: str, process: subprocess.Popen[bytes], *, timeout_s: float, log_path: Path
) -> None:
    """Poll `url` until it answers 200; fail fast if `process` exits first."""
    deadline = time.monotonic() + timeout_s
    while True:
        if process.poll() is not None:
            raise StartError(f"{url}: process exited with {process.returncode}; see {log_path}")
        try:
            with urllib.request.urlopen(url, timeout=1.0) as response:  # noqa: S310  # loopback
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() > deadline:
            raise StartError(f"{url} not ready within {timeout_s:.0f}s; see {log_path}")
        time.sleep(POLL_S)


def tail(path: Path, max_bytes: int = 2_000) -> str:
    """The end of a log, for error messages."""
    try:
        with path.open("rb") as log:
            log.seek(max(0, path.stat().st_size - max_bytes))
            return log.read().decode("utf-8", "replace")
    except OSError:
        return ""
