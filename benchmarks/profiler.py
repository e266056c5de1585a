"""Sample a running server with py-spy while a step loads it, and summarise where time went.

Writes collapsed stacks (speedscope and flamegraph.pl read them) and ranks functions by self
and inclusive samples. Only observes (`--nonblocking`, no pauses); must not change the target.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks import procs

SAMPLE_RATE_HZ = 200
TOP_N = 15
_LINE_NO = re.compile(r":\d+\)$")
# Inclusive time is listed for these packages' functions only (the rest is plumbing).
PROJECT_PACKAGES = ("collector/", "event_schemas/", "capture_sdk/")


def py_spy() -> str | None:
    local = Path(sys.executable).parent / "py-spy"
    return str(local) if local.exists() else shutil.which("py-spy")


def start(pid: int, duration_s: float, out_path: Path) -> Callable[[], dict[str, Any]]:
    """Start sampling `pid` (and its children) now; the returned call waits and summarises."""
    binary = py_spy()
    if binary is None:
        return lambda: {"error": "py-spy not installed (it is in the bench dependency group)"}
    argv = [
        binary,
        "record",
        "--pid",
        str(pid),
        "--duration",
        str(max(1, round(duration_s))),
        "--rate",
        str(SAMPLE_RATE_HZ),
        "--format",
        "raw",
        "--subprocesses",
        "--nonblocking",
        "--output",
        str(out_path),
    ]
    log_path = out_path.with_suffix(".log")
    process = procs.start_group(argv, log_path=log_path)

    def finish() -> dict[str, Any]:
        try:
            process.wait(timeout=duration_s + 30)
        except subprocess.TimeoutExpired:
            pass
        finally:
            procs.stop_group(process)
        if not out_path.exists():
            return {"error": f"py-spy wrote no profile; see {log_path}: {procs.tail(log_path)}"}
        out_path.write_text(strip_process_frames(out_path.read_text()))
        return {"file": out_path.name, **summarise(out_path.read_text())}

    return finish


def strip_process_frames(collapsed: str) -> str:
    """Drop py-spy's leading `process N:"<command line>"` frame: it holds this machine's paths."""
    lines = []
    for line in collapsed.splitlines():
        head, sep, rest = line.partition(";")
        if head.startswith("process "):
            # `process N:"cmd";frame;... count`, or `process N:"cmd" count` with no frame
            line = rest if sep else "<process> " + line.rpartition(" ")[2]
        lines.append(line)
    return "\n".join(lines) + "\n"


def _function(frame: str) -> str:
    """`handle (collector/handlers.py:95)` -> `handle (collector/handlers.py)`."""
    return _LINE_NO.sub(")", frame.strip())


def _file(function: str) -> str:
    """`handle (collector/handlers.py)` -> `collector/handlers.py`."""
    _, _, where = function.rpartition(" (")
    return where.rstrip(")") or function


def summarise(collapsed: str) -> dict[str, Any]:
    """Self samples per function and per file, and inclusive samples of the project's code.

    Time in C code (msgspec, zlib, os.write) counts as self time of its Python caller.
    """
    own: Counter[str] = Counter()
    own_by_file: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in collapsed.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_function(frame) for frame in stack.split(";") if frame]
        if not frames:
            continue
        total += count
        own[frames[-1]] += count
        own_by_file[_file(frames[-1])] += count
        for frame in set(frames):
            if _file(frame).startswith(PROJECT_PACKAGES):
                inclusive[frame] += count

    def top(counter: Counter[str], key: str) -> list[dict[str, Any]]:
        return [
            {key: name, "share": round(count / total, 4)}
            for name, count in counter.most_common(TOP_N)
        ]

    return {
        "samples": total,
        "top_self": top(own, "function"),
        "top_self_by_file": top(own_by_file, "file"),
        "top_inclusive_project": top(inclusive, "function"),
    }
