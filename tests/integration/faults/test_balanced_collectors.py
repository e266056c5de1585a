"""Catalogue scenarios (issue 15 §1), `make faults` only: three `capture serve` processes on the
Kafka sink of the three-broker cluster behind a real HAProxy, the raw driver and the SDK driver
(spool on) both pointed at the balancer. One collector SIGKILLed with a request in flight, and a
rolling restart of all three; the oracle reads the cluster's topics back and judges. The fleet
and the faults are tests/integration/balanced.py's, shared with the file-sink tests.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

import pytest

from devtools.haproxy import HAProxy
from devtools.kafka_cluster import KafkaCluster
from devtools.load import Calibration
from devtools.oracle import Verdict
from devtools.sdk_load import SdkDriver
from tests.integration.balanced import balanced, kill_one, rolling_restart, server_name
from tests.integration.faults.harness import (
    SDK_RATE_EPS,
    Collector,
    Run,
    new_prefix,
    run_scenario,
)
from tests.integration.faults.test_broker_faults import assert_holds
from tests.integration.faults.test_catalogue import LOAD_SHARE

pytestmark = [pytest.mark.kafka, pytest.mark.faults, pytest.mark.catalogue]

COLLECTORS = 3
# After a collector is gone, the load keeps running this long on the other two.
AFTER_KILL_S = 5.0
# The SDK's budget for one batch: far above anything these faults hold a request for.
SDK_RETRY_S = 120.0


class Fault:
    """A scenario body over the fleet: marks `fault` and `heal` in the raw driver's ledger."""

    def __init__(self, balancer: HAProxy, collectors: Sequence[Collector]) -> None:
        self.balancer = balancer
        self.collectors = collectors

    async def body(self, run: Run) -> None:
        raise NotImplementedError


class KillOne(Fault):
    async def body(self, run: Run) -> None:
        await kill_one(self.balancer, self.collectors, 2, run.ledger, after_kill_s=AFTER_KILL_S)
        # restarted later, on the same port: back in rotation before the load ends
        await asyncio.to_thread(self.collectors[1].start)
        await asyncio.to_thread(self.balancer.wait_state, server_name(2), "UP")


class RollingRestart(Fault):
    async def body(self, run: Run) -> None:
        await rolling_restart(self.balancer, self.collectors, run.ledger)


async def balanced_scenario(
    name: str,
    cluster: KafkaCluster,
    tmp_path: Path,
    calibrated: Calibration,
    record: list[Verdict],
    fault: type[Fault],
) -> Verdict:
    """The fleet on a fresh prefix, the SDK driver on the balancer, `fault` under load, the
    oracle over the cluster's topics (the raw driver's acknowledgements and the SDK's ledger)."""
    prefix = new_prefix(name.split()[0].lower()[:6])
    collectors = []
    for number in range(1, COLLECTORS + 1):
        work_dir = tmp_path / server_name(number)
        work_dir.mkdir()
        collectors.append(Collector(cluster.bootstrap_servers, prefix, work_dir))
    with balanced(collectors) as balancer:
        sdk = SdkDriver(balancer.url, tmp_path, rate_eps=SDK_RATE_EPS, max_retry_s=SDK_RETRY_S)
        verdict, _ = await run_scenario(
            name,
            cluster,
            balancer.url,
            prefix,
            fault(balancer, collectors).body,
            load=calibrated.paced(LOAD_SHARE),
            sdk=sdk,
        )
    record.append(verdict)
    print(verdict.row(), "SDK stats:", sdk.ledger.stats)
    assert_holds(verdict)
    # every event the SDK accepted was delivered: none dropped, none left on disk
    assert not sdk.ledger.dropped, sdk.ledger.dropped_by_reason()
    assert not sdk.ledger.spooled_at_end, "the SDK's spool was not drained"
    assert sdk.ledger.accepted, "the SDK driver tracked nothing"
    return verdict


async def test_one_of_three_balanced_collectors_sigkilled(
    cluster: KafkaCluster,
    tmp_path: Path,
    record_verdict: list[Verdict],
    calibrated: Calibration,
) -> None:
    verdict = await balanced_scenario(
        "haproxy, Kafka: 1 of 3 collectors SIGKILLed, SDK retrying",
        cluster,
        tmp_path,
        calibrated,
        record_verdict,
        KillOne,
    )
    # what the issue allows: 503s and cut connections, retried with the same ids; and what
    # HAProxy achieves (retry-on empty-response and conn-failure): the kill never reaches a client
    assert set(verdict.statuses) <= {"200", "503", "error"}, verdict.statuses
    assert set(verdict.statuses) == {"200"}, verdict.statuses


async def test_rolling_restart_of_balanced_collectors(
    cluster: KafkaCluster,
    tmp_path: Path,
    record_verdict: list[Verdict],
    calibrated: Calibration,
) -> None:
    verdict = await balanced_scenario(
        "haproxy, Kafka: rolling restart of 3 collectors, SDK retrying",
        cluster,
        tmp_path,
        calibrated,
        record_verdict,
        RollingRestart,
    )
    # no request fails but with a 503: HAProxy hides the drain of each collector
    assert set(verdict.statuses) <= {"200", "503"}, verdict.statuses
