"""`capture replay --engine spark` refuses bad input with exit 2 before Spark starts, as the
process engine refuses it before reading: an --out that exists or cannot be written, an
unknown topic. Each case runs in a fresh interpreter, which then reports whether a
Spark session was ever started in it."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.unit.test_replay_file import FileBackend, event_record

pytest.importorskip("pyspark")

PROBE = """
import sys
import collector.spark.replay as engine
from collector.cli import main
started = []
real = engine.start_session
engine.start_session = lambda *a, **k: started.append(1) or real(*a, **k)
code = main(sys.argv[1:])
print("spark started" if started else "no spark")
sys.exit(code)
"""


def run_spark_replay(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", PROBE, "replay", "--engine", "spark", *argv],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture
async def data_dir(tmp_path: Path) -> Path:
    backend = FileBackend(tmp_path / "data")
    await backend.write([event_record(backend.prefix, 0)])
    return backend.data_dir


@pytest.mark.parametrize(
    ("make_out", "message"),
    [
        (lambda root: str(root / "exists"), "exists: Spark writes a new directory"),
        (lambda root: str(root / "a-file" / "out"), "is not writable"),
        (lambda root: f"file://{root / 'exists'}", "exists: Spark writes"),
    ],
    ids=["existing-dir", "under-a-file", "file-uri-existing"],
)
def test_a_bad_out_is_exit_2_before_spark_starts(
    data_dir: Path, tmp_path: Path, make_out: Callable[[Path], str], message: str
) -> None:
    (tmp_path / "exists").mkdir()
    (tmp_path / "a-file").write_text("x")
    out = make_out(tmp_path)
    done = run_spark_replay("--data-dir", str(data_dir), "--topic", "ev.track_played", "--out", out)
    assert done.returncode == 2, done.stderr
    assert message in done.stderr
    assert done.stdout.strip() == "no spark"


def test_an_unknown_topic_is_exit_2_before_spark_starts(data_dir: Path, tmp_path: Path) -> None:
    done = run_spark_replay(
        "--data-dir", str(data_dir), "--topic", "ev.nothing", "--out", str(tmp_path / "o")
    )
    assert done.returncode == 2, done.stderr
    assert "unknown topic `ev.nothing`" in done.stderr
    assert done.stdout.strip() == "no spark"
    assert not (tmp_path / "o").exists()
