"""`capture replay --engine spark` against the single-process engine: the same data, the same
flags, the same output and the same nine counts.

Both engines run over one data set per backend (the file log and the real broker; see
spark_helpers.py) for every combination of time window, --where, --dedup and --upgrade, for
recovery with and without --dedup (each engine republishing under its own topic prefix, read
back from the backend), for Parquet and for JSON lines with metadata. The CLI runs in-process
on one SparkSession for the whole module (its own start_session gets the same session),
except the stdout run, which is a subprocess so its stdout can be captured.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import gc
import itertools
import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from collector.replay.summary import Summary
from collector.sinks.base import Record
from devtools.kafka import KafkaBroker
from tests.integration import spark_helpers as h
from tests.integration.kafka_helpers import consume
from tests.unit.test_replay_file import FileBackend, replay

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

MASTER = "local[2]"
SPARK_CONF = {
    "spark.driver.memory": "512m",
    "spark.sql.shuffle.partitions": "2",
    "spark.ui.enabled": "false",
    "spark.sql.session.timeZone": "UTC",
}
REPO = Path(__file__).resolve().parents[2]
# pyspark's collect/toLocalIterator leave their loopback socket to the garbage collector
pytestmark = pytest.mark.filterwarnings("ignore:unclosed <socket.socket:ResourceWarning")
Reader = Callable[[str, int], list[Record]]


@pytest.fixture(scope="module")
def spark() -> Iterator[SparkSession]:
    """One session for every in-process run; the CLI's start_session finds it."""
    from collector.spark.session import start_session, stop_session

    session = start_session("tests", MASTER, SPARK_CONF)
    try:
        yield session
    finally:
        stop_session(session)


@pytest.fixture(autouse=True)
def _collect_garbage() -> Iterator[None]:
    """Sockets pyspark left open are collected here, under this module's warning filter."""
    yield
    gc.collect()


@dataclass
class Backend:
    data: h.DataSet
    read: Reader  # every record of a topic, `expected` of them (Kafka waits for them)


@pytest.fixture(scope="session")
def file_data(tmp_path_factory: pytest.TempPathFactory) -> Backend:
    root = tmp_path_factory.mktemp("spark-replay-file")
    backend = FileBackend(root / "data")
    data, records, letters = h.build(root, backend.source_args(), "ev.", shared_ids=True)
    h.write_file_log(backend.data_dir, records, letters)
    return Backend(data, lambda topic, expected: asyncio.run(backend.read(topic, expected)))


@pytest.fixture(scope="session")
def kafka_data(kafka_broker: KafkaBroker, tmp_path_factory: pytest.TempPathFactory) -> Backend:
    root = tmp_path_factory.mktemp("spark-replay-kafka")
    servers = kafka_broker.bootstrap_servers
    data, records, letters = h.build(
        root, ["--bootstrap-servers", servers], h.new_prefix(), shared_ids=True
    )
    h.write_kafka(servers, [*records, *letters])

    def read(topic: str, expected: int) -> list[Record]:
        found = asyncio.run(consume(servers, [topic], expected=expected, timeout_s=20))
        return [Record(r.topic, r.key, r.value, list(r.headers), r.timestamp) for r in found]

    return Backend(data, read)


@pytest.fixture(
    params=[pytest.param("file"), pytest.param("kafka", marks=pytest.mark.kafka)],
)
def backend(request: pytest.FixtureRequest) -> Backend:
    found: Backend = request.getfixturevalue(f"{request.param}_data")
    return found


@dataclass
class Run:
    counts: dict[str, int]
    err: str


def process(*args: str) -> Run:
    code, counts, err = replay(*args)
    assert code == 0, err
    assert set(counts) == set(Summary.COUNTS), err
    return Run(counts, err)


def on_spark(session: SparkSession, *args: str) -> Run:
    """The CLI with --engine spark, in-process: it must run its jobs on `session`."""
    from pyspark import SparkContext

    context = session.sparkContext
    app, tracker = context.applicationId, context.statusTracker()
    before = max(tracker.getJobIdsForGroup(), default=-1)
    run = process(*args, "--engine", "spark", "--master", MASTER)
    assert SparkContext._active_spark_context is context  # no second context, no second JVM
    assert context.applicationId == app
    assert max(tracker.getJobIdsForGroup(), default=-1) > before  # its jobs ran here
    return run


# ---- the grid: window x where x dedup x upgrade ----------------------------------------------

WINDOW = ["--since", h.SINCE, "--until", h.UNTIL]
WHERE = ["--where", "properties.position_ms>100"]
GRID = list(itertools.product([False, True], repeat=4))


def _grid_id(flags: tuple[bool, ...]) -> str:
    names = ("window", "where", "dedup", "upgrade")
    return "-".join(n for n, on in zip(names, flags, strict=True) if on) or "plain"


@pytest.mark.parametrize("flags", GRID, ids=[_grid_id(f) for f in GRID])
def test_grid(
    flags: tuple[bool, ...],
    backend: Backend,
    spark: SparkSession,
    tmp_path: Path,
) -> None:
    window, where, dedup, upgrade = flags
    args = backend.data.grid_args()
    args += WINDOW if window else []
    args += WHERE if where else []
    args += ["--dedup"] if dedup else []
    args += ["--upgrade"] if upgrade else []
    one, many = tmp_path / "process.jsonl", tmp_path / "spark"
    expected = process(*args, "--out", str(one))
    got = on_spark(spark, *args, "--out", str(many))
    assert got.counts == expected.counts
    lines = h.file_lines(one)
    assert h.keyed(h.spark_lines(many)) == h.keyed(lines)
    # the data make each flag count, so an engine ignoring one would differ
    counts = expected.counts
    assert counts["written"] == len(lines) > 0
    assert counts["malformed"] > 0
    assert (counts["read"] < h.MAIN_EVENTS) is window
    assert (counts["matched"] < counts["read"] - counts["malformed"]) is where
    assert (counts["deduplicated"] > 0) is dedup
    assert (counts["upgraded"] > 0 and counts["failed"] > 0) is upgrade


# ---- recovery --------------------------------------------------------------------------------


def _republished(backend: Backend, topic: str, expected: int) -> list[tuple[Any, ...]]:
    found = backend.read(topic, expected)
    assert len(found) == expected
    return sorted((h.keyed([r.value])[0], r.key, sorted(r.headers), r.timestamp_ms) for r in found)


@pytest.mark.parametrize("dedup", [False, True], ids=["all", "dedup"])
def test_recover(dedup: bool, backend: Backend, spark: SparkSession) -> None:
    data = backend.data
    args = [*data.source_args, "--dead-letters", "--dead-letter-topic", data.dead_letter_topic]
    args += ["--recover", "--schemas-dir", str(data.plan), "--rate", "0"]
    args += ["--dedup"] if dedup else []
    mine, theirs = h.new_prefix(), h.new_prefix()  # each engine recovers into its own topics
    expected = process(*args, "--topic-prefix", mine)
    got = on_spark(spark, *args, "--topic-prefix", theirs)
    assert got.counts == expected.counts
    counts = expected.counts
    assert counts["recovered"] > 0
    assert counts["still_invalid"] > 0
    assert counts["malformed"] == 1
    assert (counts["deduplicated"] > 0) is dedup
    assert counts["written"] == counts["recovered"]
    written = counts["written"]
    assert _republished(backend, theirs + "track_played", written) == _republished(
        backend, mine + "track_played", written
    )


# ---- the other writers -----------------------------------------------------------------------


def test_parquet(backend: Backend, spark: SparkSession, tmp_path: Path) -> None:
    import pyarrow.dataset as ds  # type: ignore[import-untyped]
    import pyarrow.parquet as pq  # type: ignore[import-untyped]

    args = [*backend.data.grid_args(), "--dedup", "--upgrade", "--format", "parquet"]
    one, many = tmp_path / "process.parquet", tmp_path / "spark"
    expected = process(*args, "--out", str(one))
    got = on_spark(spark, *args, "--out", str(many))
    assert got.counts == expected.counts
    assert (many / "event=track_played" / "date=2026-11-26").is_dir()
    columns = ["topic", "partition", "offset", "timestamp_ms", "key", "event", "version"]
    columns += ["event_id", "value"]
    wanted = pq.read_table(one).to_pydict()
    partitioning = ds.HivePartitioning.discover(
        infer_dictionary=False, null_fallback="__HIVE_DEFAULT_PARTITION__"
    )
    table = ds.dataset(many, format="parquet", partitioning=partitioning).to_table().to_pydict()

    def rows(found: dict[str, list[Any]]) -> list[tuple[Any, ...]]:
        return sorted(zip(*(found[c] for c in columns), strict=True), key=repr)

    assert rows(table) == rows(wanted)
    assert len(table["value"]) == expected.counts["written"] > 0
    # each row sits in the directory of its own day
    for ms, day in zip(table["timestamp_ms"], table["date"], strict=True):
        assert str(day) == dt.datetime.fromtimestamp(ms / 1000, dt.UTC).date().isoformat()


def test_with_metadata(backend: Backend, spark: SparkSession, tmp_path: Path) -> None:
    args = [*backend.data.grid_args(), *WINDOW, "--dedup", "--upgrade", "--with-metadata"]
    one, many = tmp_path / "process.jsonl", tmp_path / "spark"
    expected = process(*args, "--out", str(one))
    got = on_spark(spark, *args, "--out", str(many))
    assert got.counts == expected.counts
    lines = h.file_lines(one)
    assert sorted(h.spark_lines(many)) == sorted(lines)
    assert all(json.loads(line)["topic"] for line in lines)


def test_stdout(file_data: Backend, tmp_path: Path) -> None:
    """`--out -`: the driver streams JSON lines to stdout in source order, as one process does."""
    args = [*file_data.data.grid_args(), *WHERE, "--dedup", "--upgrade"]
    one = tmp_path / "process.jsonl"
    expected = process(*args, "--out", str(one))
    conf = [x for k, v in SPARK_CONF.items() for x in ("--spark-conf", f"{k}={v}")]
    engine = ["--engine", "spark", "--master", MASTER, *conf]
    done = subprocess.run(
        [sys.executable, "-m", "collector.cli", "replay", *args, *engine],
        capture_output=True,
        cwd=REPO,
        timeout=300,
        check=False,
    )
    err = done.stderr.decode()
    assert done.returncode == 0, err
    summary = [line for line in err.splitlines() if line.startswith("replay summary")]
    assert summary, err
    counts = {k: int(v) for k, v in (p.split("=") for p in summary[0].split(": ", 1)[1].split())}
    assert counts == expected.counts
    assert done.stdout.splitlines() == h.file_lines(one)  # by (topic, partition, offset)
    assert expected.counts["written"] > 0
