"""The sizing guide (docs/operating.md) quotes the benchmark run it names, not remembered numbers.

The guide names its run by date (`run of YYYY-MM-DD`); that run's results are kept under
benchmarks/results/runs/<date>/results.json. Each measured constant the guide's rules use is read
from there and must appear in the guide as that run printed it, and the table must follow from
the rules; moving the guide to another run fails this test until the guide is redone.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
GUIDE = (ROOT / "docs" / "operating.md").read_text()
SIZING = GUIDE[GUIDE.index("## Sizing") :]


def latest() -> dict[str, Any]:
    """The run the guide names."""
    found = re.search(r"run of (\d{4}-\d{2}-\d{2})", SIZING)
    assert found, "the sizing guide must name the benchmark run it quotes"
    path = ROOT / "benchmarks/results/runs" / found.group(1) / "results.json"
    result: dict[str, Any] = json.loads(path.read_text())
    assert result["started_at"].startswith(found.group(1))
    assert not result["options"].get("quick"), "the guide quotes a full run"
    return result


def test_the_guide_quotes_the_latest_benchmark_run() -> None:
    run = latest()
    kafka_cpu = run["http_ingest"]["kafka"]["half_max"]["server_cpu_s_per_million_events"]
    file_cpu = run["http_ingest"]["file"]["half_max"]["server_cpu_s_per_million_events"]
    ceiling = run["kafka_ceiling"]["plain"]
    assert f"| {kafka_cpu:.1f} CPU-s |" in SIZING
    assert f"| {file_cpu:.1f} CPU-s |" in SIZING
    assert f"**{round(ceiling['records_per_s']):,} records/s**" in SIZING
    assert f"{ceiling['record_bytes']}-byte records" in SIZING
    assert f"run of {run['started_at'][:10]}" in SIZING


def test_the_table_follows_from_the_rules_and_the_measured_constants() -> None:
    run = latest()
    core_s_per_event = (
        run["http_ingest"]["kafka"]["half_max"]["server_cpu_s_per_million_events"] / 1e6
    )
    per_broker = run["kafka_ceiling"]["plain"]["records_per_s"] / 2  # brokers run at half
    rows = {10_000: "10k", 100_000: "100k", 1_000_000: "1M"}
    for rate, label in rows.items():
        row = next(line for line in SIZING.splitlines() if line.startswith(f"| {label} events/s"))
        cores = rate * core_s_per_event / 0.5
        brokers = max(3, math.ceil(rate * 3 / per_broker) + 1)
        assert f"| {round(cores, 1):g} → " in row, (label, cores, row)
        assert f"| **{brokers}** (" in row, (label, brokers, row)
