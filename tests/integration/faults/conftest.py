"""The fault tier's fixtures: one three-broker cluster for the session, restored after each test.

Scenarios marked `catalogue` run only from `make faults` (EVENT_CAPTURE_FAULTS=all); their
load is a share of the collector's maximum, measured once per session (`calibrated`). Every
verdict is printed as a table row at the end (after the calibration and the soak's minutes, when
they ran), and written to $EVENT_CAPTURE_FAULTS_TABLE when set.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from devtools.kafka_cluster import KafkaCluster
from devtools.load import Calibration, calibrate
from devtools.oracle import TABLE_HEADER, Verdict
from tests.integration.faults.harness import new_prefix, serve, topics_of

VERDICTS: list[Verdict] = []
CALIBRATIONS: list[Calibration] = []
SOAK_TABLES: list[str] = []  # markdown, one per soak that ran
CALIBRATION_S = 20.0


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
async def restored(request: pytest.FixtureRequest) -> AsyncIterator[None]:
    """After each scenario, whatever it did: every proxy healed, every broker up again (for
    scenarios on the cluster only: the file sink's do not start it)."""
    yield
    if "cluster" not in request.fixturenames:
        return
    cluster: KafkaCluster = request.getfixturevalue("cluster")
    for proxy in cluster.proxies:
        proxy.heal()
    for node in cluster.nodes:
        if node.process.running:
            node.resume()  # SIGCONT: a no-op unless the scenario paused it
        else:
            await asyncio.to_thread(node.start)
    await cluster.wait_healthy()


@pytest.fixture(scope="session")
def calibrated(cluster: KafkaCluster, tmp_path_factory: pytest.TempPathFactory) -> Calibration:
    """The collector's maximum on this cluster and machine, measured once per session: a
    fresh `capture serve` driven unpaced for CALIBRATION_S."""
    prefix = new_prefix("calib")
    work_dir = tmp_path_factory.mktemp("calibration")

    async def measure(url: str) -> Calibration:
        await cluster.create_topics(topics_of(prefix))
        await cluster.wait_healthy(topics_of(prefix))
        return await calibrate(url + "/v1/batch", duration_s=CALIBRATION_S)

    # a loop of its own, on a thread: a session fixture may be set up inside a test's loop
    with (
        serve(cluster.bootstrap_servers, prefix, work_dir) as collector,
        concurrent.futures.ThreadPoolExecutor(1) as pool,
    ):
        result = pool.submit(asyncio.run, measure(collector.url)).result()
    assert result.events_per_s > 0, result
    CALIBRATIONS.append(result)
    return result


@pytest.fixture
def record_verdict() -> Iterator[list[Verdict]]:
    mine: list[Verdict] = []
    yield mine
    VERDICTS.extend(mine)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not VERDICTS and not SOAK_TABLES:
        return
    parts = [f"Calibrated maximum: {c.describe()}." for c in CALIBRATIONS]
    if VERDICTS:
        parts.append(TABLE_HEADER + "\n" + "\n".join(v.row() for v in VERDICTS))
    parts.extend(SOAK_TABLES)
    table = "\n\n".join(parts)
    terminalreporter.write_sep("=", "fault scenarios (devtools/oracle.py)")
    terminalreporter.write_line(table)
    target = os.environ.get("EVENT_CAPTURE_FAULTS_TABLE")
    if target:
        Path(target).write_text(table + "\n")
