"""`capture replay` (issue #7) on a real terminal: the progress line goes to a tty only.

Runs the CLI in a subprocess whose stderr is a pseudo-terminal (`pty.openpty()`) and whose
stdout is a pipe: the progress line must appear on the terminal, never in the piped JSON
lines; with stderr piped too, no progress line at all.
"""

from __future__ import annotations

import asyncio
import json
import os
import pty
import subprocess
import sys
from pathlib import Path

import pytest

from tests.unit.test_replay_file import FileBackend, event_record

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="needs a POSIX pty")

RECORDS = 5
# Bounds a hang of the subprocess; not a speed check.
RUN_BOUND_S = 60


def replay_command(backend: FileBackend) -> list[str]:
    topic = backend.prefix + "track_played"
    return [
        sys.executable,
        "-m",
        "collector.cli",
        "replay",
        *backend.source_args(),
        "--topic",
        topic,
    ]


def read_all(fd: int) -> bytes:
    """Everything written to the pty until the child closed it (EIO on Linux at the end)."""
    chunks = []
    while True:
        try:
            chunk = os.read(fd, 4096)
        except OSError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def run_on_tty(command: list[str]) -> tuple[int, bytes, bytes]:
    """Run `command` with stderr on a new pty and stdout piped: exit code, tty, stdout."""
    main_fd, child_fd = pty.openpty()
    try:
        child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=child_fd)
        os.close(child_fd)
        child_fd = -1
        terminal = read_all(main_fd)
        stdout, _ = child.communicate(timeout=RUN_BOUND_S)
    finally:
        os.close(main_fd)
        if child_fd != -1:
            os.close(child_fd)
    return child.returncode, terminal, stdout


async def test_progress_on_a_terminal_not_in_piped_stdout(file_backend: FileBackend) -> None:
    records = [event_record(file_backend.prefix, i) for i in range(RECORDS)]
    await file_backend.write(records)
    ids = [json.loads(r.value)["event_id"] for r in records]

    code, terminal, stdout = await asyncio.to_thread(run_on_tty, replay_command(file_backend))
    assert code == 0, terminal
    shown = terminal.decode()
    assert f"replay: {RECORDS}" in shown  # the final redraw of the progress line
    assert "rec/s" in shown
    assert "replay summary" in shown
    # stdout holds exactly the JSON lines, no progress text
    assert [json.loads(line)["event_id"] for line in stdout.splitlines()] == ids

    piped = await asyncio.to_thread(
        subprocess.run,
        replay_command(file_backend),
        capture_output=True,
        timeout=RUN_BOUND_S,
        check=True,
    )
    assert b"replay summary" in piped.stderr
    assert b"rec/s" not in piped.stderr  # no progress line without a terminal
    assert b"\r" not in piped.stderr
    assert piped.stdout == stdout


@pytest.fixture
def file_backend(tmp_path: Path) -> FileBackend:
    return FileBackend(tmp_path / "data")
