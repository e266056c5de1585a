"""The dev tools' port picker: never the same port twice, never one the kernel lends out."""

from __future__ import annotations

import socket
from pathlib import Path

from devtools.ports import DEFAULT_EPHEMERAL, LOWEST, bindable, ephemeral_range, free_port, pool


def test_a_port_is_handed_out_once_per_process() -> None:
    # Asking the kernel for port 0 repeats itself well within this many calls (a CI run gave
    # a broker its controller's port that way).
    ports = [free_port() for _ in range(3_000)]
    assert len(set(ports)) == len(ports)


def test_ports_come_from_outside_the_ephemeral_range() -> None:
    low, high = ephemeral_range()
    for _ in range(200):
        port = free_port()
        assert not low <= port <= high
        assert port >= LOWEST


def test_a_port_in_use_is_not_bindable() -> None:
    with socket.create_server(("127.0.0.1", 0)) as busy:
        assert not bindable(busy.getsockname()[1])
    assert bindable(free_port())


def test_the_ephemeral_range_is_read_from_the_kernel_file(tmp_path: Path) -> None:
    source = tmp_path / "range"
    source.write_text("40000\t50000\n")
    assert ephemeral_range(source) == (40000, 50000)
    assert ephemeral_range(tmp_path / "missing") == DEFAULT_EPHEMERAL
    source.write_text("garbage\n")
    assert ephemeral_range(source) == DEFAULT_EPHEMERAL


def test_the_pool_avoids_the_ephemeral_range_wherever_it_lies() -> None:
    assert pool((32768, 60999)) == range(LOWEST, 32768)
    # an ephemeral range starting low leaves the room above it
    assert pool((11000, 50000)) == range(50001, 65536)
    # a range that leaves no room: the kernel picks, still never the same port twice
    assert not pool((1024, 65535))
    ports = [free_port((1024, 65535)) for _ in range(3_000)]
    assert len(set(ports)) == len(ports)
