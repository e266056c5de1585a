"""CPU time and memory of a process and all its descendants (a collector and its workers).

Reads /proc through psutil; a process that exits between two reads is skipped, never fatal.
Must not signal or otherwise touch the processes it watches.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import psutil

MIB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class TreeSample:
    cpu_s: float  # user + system, live processes plus children already reaped
    rss_bytes: int  # sum of current resident sets
    hwm_bytes: int  # sum of peak resident sets (VmHWM) of the live processes
    processes: int


def _tree(pid: int) -> list[psutil.Process]:
    root = psutil.Process(pid)
    with contextlib.suppress(psutil.Error):
        return [root, *root.children(recursive=True)]
    return [root]


def _vm_hwm_bytes(pid: int) -> int:
    """Peak RSS from /proc/<pid>/status (psutil does not expose VmHWM)."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def sample_tree(pid: int) -> TreeSample:
    cpu_s = 0.0
    rss = hwm = count = 0
    for process in _tree(pid):
        with contextlib.suppress(psutil.Error):
            times = process.cpu_times()
            cpu_s += times.user + times.system + times.children_user + times.children_system
            rss += process.memory_info().rss
            hwm += _vm_hwm_bytes(process.pid)
            count += 1
    return TreeSample(cpu_s=cpu_s, rss_bytes=rss, hwm_bytes=hwm, processes=count)


def system_clock() -> tuple[float, float]:
    """(idle seconds, total seconds) summed over all cores, for `system_busy_fraction`."""
    times = psutil.cpu_times()
    idle = times.idle + getattr(times, "iowait", 0.0)
    return idle, sum(times)


def system_busy_fraction(before: tuple[float, float], after: tuple[float, float]) -> float:
    """Share of all cores' time that was not idle between two `system_clock()` readings."""
    idle = after[0] - before[0]
    total = after[1] - before[1]
    return 0.0 if total <= 0 else max(0.0, 1.0 - idle / total)
