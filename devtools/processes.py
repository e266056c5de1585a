"""Child processes of the dev tools (Kafka JVMs, HAProxy, Prometheus, Chromium): stopping them,
and making sure they do not outlive the Python process that started them. Starts nothing itself.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from typing import Protocol


class _Child(Protocol):
    @property
    def pid(self) -> int: ...


def terminate(process: subprocess.Popen[bytes], timeout_s: float) -> None:
    """SIGTERM, then SIGKILL if `process` has not exited within `timeout_s`."""
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


# The guardian's program: wait for end-of-file on stdin, then SIGKILL the guarded process group.
_GUARDIAN = (
    "import os, signal, sys\n"
    "sys.stdin.buffer.read()\n"
    "try:\n"
    "    os.killpg(int(sys.argv[1]), signal.SIGKILL)\n"
    "except ProcessLookupError:\n"
    "    pass\n"
)


def guard(process: _Child) -> subprocess.Popen[bytes]:
    """A guardian that SIGKILLs `process` (started with `start_new_session`) once this Python
    process is gone, however it went: a killed test run must not leave JVMs holding ports and
    gigabytes. It reads a pipe only this process holds, and end-of-file comes when this
    process dies. (Not PR_SET_PDEATHSIG: that fires when the *thread* that started the child
    ends, and nodes are restarted from `asyncio.to_thread` workers.) End the guardian with
    `release()` once `process` has been stopped the normal way. `process` is a
    subprocess.Popen or an asyncio subprocess: only its pid is read.
    """
    return subprocess.Popen(
        [sys.executable, "-I", "-c", _GUARDIAN, str(process.pid)],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # a Ctrl-C meant for this process must not end the guardian
    )


def release(guardian: subprocess.Popen[bytes] | None) -> None:
    """End a guardian without letting it kill (its process has exited already)."""
    if guardian is None:
        return
    guardian.kill()
    guardian.wait()
    if guardian.stdin is not None:
        guardian.stdin.close()
