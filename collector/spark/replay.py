"""`capture replay --engine spark`: the same replay, with Spark tasks doing the per-record work.

The rules are the single-process engine's own functions, run inside Spark's Python workers
through mapInArrow: `select_record` (decode, selection, filter), `transform_record` (upgrade,
recovery), the file log's `read_log`, the outputs' `jsonl_line` / `parquet_row`. The Plan,
tracking plan included, is pickled to the workers as it is. Spark adds only what one process
cannot: reading partitions in parallel, a deterministic dedup (the first record of an
event_id by topic order, partition and offset, as the single process meets them), and
distributed writers (JSON lines or Parquet partitioned by event and date, any Hadoop path).

Kafka offsets are resolved on the driver by the single-process KafkaSource (offsets-for-times
for --since/--until, --from/--to-offset), then read with the Kafka connector's `assign`,
`startingOffsets` and `endingOffsets`: both engines read exactly the same records. Counts come
from one summary row per task, folded with Summary.add. Must not define a rule of its own.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import itertools
import json
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa  # type: ignore[import-untyped]

from collector.replay.errors import BadInput, ReplayError, Unavailable
from collector.replay.outputs import JsonlOutput, OutItem, Output, ParquetOutput
from collector.replay.runner import (
    Plan,
    ReplayAborted,
    Selected,
    select_record,
    transform_record,
)
from collector.replay.sources import (
    FileLogSource,
    KafkaSource,
    Selection,
    Source,
    SourceRecord,
    read_log,
)
from collector.replay.summary import Summary
from collector.spark import rows
from collector.spark.session import parse_conf, start_session, stop_session

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

# Rows handed to the driver per write of a driver-side output (stdout, a topic)
DRIVER_BATCH = 1_000
Stage = Callable[[Iterable[pa.RecordBatch]], Iterable[pa.RecordBatch]]


class SparkJobFailed(ReplayError):
    """A Spark job failed (a broker gone, an executor lost, a path refused): exit 1."""


def run_spark(
    args: argparse.Namespace, source: Source, output: Output | None, plan: Plan
) -> Summary:
    """Run the replay on Spark. Raises BadInput before any Spark job (and, where it can be
    known without Spark, before Spark starts), ReplayAborted when a driver-side output's
    broker goes away (with the summary so far), SparkJobFailed when a job fails."""
    from pyspark import SparkContext

    conf = parse_conf(args.spark_conf)
    target = None if args.out == "-" else args.out
    distributed = target is not None and isinstance(output, JsonlOutput | ParquetOutput)
    writes = output is not None and not plan.dry_run
    if target is not None and distributed and writes:
        _check_local_target(target)
    asyncio.run(_resolve(source))  # checks topics, snapshots where each one ends: no Spark
    # a Spark context already running in this process is a caller's (a test's): leave it up
    owned = SparkContext._active_spark_context is None
    try:
        session = start_session("capture replay", args.master, conf)
    except ReplayError:
        raise
    except Exception as exc:  # the JVM or Ivy failed: say why, exit 1
        raise SparkJobFailed(f"spark did not start: {_reason(exc)}") from exc
    try:
        if target is not None and distributed and writes:
            _refuse_existing(session, target)
        driver = None if distributed or not writes else output
        with asyncio.Runner() as loop:  # a driver-side output's sink lives on this loop
            if driver is not None:
                loop.run(driver.open())  # a sink that is down fails before any job
            try:
                summary = _run_jobs(session, source, output, plan, args, loop)
            finally:
                if driver is not None:
                    loop.run(driver.close())
    finally:
        if owned:
            stop_session(session)
    if output is not None:
        for what, why in output.failed_reasons:
            summary.fail(what, why)
    return summary


def _run_jobs(
    session: SparkSession,
    source: Source,
    output: Output | None,
    plan: Plan,
    args: argparse.Namespace,
    loop: asyncio.Runner,
) -> Summary:
    target = None if args.out == "-" else args.out
    frame = _source_frame(session, source)
    distributed = target is not None and isinstance(output, JsonlOutput | ParquetOutput)
    needs = rows.Needs(
        parquet=isinstance(output, ParquetOutput),
        lines=distributed and isinstance(output, JsonlOutput) and args.with_metadata,
        record=not distributed and output is not None and not plan.dry_run,
    )
    summaries: list[DataFrame] = []
    if plan.dedup:
        selected = frame.mapInArrow(
            _select_stage(plan, source.selection), rows.ddl(rows.SELECTED)
        ).persist()
        summaries.append(selected)
        ranked = _rank(selected.where("summary IS NULL"))
        out = ranked.mapInArrow(_transform_stage(plan, source.selection, needs), rows.ddl(rows.OUT))
    else:
        out = frame.mapInArrow(_fused_stage(plan, source.selection, needs), rows.ddl(rows.OUT))
    out = out.persist()  # the write and the counts read the stages' output once
    summaries.append(out)
    data = out.where("summary IS NULL")

    def counts(written: int | None) -> Summary:
        """The tasks' summaries in one job; `written` as the output reports it, or None for
        a Spark writer, which writes every row the stages emitted or fails the job."""
        parts = [p.where("summary IS NOT NULL").select("task", "summary") for p in summaries]
        found = functools.reduce(lambda a, b: a.unionByName(b), parts).collect()
        summary = Summary(dry_run=plan.dry_run)
        for row in sorted(found, key=lambda r: r["task"]):
            summary.add(rows.decode_summary(bytes(row["summary"])))
        if written is not None:  # else the stages' count of rows handed to the output
            summary.written = written
        return summary

    try:
        if output is None or plan.dry_run:
            return counts(0)
        if target is not None and distributed:
            _write(data, output, target)
            return counts(None)
        return counts(loop.run(_drive(output, data)))
    except Unavailable as exc:  # a driver-side output's broker went away mid-write
        raise ReplayAborted(counts(exc.written), str(exc)) from exc
    except ReplayError:
        raise
    except Exception as exc:  # Py4J and Spark raise many kinds; all exit 1
        raise SparkJobFailed(f"spark job failed: {_reason(exc)}") from exc
    finally:
        for part in summaries:
            part.unpersist()


def _reason(exc: BaseException) -> str:
    """The innermost cause: Py4J's own message only names the Java method it called."""
    java: Any = getattr(exc, "java_exception", None)
    if java is not None:
        while java.getCause() is not None:
            java = java.getCause()
        text = f"{java.getClass().getSimpleName()}: {java.getMessage()}"
    else:
        text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:500]


def _check_local_target(target: str) -> None:
    """A local --out (no scheme, or file:) is checked as the process engine checks its file:
    it must not exist, and its nearest existing parent must be a writable directory."""
    scheme, sep, rest = target.partition("://")
    if sep and scheme != "file":
        return  # another filesystem: Hadoop checks it once Spark is up
    path = Path(rest if sep else target)
    if path.exists():
        raise BadInput(f"output {target} exists: Spark writes a new directory, name another")
    parent = path.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise BadInput(f"output {target} is not writable: {parent} is not a writable directory")


def _refuse_existing(session: SparkSession, target: str) -> None:
    jvm: Any = session._jvm
    try:
        path = jvm.org.apache.hadoop.fs.Path(target)
        fs = path.getFileSystem(session._jsc.hadoopConfiguration())
        exists = bool(fs.exists(path))
    except Exception as exc:  # Hadoop cannot resolve or reach it
        raise BadInput(f"output {target} is not writable: {_reason(exc)}") from exc
    if exists:
        raise BadInput(f"output {target} exists: Spark writes a new directory, name another")


# -- sources --------------------------------------------------------------------------------


def _source_frame(session: SparkSession, source: Source) -> DataFrame:
    """The source's records as SOURCE rows: the ranges the single-process source resolved."""
    if isinstance(source, KafkaSource):
        return _kafka_frame(session, source)
    assert isinstance(source, FileLogSource)
    return _file_frame(session, source)


async def _resolve(source: Source) -> None:
    try:
        await source.open()
    finally:
        await source.close()


def _kafka_frame(session: SparkSession, source: KafkaSource) -> DataFrame:
    from pyspark.sql import functions as F

    ranges = source.ranges
    if not ranges:
        return session.createDataFrame([], rows.ddl(rows.SOURCE))
    order: dict[str, int] = {}
    for i, topic in enumerate(source.topics):
        order.setdefault(topic, i)
    assign: dict[str, list[int]] = {}
    starting: dict[str, dict[str, int]] = {}
    ending: dict[str, dict[str, int]] = {}
    for (topic, partition), (start, stop) in sorted(ranges.items()):
        assign.setdefault(topic, []).append(partition)
        starting.setdefault(topic, {})[str(partition)] = start
        ending.setdefault(topic, {})[str(partition)] = stop
    raw = (
        session.read.format("kafka")
        .option("kafka.bootstrap.servers", source.bootstrap_servers)
        .option("kafka.request.timeout.ms", str(source.request_timeout_ms))
        # a broker gone mid-job fails the job within the replay's timeout, as the process
        # engine stalls out (Spark's own default waits spark.network.timeout, 120 s)
        .option("kafka.default.api.timeout.ms", str(source.request_timeout_ms))
        .option("kafkaConsumer.pollTimeoutMs", str(source.request_timeout_ms))
        .option("assign", json.dumps(assign))
        .option("startingOffsets", json.dumps(starting))
        .option("endingOffsets", json.dumps(ending))
        .option("includeHeaders", "true")
        .load()
    )
    topic_order = F.create_map(*[x for t, i in order.items() for x in (F.lit(t), F.lit(i))])
    return raw.select(
        topic_order[F.col("topic")].cast("int").alias("order"),
        "topic",
        "partition",
        "offset",
        F.unix_millis("timestamp").alias("timestamp_ms"),
        "key",
        F.coalesce("headers", F.array().cast(rows.HEADERS_DDL)).alias("headers"),
        F.coalesce("value", F.lit(b"")).alias("value"),
        F.lit(None).cast("string").alias("malformed"),
    )


def _file_frame(session: SparkSession, source: FileLogSource) -> DataFrame:
    """One task per log file (a topic's partition), each row ordered as the source reads."""
    order: dict[str, int] = {}
    for i, topic in enumerate(source.topics):
        order.setdefault(topic, i)
    logs = [
        (order[topic], topic, partition, str(path), end)
        for topic, partition, path, end in source.logs
    ]
    if not logs:
        return session.createDataFrame([], rows.ddl(rows.SOURCE))
    selection = source.selection
    listing = session.sparkContext.parallelize(logs, len(logs)).toDF(
        "order int, topic string, partition int, path string, end_bytes bigint"
    )
    frame = listing.mapInArrow(_read_stage(selection), rows.ddl(rows.SOURCE))
    parallelism = session.sparkContext.defaultParallelism
    # a log is read by one task; spread its records so the stages use every core
    return frame.repartition(parallelism) if len(logs) < parallelism else frame


def _read_stage(selection: Selection) -> Stage:
    def read(batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for listing in batches:
            names = ("order", "topic", "partition", "path", "end_bytes")
            for order, topic, partition, path, end in zip(
                *(listing.column(n).to_pylist() for n in names), strict=True
            ):
                for part in read_log(topic, Path(path), end, selection, partition=partition):
                    yield rows.batch(rows.SOURCE, rows.source_columns((order, i) for i in part))

    return read


# -- the stages: replay's own per-record functions ---------------------------------------------


def _task() -> int:
    from pyspark import TaskContext

    context = TaskContext.get()
    return context.partitionId() if context is not None else 0


def _selected(
    batch: pa.RecordBatch, plan: Plan, selection: Selection, summary: Summary
) -> Iterator[tuple[int, Selected]]:
    for order, item in rows.items(batch):
        if isinstance(item, SourceRecord) and not selection.keeps(item.offset, item.timestamp_ms):
            continue  # outside the window: the sources' own rule, as they read (never counted)
        chosen = select_record(item, plan, summary)
        if chosen is not None:
            yield order, chosen


def _select_stage(plan: Plan, selection: Selection) -> Stage:
    """SOURCE -> SELECTED: decode and filter; matched records keep their event_id."""

    def select(batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        summary = Summary()
        for batch in batches:
            chosen = list(_selected(batch, plan, selection, summary))
            columns = rows.source_columns((order, s.item) for order, s in chosen)
            ids = [s.event_id for _, s in chosen]
            columns["event_id"] = [i if isinstance(i, str) else None for i in ids]
            yield rows.batch(rows.SELECTED, columns)
        yield rows.summary_batch(rows.SELECTED, _task(), summary)

    return select


def _rank(selected: DataFrame) -> DataFrame:
    """Rank each record within its event_id by (topic order, partition, offset). Records
    without one are rank 1 and skip the window (one task would sort them all otherwise)."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    first = Window.partitionBy("event_id").orderBy("order", "partition", "offset")
    columns = [F.col(f.name) for f in rows.SOURCE]
    with_id = selected.where("event_id IS NOT NULL").select(
        *columns, F.row_number().over(first).cast("int").alias("rank")
    )
    without = selected.where("event_id IS NULL").select(*columns, F.lit(1).alias("rank"))
    return with_id.unionByName(without)


def _transform_stage(plan: Plan, selection: Selection, needs: rows.Needs) -> Stage:
    """RANKED -> OUT: a rank above 1 is a duplicate; the rest are upgraded or recovered."""

    def transform(batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        summary = Summary()
        again = Summary()  # these records were counted when first selected
        for batch in batches:
            ranks = batch.column("rank").to_pylist()
            written = []
            for (order, chosen), rank in zip(
                _selected(batch, plan, selection, again), ranks, strict=True
            ):
                if rank > 1:
                    summary.deduplicated += 1
                    continue
                written += [(order, o) for o in transform_record(chosen, plan, summary) or ()]
            summary.written += len(written)  # emitted; the driver sets what was written
            yield rows.batch(rows.OUT, rows.out_columns(written, needs))
        yield rows.summary_batch(rows.OUT, _task(), summary)

    return transform


def _fused_stage(plan: Plan, selection: Selection, needs: rows.Needs) -> Stage:
    """SOURCE -> OUT in one task when there is no dedup to wait for."""

    def fused(batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        summary = Summary()
        for batch in batches:
            written = [
                (order, o)
                for order, chosen in _selected(batch, plan, selection, summary)
                for o in transform_record(chosen, plan, summary) or ()
            ]
            summary.written += len(written)  # emitted; the driver sets what was written
            yield rows.batch(rows.OUT, rows.out_columns(written, needs))
        yield rows.summary_batch(rows.OUT, _task(), summary)

    return fused


# -- outputs ----------------------------------------------------------------------------------


def _write(data: DataFrame, output: Output, target: str) -> None:
    """Write the OUT rows with Spark's own writers (all of them, or the job fails)."""
    from pyspark.sql import functions as F

    if isinstance(output, ParquetOutput):
        table = data.select(
            F.col("src_topic").alias("topic"),
            F.col("src_partition").alias("partition"),
            F.col("src_offset").alias("offset"),
            F.col("src_timestamp_ms").alias("timestamp_ms"),
            F.col("pq_key").alias("key"),
            "event",
            "version",
            "event_id",
            F.col("pq_value").alias("value"),
            # the UTC day by arithmetic: --spark-conf may change the session's time zone
            F.date_from_unix_date(
                F.floor(F.col("src_timestamp_ms") / 86_400_000).cast("int")
            ).alias("date"),
        )
        table.write.partitionBy("event", "date").parquet(target)
        return
    if isinstance(output, JsonlOutput):
        column = F.coalesce("line", "value").cast("string").alias("value")
        data.select(column).write.text(target)
        return
    raise AssertionError(f"{type(output).__name__} is written from the driver")


async def _drive(output: Output, data: DataFrame) -> int:
    """A driver-side output (stdout, a topic) gets the rows in source order, in batches.
    The output is opened and closed by the caller; Unavailable carries the count written."""
    ordered = data.orderBy("src_order", "src_partition", "src_offset")
    found = ordered.toLocalIterator(prefetchPartitions=True)

    def fetch() -> list[OutItem]:  # on a thread: the output's own tasks keep running
        return [rows.out_item(row) for row in itertools.islice(found, DRIVER_BATCH)]

    written = 0
    try:
        while pending := await asyncio.to_thread(fetch):
            try:
                written += await output.write(pending)
            except Unavailable as exc:
                raise Unavailable(str(exc), written=written + exc.written) from exc
    finally:
        close = getattr(found, "close", None)
        if close is not None:
            close()  # the iterator's socket to the JVM
    return written
