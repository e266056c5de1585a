"""The fault tier's fixtures: one three-broker cluster for the session, restored after each test.

Scenarios marked `catalogue` run only from `make faults` (EVENT_CAPTURE_FAULTS=all). Every
verdict is printed as a table row at the end, and written to $EVENT_CAPTURE_FAULTS_TABLE when set.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from devtools.kafka_cluster import KafkaCluster
from devtools.oracle import TABLE_HEADER, Verdict

VERDICTS: list[Verdict] = []


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("EVENT_CAPTURE_FAULTS") == "all":
        return
    skip = pytest.mark.skip(reason="the full fault catalogue runs from `make faults`")
    for item in items:
        if "catalogue" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def cluster() -> Iterator[KafkaCluster]:
    with KafkaCluster(3) as running:
        yield running


@pytest.fixture(autouse=True)
async def restored(cluster: KafkaCluster) -> AsyncIterator[None]:
    """After each scenario, whatever it did: every proxy healed, every broker up again."""
    yield
    for proxy in cluster.proxies:
        proxy.heal()
    for node in cluster.nodes:
        if node.process.running:
            node.resume()  # SIGCONT: a no-op unless the scenario paused it
        else:
            await asyncio.to_thread(node.start)
    await cluster.wait_healthy()


@pytest.fixture
def record_verdict() -> Iterator[list[Verdict]]:
    mine: list[Verdict] = []
    yield mine
    VERDICTS.extend(mine)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not VERDICTS:
        return
    table = TABLE_HEADER + "\n" + "\n".join(v.row() for v in VERDICTS)
    terminalreporter.write_sep("=", "fault scenarios (devtools/oracle.py)")
    terminalreporter.write_line(table)
    target = os.environ.get("EVENT_CAPTURE_FAULTS_TABLE")
    if target:
        Path(target).write_text(table + "\n")
