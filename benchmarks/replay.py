"""Replay throughput: `capture replay` records/s of the process and the Spark engine, on the
same records, in the same run.

One topic of N records, built by the collector's own decode, validate, enrich and route calls
from the shared event pool, with about 5% duplicates (the same record again: same event_id,
same key) and old event versions for `--upgrade` to raise. The records go to Kafka (a topic
created here with 3 partitions, through the collector's KafkaSink) and to the file sink's log
(FileSink). Then, for each source and mode, both engines run as `capture replay` subprocesses
writing JSON lines; each command's wall time is measured from the outside and its summary line
(stderr) is parsed, so the two engines' counts can be compared. The wall time of a replay of an
empty range is each engine's fixed cost (start-up), reported beside the plain rate.
Owns the processes it starts; must not change collector code or settings.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import random
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from benchmarks import procs, profiler
from benchmarks.events import batch_body, mixed_batch
from collector.client_ip import RequestContext
from collector.decoding import decode_batch
from collector.enrichment import enrich
from collector.routing import RouteTable, Topics, route
from collector.settings import Settings
from collector.sinks.base import Outcome, Record
from collector.sinks.file import FileSink, topic_path
from collector.sinks.kafka import KafkaSink
from collector.validation import validate_batch
from event_schemas import load_registry

TOPIC = "bench.replay"  # not under `events.`: the ingest stages count those topics
EMPTY_TOPIC = "bench.replay-empty"  # a file log of no records: the file source's empty range
PARTITIONS = 3
DUPLICATE_SHARE = 0.05
DUPLICATE_LAG = 10_000  # a duplicate lands up to this many records after its original
BATCH_EVENTS = 100
SEED = 17
RECEIVED_AT = dt.datetime(2026, 11, 26, 12, 0, tzinfo=dt.UTC)
CLIENT = RequestContext(ip="203.0.113.0", user_agent="capture-sdk-python/0.1.0")
# Later than every record: Kafka's offsets-for-times gives an empty range.
FUTURE = "2100-01-01T00:00:00+00:00"
PUBLISH_CHUNK = 5_000
PUBLISH_TIMEOUT_S = 60.0
MODES: dict[str, tuple[str, ...]] = {"plain": (), "dedup_upgrade": ("--dedup", "--upgrade")}
SOURCES = ("kafka", "file")
ENGINES = ("process", "spark")
MASTER = "local[2]"
SPARK_CONF = {
    "spark.ui.enabled": "false",
    "spark.sql.shuffle.partitions": "4",
    "spark.driver.memory": "1g",
}
SUMMARY_PREFIX = "replay summary"


def build_records(n: int, *, seed: int = SEED) -> tuple[list[Record], dict[str, int]]:
    """N records as the collector writes them (all to TOPIC); about 5% are duplicates."""
    schemas = load_registry()
    table = RouteTable(Topics(), schemas)
    duplicates = round(n * DUPLICATE_SHARE)
    unique = n - duplicates
    originals: list[Record] = []
    batch_no = 0
    while len(originals) < unique:
        size = min(BATCH_EVENTS, unique - len(originals))
        body = batch_body(mixed_batch(size, seed=seed * 1_000_003 + batch_no))
        received_at = RECEIVED_AT + dt.timedelta(milliseconds=10 * batch_no)
        batch = decode_batch(body)
        verdict = validate_batch(batch, schemas)
        if verdict.invalid:
            raise RuntimeError(f"the pool made an invalid event: {verdict.invalid[0]}")
        enrich(
            verdict.valid,
            received_at=received_at,
            sent_at=batch.sent_at,
            request=CLIENT,
            annotated=verdict.annotated,
        )
        routed = route(
            verdict.valid, [], table=table, received_at=received_at, annotated=verdict.annotated
        )
        originals += [msgspec.structs.replace(r, topic=TOPIC) for r in routed]
        batch_no += 1
    rng = random.Random(seed)
    later: dict[int, list[Record]] = {}
    for index in rng.sample(range(unique), duplicates):
        at = min(unique - 1, index + rng.randrange(1, DUPLICATE_LAG))
        later.setdefault(at, []).append(originals[index])
    records: list[Record] = []
    for index, record in enumerate(originals):
        records.append(record)
        records += later.get(index, ())
    newest = {
        event: schemas.versions(event)[-1] for event in {_header(r, "event") for r in originals}
    }
    old = sum(1 for r in originals if int(_header(r, "version")) < newest[_header(r, "event")])
    return records, {
        "records": len(records),
        "unique": unique,
        "duplicates": duplicates,
        "unique_old_version": old,
    }


def _header(record: Record, name: str) -> str:
    return next(v.decode() for k, v in record.headers if k == name)


# -- filling the sources ------------------------------------------------------------------------


async def fill_kafka(bootstrap_servers: str, records: Sequence[Record]) -> None:
    """Create TOPIC (PARTITIONS partitions) and publish through the collector's own sink."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, request_timeout_ms=20_000)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(TOPIC, PARTITIONS, 1)])
    finally:
        await admin.close()
    defaults = Settings()
    compression = defaults.kafka_compression
    sink = KafkaSink(
        bootstrap_servers,
        compression_type=None if compression == "none" else compression,
        linger_ms=defaults.kafka_linger_ms,
    )
    await sink.start()
    try:
        deadline = time.monotonic() + 60
        while not await sink.ready():
            if time.monotonic() > deadline:
                raise RuntimeError("the Kafka sink did not become ready in 60 s")
            await asyncio.sleep(0.2)
        await _publish_all(sink.publish, records)
    finally:
        await sink.stop(timeout_s=30)
    found = await _end_offsets(bootstrap_servers)
    if sum(found.values()) != len(records):
        raise RuntimeError(f"{TOPIC} holds {sum(found.values())} records, not {len(records)}")


async def _end_offsets(bootstrap_servers: str) -> dict[int, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap_servers, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = [TopicPartition(TOPIC, p) for p in range(PARTITIONS)]
        async with asyncio.timeout(30):
            offsets = await consumer.end_offsets(partitions)
        return {tp.partition: offset for tp, offset in offsets.items()}
    finally:
        await consumer.stop()


async def fill_file(data_dir: Path, records: Sequence[Record]) -> None:
    sink = FileSink(data_dir)
    await sink.start()
    try:
        await _publish_all(sink.publish, records)
    finally:
        await sink.stop(timeout_s=30)
    topic_path(data_dir, EMPTY_TOPIC).touch()


async def _publish_all(publish: Any, records: Sequence[Record]) -> None:
    """Every record accepted once: a refused chunk fails the stage (a retry could double it)."""
    for start in range(0, len(records), PUBLISH_CHUNK):
        chunk = records[start : start + PUBLISH_CHUNK]
        outcomes: list[Outcome] = await publish(chunk, timeout_s=PUBLISH_TIMEOUT_S)
        refused = sum(1 for o in outcomes if o is not Outcome.OK)
        if refused:
            raise RuntimeError(f"the sink refused {refused} of {len(chunk)} records")


# -- running the engines ------------------------------------------------------------------------


def replay_argv(
    source_args: Sequence[str], mode: str, engine: str, out: Path, *extra: str
) -> list[str]:
    argv = [sys.executable, "-m", "collector.cli", "replay", *source_args, *MODES[mode]]
    argv += ["--out", str(out), *extra]
    if engine == "spark":
        argv += ["--engine", "spark", "--master", MASTER]
        for key, value in SPARK_CONF.items():
            argv += ["--spark-conf", f"{key}={value}"]
    return argv


def _env() -> dict[str, str]:
    """This environment without CAPTURE_* settings (replay reads them as `serve` does)."""
    keep = {"CAPTURE_SPARK_LOG_LEVEL"}
    return {k: v for k, v in os.environ.items() if not k.startswith("CAPTURE_") or k in keep}


def timed(argv: Sequence[str], log_path: Path, timeout_s: float) -> dict[str, Any]:
    """Run one replay; its wall time (start of the process to its exit) and summary counts."""
    load = os.getloadavg()[0]
    started = time.perf_counter()
    process = procs.start_group(argv, log_path=log_path, env=_env())
    try:
        code = process.wait(timeout=timeout_s)
        wall_s = time.perf_counter() - started
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"replay took over {timeout_s:.0f} s; see {log_path}") from None
    finally:
        procs.stop_group(process)  # nothing of its group (a Spark JVM) may outlive it
    counts = parse_summary(log_path.read_text(errors="replace"))
    if code != 0 or counts is None:
        raise RuntimeError(f"replay exited {code}; see {log_path}: {procs.tail(log_path, 800)}")
    return {"wall_s": round(wall_s, 3), "counts": counts, "load_1m_before": round(load, 2)}


def parse_summary(text: str) -> dict[str, int] | None:
    """The counts of the `replay summary: read=.. written=..` line, or None without one."""
    for line in text.splitlines():
        if line.startswith(SUMMARY_PREFIX):
            pairs = (pair.split("=", 1) for pair in line.split(": ", 1)[1].split())
            return {name: int(value) for name, value in pairs}
    return None


def output_lines(out: Path) -> int:
    """JSON lines written: the process engine's file, or the Spark engine's part files."""
    files = sorted(out.glob("part-*")) if out.is_dir() else [out]
    total = 0
    for path in files:
        with path.open("rb") as f:
            total += sum(1 for _ in f)
    return total


def _remove(out: Path) -> None:
    if out.is_dir():
        shutil.rmtree(out)
    else:
        out.unlink(missing_ok=True)


def _rate(n: int, seconds: float | None) -> float | None:
    return round(n / seconds) if seconds is not None and seconds > 0 else None


def _ratio(top: float | None, bottom: float | None) -> float | None:
    return round(top / bottom, 3) if top is not None and bottom else None


def measure(
    source_args: Sequence[str],
    empty_args: Sequence[str],
    mode: str,
    n: int,
    work_dir: Path,
    label: str,
    timeout_s: float,
) -> dict[str, Any]:
    """Both engines on one source and mode: the full range, then an empty range (start-up)."""
    out: dict[str, Any] = {}
    for engine in ENGINES:
        name = f"{label}-{mode}-{engine}"
        target = work_dir / f"out-{name}{'' if engine == 'spark' else '.jsonl'}"
        run = timed(
            replay_argv(source_args, mode, engine, target), work_dir / f"{name}.log", timeout_s
        )
        run["output_lines"] = output_lines(target)
        _remove(target)
        empty_target = work_dir / f"out-{name}-empty{'' if engine == 'spark' else '.jsonl'}"
        empty = timed(
            replay_argv(empty_args, mode, engine, empty_target),
            work_dir / f"{name}-empty.log",
            timeout_s,
        )
        _remove(empty_target)
        if empty["counts"]["read"] != 0:
            raise RuntimeError(f"the empty range of {name} read {empty['counts']['read']}")
        startup_s = empty["wall_s"]
        run["startup_s"] = startup_s
        run["records_per_s"] = _rate(n, run["wall_s"])
        run["records_per_s_after_startup"] = _rate(n, run["wall_s"] - startup_s)
        print(
            f"   {label} {mode} {engine}: {run['wall_s']:.1f} s ({startup_s:.1f} s empty),"
            f" {run['records_per_s']:,} records/s; load {run['load_1m_before']}",
            flush=True,
        )
        out[engine] = run
    process, spark = out["process"], out["spark"]
    out["counts_equal"] = process["counts"] == spark["counts"]
    out["output_lines_equal"] = process["output_lines"] == spark["output_lines"]
    out["spark_vs_process"] = _ratio(spark["records_per_s"], process["records_per_s"])
    out["spark_vs_process_after_startup"] = _ratio(
        spark["records_per_s_after_startup"], process["records_per_s_after_startup"]
    )
    return out


def expected_counts(mode: str, fill: dict[str, int]) -> dict[str, int]:
    if mode == "plain":
        return {
            "read": fill["records"],
            "written": fill["records"],
            "deduplicated": 0,
            "upgraded": 0,
        }
    return {
        "read": fill["records"],
        "written": fill["unique"],
        "deduplicated": fill["duplicates"],
        "upgraded": fill["unique_old_version"],
    }


def profile(argv: Sequence[str], out_path: Path, timeout_s: float) -> dict[str, Any]:
    """py-spy one replay from its start (`py-spy record -- cmd`); the top functions by self time."""
    binary = profiler.py_spy()
    if binary is None:
        return {"error": "py-spy not installed (it is in the bench dependency group)"}
    out_path.parent.mkdir(parents=True, exist_ok=True)
    command = [
        binary,
        "record",
        "--rate",
        str(profiler.SAMPLE_RATE_HZ),
        "--format",
        "raw",
        "--output",
        str(out_path),
        "--",
        *argv,
    ]
    log_path = out_path.with_suffix(".log")
    log_path.unlink(missing_ok=True)
    process = procs.start_group(command, log_path=log_path, env=_env())
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        pass
    finally:
        procs.stop_group(process)
    if not out_path.exists():
        return {"error": f"py-spy wrote no profile: {procs.tail(log_path, 800)}"}
    out_path.write_text(profiler.strip_process_frames(out_path.read_text()))
    summary = profiler.summarise(out_path.read_text())
    return {
        "file": out_path.name,
        "command": "capture replay --bootstrap-servers .. --topic "
        f"{TOPIC} --out FILE (process engine, plain)",
        **summary,
    }


def run(
    *, bootstrap_servers: str, work_dir: Path, quick: bool, profile_to: Path | None = None
) -> dict[str, Any]:
    """The replay stage; `profile_to`: also py-spy one process-engine replay (Kafka, plain)."""
    n = 20_000 if quick else 200_000
    timeout_s = 300.0 if quick else 900.0
    work = work_dir / "replay"
    work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    records, fill = build_records(n)
    build_s = time.perf_counter() - started
    started = time.perf_counter()
    asyncio.run(fill_kafka(bootstrap_servers, records))
    kafka_s = time.perf_counter() - started
    data_dir = work / "data"
    started = time.perf_counter()
    asyncio.run(fill_file(data_dir, records))
    file_s = time.perf_counter() - started
    del records
    kafka_args = ["--bootstrap-servers", bootstrap_servers, "--topic", TOPIC]
    file_args = ["--data-dir", str(data_dir), "--topic", TOPIC]
    sources = {
        "kafka": (kafka_args, [*kafka_args, "--since", FUTURE]),
        "file": (file_args, ["--data-dir", str(data_dir), "--topic", EMPTY_TOPIC]),
    }
    result: dict[str, Any] = {
        "n": n,
        **fill,
        "cores": os.cpu_count(),
        "master": MASTER,
        "spark_conf": SPARK_CONF,
        "topic": TOPIC,
        "kafka_topic": f"created by this stage (aiokafka admin): {PARTITIONS} partitions, "
        "replication 1; filled through the collector's KafkaSink (its default settings)",
        "output": "JSON lines: a file (process), a directory of part files (spark)",
        "startup_how": {
            "kafka": f"--since {FUTURE}: an empty offset range, nothing read",
            "file": "a log of zero records (another topic in the same data dir)",
        },
        "fill_s": {
            "build": round(build_s, 1),
            "kafka": round(kafka_s, 1),
            "file": round(file_s, 1),
        },
    }
    findings: list[str] = []
    for label in SOURCES:
        full_args, empty_args = sources[label]
        result[label] = {}
        for mode in MODES:
            found = measure(full_args, empty_args, mode, n, work, label, timeout_s)
            expected = expected_counts(mode, fill)
            for engine in ENGINES:
                counts = found[engine]["counts"]
                found[engine]["counts_as_expected"] = all(
                    counts.get(k) == v for k, v in expected.items()
                )
                if not found[engine]["counts_as_expected"]:
                    findings.append(
                        f"{label} {mode} {engine}: counts {counts}, expected {expected}"
                    )
            if not found["counts_equal"]:
                findings.append(
                    f"{label} {mode}: engines disagree: process {found['process']['counts']}"
                    f" spark {found['spark']['counts']}"
                )
            found["expected_counts"] = expected
            result[label][mode] = found
    result["findings"] = findings
    if profile_to is not None:
        out = work / "profile-out.jsonl"
        argv = replay_argv(kafka_args, "plain", "process", out)
        result["profile_process_kafka_plain"] = profile(argv, profile_to, timeout_s)
        _remove(out)
    return result
