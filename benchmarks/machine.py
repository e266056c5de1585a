"""Describe the machine and software a run measured, so that its numbers can be read later.

Reads /proc, `java -version` and installed package versions; must not change anything, and
must not fail a run over a detail it cannot read (that detail is then reported as null).
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import platform
import shutil
import subprocess
from pathlib import Path
from typing import Any

from devtools.kafka import KAFKA_VERSION

PACKAGES = ("aiohttp", "aiokafka", "msgspec", "orjson", "jsonschema", "event-capture")
REPO = Path(__file__).resolve().parent.parent


def _cpu_model() -> str | None:
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return None


def _mem_total_mib() -> float | None:
    with contextlib.suppress(OSError), open("/proc/meminfo", encoding="ascii") as meminfo:
        for line in meminfo:
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024, 1)
    return None


def _java_version() -> str | None:
    java = shutil.which("java")
    if java is None:
        return None
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        done = subprocess.run(
            [java, "-version"], capture_output=True, text=True, timeout=30, check=False
        )
        return (done.stderr or done.stdout).splitlines()[0].strip()
    return None


def _git(*args: str) -> str | None:
    git = shutil.which("git")
    if git is None:
        return None
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        done = subprocess.run(
            [git, "-C", str(REPO), *args], capture_output=True, text=True, timeout=30, check=True
        )
        return done.stdout.strip()
    return None


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def load_average() -> tuple[float, float, float]:
    return os.getloadavg()


def describe() -> dict[str, Any]:
    dirty = _git("status", "--porcelain")
    return {
        "nproc": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)),
        "cpu_model": _cpu_model(),
        "mem_total_mib": _mem_total_mib(),
        "kernel": platform.release(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "java": _java_version(),
        "kafka": KAFKA_VERSION,
        "packages": {name: _version(name) for name in PACKAGES},
        "git_commit": _git("rev-parse", "HEAD"),
        "git_dirty": None if dirty is None else bool(dirty),
        "load_average_at_start": load_average(),
    }
