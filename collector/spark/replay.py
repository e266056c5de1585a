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
import itertools
import json
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa  # type: ignore[import-untyped]

from collector.replay.errors import BadInput, ReplayError
from collector.replay.outputs import JsonlOutput, OutItem, Output, ParquetOutput, TopicOutput
from collector.replay.runner import Plan, Selected, select_record, transform_record
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
from collector.spark.session import parse_conf, start_session

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
    """Run the replay on Spark; raises BadInput before reading anything, else SparkJobFailed."""
    conf = parse_conf(args.spark_conf)
    target = None if args.out == "-" else args.out
    session = start_session("capture replay", args.master, conf)
    if target is not None and isinstance(output, JsonlOutput | ParquetOutput) and not plan.dry_run:
        _refuse_existing(session, target)
    frame = _source_frame(session, source)
    parquet = isinstance(output, ParquetOutput)
    lines = isinstance(output, JsonlOutput) and target is not None and args.with_metadata
    summaries: list[DataFrame] = []
    if plan.dedup:
        selected = frame.mapInArrow(
            _select_stage(plan, source.selection), rows.ddl(rows.SELECTED)
        ).persist()
        summaries.append(selected)
        ranked = _rank(selected.where("summary IS NULL"))
        out = ranked.mapInArrow(
            _transform_stage(plan, source.selection, parquet, lines), rows.ddl(rows.OUT)
        )
    else:
        out = frame.mapInArrow(
            _fused_stage(plan, source.selection, parquet, lines), rows.ddl(rows.OUT)
        )
    out = out.persist()  # the write and the counts read the stages' output once
    summaries.append(out)
    data = out.where("summary IS NULL")
    try:
        written = 0
        if output is not None and not plan.dry_run:
            written = _write(data, output, target)
        summary = Summary(dry_run=plan.dry_run)
        for part in summaries:
            found = part.where("summary IS NOT NULL").select("task", "summary").collect()
            for row in sorted(found, key=lambda r: r["task"]):
                summary.add(rows.decode_summary(bytes(row["summary"])))
    except ReplayError:
        raise
    except Exception as exc:
        raise SparkJobFailed(f"spark job failed: {_first_line(exc)}") from exc
    finally:
        for part in summaries:
            part.unpersist()
    summary.written = written
    if output is not None:
        for what, why in output.failed_reasons:
            summary.fail(what, why)
    return summary


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:500]


def _refuse_existing(session: SparkSession, target: str) -> None:
    jvm: Any = session._jvm
    path = jvm.org.apache.hadoop.fs.Path(target)
    fs = path.getFileSystem(session._jsc.hadoopConfiguration())
    if fs.exists(path):
        raise BadInput(f"output {target} exists: Spark writes a new directory, name another")


# -- sources --------------------------------------------------------------------------------


def _source_frame(session: SparkSession, source: Source) -> DataFrame:
    """The source's records as SOURCE rows: the ranges the single-process source resolves."""
    asyncio.run(_resolve(source))  # open() checks topics and snapshots where each one ends
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
    order = {topic: i for i, topic in enumerate(source.topics)}
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
    logs = [(i, topic, str(path), end) for i, (topic, path, end) in enumerate(source.logs)]
    if not logs:
        return session.createDataFrame([], rows.ddl(rows.SOURCE))
    selection = source.selection
    listing = session.sparkContext.parallelize(logs, len(logs)).toDF(
        "order int, topic string, path string, end_bytes bigint"
    )
    frame = listing.mapInArrow(_read_stage(selection), rows.ddl(rows.SOURCE))
    parallelism = session.sparkContext.defaultParallelism
    # a log is read by one task; spread its records so the stages use every core
    return frame.repartition(parallelism) if len(logs) < parallelism else frame


def _read_stage(selection: Selection) -> Stage:
    def read(batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for listing in batches:
            for order, topic, path, end in zip(
                *(listing.column(n).to_pylist() for n in ("order", "topic", "path", "end_bytes")),
                strict=True,
            ):
                for part in read_log(topic, Path(path), end, selection):
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
    """Rank each record within its event_id by (topic order, partition, offset); no id: 1."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    first = Window.partitionBy("event_id").orderBy("order", "partition", "offset")
    return selected.select(
        *[F.col(f.name) for f in rows.SOURCE],
        F.when(F.col("event_id").isNull(), F.lit(1))
        .otherwise(F.row_number().over(first))
        .cast("int")
        .alias("rank"),
    )


def _transform_stage(plan: Plan, selection: Selection, parquet: bool, lines: bool) -> Stage:
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
            yield rows.batch(rows.OUT, rows.out_columns(written, parquet=parquet, lines=lines))
        yield rows.summary_batch(rows.OUT, _task(), summary)

    return transform


def _fused_stage(plan: Plan, selection: Selection, parquet: bool, lines: bool) -> Stage:
    """SOURCE -> OUT in one task when there is no dedup to wait for."""

    def fused(batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        summary = Summary()
        for batch in batches:
            written = [
                (order, o)
                for order, chosen in _selected(batch, plan, selection, summary)
                for o in transform_record(chosen, plan, summary) or ()
            ]
            yield rows.batch(rows.OUT, rows.out_columns(written, parquet=parquet, lines=lines))
        yield rows.summary_batch(rows.OUT, _task(), summary)

    return fused


# -- outputs ----------------------------------------------------------------------------------


def _write(data: DataFrame, output: Output, target: str | None) -> int:
    """Write the OUT rows; returns how many records were written."""
    from pyspark.sql import functions as F

    if isinstance(output, ParquetOutput) and target is not None:
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
            F.to_date(F.timestamp_millis("src_timestamp_ms")).alias("date"),
        )
        table.write.partitionBy("event", "date").parquet(target)
        return data.count()
    if isinstance(output, JsonlOutput) and target is not None:
        column = F.coalesce("line", "value").cast("string").alias("value")
        data.select(column).write.text(target)
        return data.count()
    assert isinstance(output, JsonlOutput | TopicOutput)
    return asyncio.run(_drive(output, data))


async def _drive(output: Output, data: DataFrame) -> int:
    """A driver-side output (stdout, a topic) gets the rows in source order, in batches."""
    ordered = data.orderBy("src_order", "src_partition", "src_offset")
    found = ordered.toLocalIterator(prefetchPartitions=True)

    def fetch() -> list[OutItem]:  # on a thread: the output's own tasks keep running
        return [rows.out_item(row) for row in itertools.islice(found, DRIVER_BATCH)]

    written = 0
    await output.open()
    try:
        while pending := await asyncio.to_thread(fetch):
            written += await output.write(pending)
    finally:
        await output.close()
    return written
