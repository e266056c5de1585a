"""Dev tool: loopback ports for the processes that tests, benchmarks and people start.

A port is handed out at most once per process, and it is taken from below the kernel's
ephemeral range, so neither a second call nor any process's outgoing connection can hold it
when the server it was picked for binds it. Asking the kernel for port 0 had both faults: a
CI run gave a broker the controller's port (2 of 3 brokers ever registered), and an outgoing
connection may borrow a picked port before its server starts. It must not bind anything for
longer than the check.
"""

from __future__ import annotations

import random
import socket
import threading
from pathlib import Path

EPHEMERAL_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
# The kernel's default ephemeral range, where the file above cannot be read.
DEFAULT_EPHEMERAL = (32768, 60999)
# Below this are well-known and registered system services.
LOWEST = 10_000
# Where the ephemeral range leaves too little room below it, above it instead.
MIN_POOL = 2_000
HIGHEST = 65_535

_handed_out: set[int] = set()
_lock = threading.Lock()


def ephemeral_range(source: Path = EPHEMERAL_RANGE_FILE) -> tuple[int, int]:
    """The ports the kernel picks for outgoing connections and port-0 binds."""
    try:
        low, high = (int(field) for field in source.read_text().split())
    except (OSError, ValueError):
        return DEFAULT_EPHEMERAL
    return low, high


def pool(ephemeral: tuple[int, int]) -> range:
    """The ports `free_port` picks from: outside `ephemeral`, above the system services."""
    low, high = ephemeral
    below = range(LOWEST, min(low, HIGHEST + 1))
    above = range(max(high + 1, LOWEST), HIGHEST + 1)
    if len(below) >= MIN_POOL or len(below) >= len(above):
        return below
    return above


def bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def kernel_port() -> int:
    """A port the kernel picks (for machines whose ephemeral range leaves no room)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def free_port(ephemeral: tuple[int, int] | None = None) -> int:
    """A loopback port nobody listens on, never before handed out by this process."""
    candidates = pool(ephemeral or ephemeral_range())
    with _lock:
        for _ in range(1_000):
            port = random.choice(candidates) if candidates else kernel_port()
            if port not in _handed_out and bindable(port):
                _handed_out.add(port)
                return port
    raise RuntimeError("no free loopback port in 1,000 tries")
