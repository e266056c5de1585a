"""The SDK (capture_sdk.Client, disk spool on) as a second load driver under faults (issue 14).

An SDK driver process (devtools/sdk_load.py) runs beside the raw driver; the oracle holds
every event its track() accepted to "in Kafka, counted as dropped, or still spooled", and a
drained spool must hold nothing. This scenario is in the tier; test_catalogue.py runs the SDK
driver beside the raw one in "collector SIGKILLed 20 times" and "every broker down".
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from devtools.kafka_cluster import KafkaCluster
from devtools.oracle import Verdict
from devtools.sdk_load import SdkDriver, spooled_ids
from tests.integration.faults.harness import (
    SDK_RATE_EPS,
    Run,
    new_prefix,
    run_scenario,
    serve,
    until,
)
from tests.integration.faults.test_broker_faults import assert_holds

pytestmark = [pytest.mark.kafka, pytest.mark.faults]

SDK_KILLS = 3
# Between two SIGKILLs of the SDK driver: long enough for the restarted client to replay its
# spool and track new events.
SDK_RUN_S = 3.0


def assert_sdk_drained(verdict: Verdict, sdk: SdkDriver) -> None:
    """Every accepted event is in Kafka: nothing dropped, nothing left on disk."""
    assert_holds(verdict)
    assert sdk.ledger.accepted, "the SDK driver accepted nothing"
    assert not sdk.ledger.dropped, f"the SDK dropped events: {sdk.ledger.dropped_by_reason()}"
    assert not sdk.ledger.spooled_at_end, "the spool was not drained"


async def test_sdk_process_sigkilled_with_the_spool_then_restarted(
    cluster: KafkaCluster, tmp_path: Path, record_verdict: list[Verdict]
) -> None:
    left_on_disk: list[int] = []

    async def body(run: Run) -> None:
        sdk = run.sdk
        assert sdk is not None
        await until(lambda: sdk.tracked() >= 100, timeout_s=60, what="SDK events tracked")
        run.ledger.mark("fault")
        for _ in range(SDK_KILLS):
            await asyncio.to_thread(sdk.kill)
            left_on_disk.append(len(spooled_ids(sdk.spool_dir)))
            await asyncio.to_thread(sdk.start)  # same spool dir: the new client replays it
            await asyncio.sleep(SDK_RUN_S)
        run.ledger.mark("heal")

    prefix = new_prefix("sdkkill")
    with serve(cluster.bootstrap_servers, prefix, tmp_path) as collector:
        sdk = SdkDriver(collector.url, tmp_path, rate_eps=SDK_RATE_EPS, max_retry_s=120)
        verdict, _ = await run_scenario(
            f"SDK process SIGKILLed {SDK_KILLS} times (spool on), restarted",
            cluster,
            collector.url,
            prefix,
            body,
            sdk=sdk,
        )
    record_verdict.append(verdict)
    assert_sdk_drained(verdict, sdk)
    # the kills did leave undelivered records on disk for the restarts to send
    assert sum(left_on_disk) > 0, left_on_disk
