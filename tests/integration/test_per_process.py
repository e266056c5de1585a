"""What is per process, pinned down with two real collectors on one broker (issue 15, section 2).

Rate limits and the dedup window live in each process (docs/operating.md, "What is per
process"): through N collectors a key gets up to N x its limit; a retry that lands on the
same collector is deduplicated, one that lands on another is written again, and
`capture replay --dedup` removes what is left.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest

from devtools.kafka import KafkaBroker
from devtools.ports import free_port
from tests.factories import batch_body, page_viewed, track_played
from tests.integration.kafka_helpers import consume
from tests.unit.test_replay_file import run, values
from tests.waiting import wait_ready

pytestmark = pytest.mark.kafka

CAPTURE = Path(sys.executable).with_name("capture")
LIMITED_KEY = "sk_limited_0123456789abcdef"
OPEN_KEY = "sk_open_0123456789abcdefgh"
BURST = 3
CONFIG = f"""
[[sources]]
name = "limited"
kind = "server"
key = "{LIMITED_KEY}"
events = "*"
# so slow a refill that no token comes back during the test: each process allows BURST
rate_limit_per_s = 0.0001
burst = {BURST}

[[sources]]
name = "open"
kind = "server"
key = "{OPEN_KEY}"
events = "*"
"""


def post(port: int, body: bytes, key: str) -> int:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/batch",
        data=body,
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {key}"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            status: int = response.status
            json.load(response)
            return status
    except urllib.error.HTTPError as exc:
        exc.close()
        return exc.code


@pytest.fixture
def two_collectors(
    kafka_broker: KafkaBroker, tmp_path: Path
) -> Iterator[tuple[str, tuple[int, int]]]:
    """Two `capture serve` processes, separate as behind a load balancer: (prefix, ports)."""
    prefix = f"pp{uuid.uuid4().hex[:8]}"
    config = tmp_path / "collector.toml"
    config.write_text(CONFIG)
    ports = (free_port(), free_port())
    processes = []
    try:
        for port in ports:
            env = {
                **os.environ,
                "CAPTURE_PORT": str(port),
                "CAPTURE_KAFKA_BOOTSTRAP_SERVERS": kafka_broker.bootstrap_servers,
                "CAPTURE_TOPIC_PREFIX": f"{prefix}.",
                "CAPTURE_DEAD_LETTER_TOPIC": f"{prefix}._invalid",
                "CAPTURE_CONFIG_FILE": str(config),
                "CAPTURE_DEDUP_WINDOW_S": "300",
            }
            env.pop("PROMETHEUS_MULTIPROC_DIR", None)
            processes.append(subprocess.Popen([str(CAPTURE), "serve"], env=env))
        for port, process in zip(ports, processes, strict=True):
            wait_ready(port, process)
        yield prefix, ports
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            assert process.wait(timeout=30) == 0


def test_a_keys_rate_limit_is_per_collector(two_collectors: tuple[str, tuple[int, int]]) -> None:
    _, (first, second) = two_collectors
    statuses = {
        port: [post(port, batch_body(track_played()), LIMITED_KEY) for _ in range(BURST + 2)]
        for port in (first, second)
    }
    # each process alone limits the key to its burst...
    for port in (first, second):
        assert statuses[port] == [200] * BURST + [429] * 2, port
    # ...so through both the key got twice its limit accepted
    assert sum(s == 200 for answers in statuses.values() for s in answers) == 2 * BURST


async def test_dedup_catches_retries_to_the_same_collector_and_replay_removes_the_rest(
    two_collectors: tuple[str, tuple[int, int]], kafka_broker: KafkaBroker, tmp_path: Path
) -> None:
    prefix, (first, second) = two_collectors
    events = [page_viewed() for _ in range(3)]
    body = batch_body(*events)
    assert post(first, body, OPEN_KEY) == 200
    assert post(first, body, OPEN_KEY) == 200  # a retry to the same process: deduplicated
    assert post(second, body, OPEN_KEY) == 200  # a retry to another process: written again
    topic = f"{prefix}.page_viewed"
    records = await consume(kafka_broker.bootstrap_servers, [topic], expected=6)
    written = Counter(msgspec.json.decode(r.value)["event_id"] for r in records)
    assert written == {event["event_id"]: 2 for event in events}  # one copy per process

    out = tmp_path / "deduped.jsonl"
    code, counts, err = await run(
        "--bootstrap-servers",
        kafka_broker.bootstrap_servers,
        "--topic",
        topic,
        "--dedup",
        "--out",
        str(out),
    )
    assert code == 0, err
    assert sorted(v["event_id"] for v in values(out)) == sorted(e["event_id"] for e in events)
    assert counts["deduplicated"] == 3
