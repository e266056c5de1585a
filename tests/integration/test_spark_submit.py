"""`spark-submit collector/spark/submit.py replay ...`: the spark-submit entry point runs the
same replay as `capture replay`, with the master coming from spark-submit.

Its own JVM (spark-submit starts one), on the file log so that no connector is needed; the
Kafka connector under spark-submit comes from spark-submit's own `--packages`, as documented.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

import collector.spark.submit as submit
from tests.unit.test_replay_file import FileBackend, event_record, replay

pytest.importorskip("pyspark")

SPARK_SUBMIT = Path(sys.executable).parent / "spark-submit"


def test_spark_submit_replays_like_the_process_engine(tmp_path: Path) -> None:
    backend = FileBackend(tmp_path / "data")
    records = [event_record(backend.prefix, i * 1000) for i in range(40)]
    asyncio.run(backend.write([*records, records[3], records[7]]))  # two duplicates
    common = ["--data-dir", str(backend.data_dir), "--topic", "ev.track_played", "--dedup"]
    code, expected, _ = replay(*common, "--out", str(tmp_path / "one.jsonl"))
    assert code == 0
    assert expected["deduplicated"] == 2
    out = tmp_path / "spark-out"
    done = subprocess.run(
        [
            str(SPARK_SUBMIT),
            "--master",
            "local[1]",
            "--conf",
            "spark.ui.enabled=false",
            "--conf",
            "spark.driver.host=127.0.0.1",
            "--conf",
            "spark.driver.bindAddress=127.0.0.1",
            submit.__file__,
            "replay",
            *common,
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, "PYSPARK_PYTHON": sys.executable, "SPARK_LOCAL_IP": "127.0.0.1"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    # spark-submit's PythonRunner merges the driver's stderr into its stdout
    summary = [line for line in done.stdout.splitlines() if line.startswith("replay summary")]
    assert summary == [_render(expected)]
    written = sorted(line for part in out.glob("part-*") for line in part.read_text().splitlines())
    assert written == sorted((tmp_path / "one.jsonl").read_text().splitlines())
    assert len(written) == 40


def test_submit_refuses_an_unknown_command() -> None:
    assert submit.main(["serve"]) == 2
    assert submit.main([]) == 2


def _render(counts: dict[str, int]) -> str:
    return "replay summary: " + " ".join(f"{k}={v}" for k, v in counts.items())
