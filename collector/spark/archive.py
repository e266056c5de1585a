"""`capture archive`: a Spark Structured Streaming job from the event topics into a Parquet lake.

Two streaming queries, each with its own checkpoint (`<checkpoint>/events`,
`<checkpoint>/dead_letters`):

- events: every event topic of the tracking plan (each version's topic as the route table
  gives it; fan-out copies left out, as replay does) and their hot-key overflow lanes, read
  with one `subscribePattern` that matches exactly those names, so a lane (or an event topic)
  created after the start is picked up at a later trigger. Deduplicated by `event_id`
  (dropDuplicatesWithinWatermark), optionally upgraded to each event's newest version with
  replay's own Upgrader, written to `<lake>/events` partitioned by `event` and `date`.
- dead letters: the dead-letter topic into `<lake>/dead_letters`, partitioned by `date`;
  every record once, not deduplicated (each is one rejection).

`date` is the UTC date of the record timestamp (the collector's receive time). First start
reads from the earliest offsets; afterwards the checkpoint decides.

Exactly once comes from Spark's file sink with a checkpoint: a batch's files count only once
its entry is in the table's `_spark_metadata` log. A killed run can leave files in the table
directories that no log entry names (the batch is redone on restart), so read the tables
through Spark (`spark.read.parquet(<lake>/events)` honours the log) or list the files from
`_spark_metadata`; a plain directory listing can show rows twice.

The dedup watermark runs on the archive's own batch time (when a record was read), not the
record timestamp: with the record timestamp Spark drops every row older than the watermark
as late, and records republished with their original receive time (`capture replay
--recover`) or a backlog read out of order would be lost. Two copies of an event_id read more
than the watermark apart are both kept.

Exit codes: 0 stopped cleanly (SIGTERM/SIGINT, or --available-now done), 2 bad input (nothing
started: no topics, a bad flag, no Spark or Java), 1 a query failed.
"""

from __future__ import annotations

import argparse
import importlib
import re
import signal
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from types import FrameType
from typing import TYPE_CHECKING, Any

import msgspec

from collector.hotkeys import overflow_topic
from collector.reload import build_plan
from collector.replay.cli import event_topics, settings_from_flags
from collector.replay.errors import BadInput, ReplayError
from collector.replay.transform import UpgradeFailed, Upgrader, upgraded_record
from collector.settings import Settings, SettingsError
from collector.sinks.base import Record
from collector.spark.session import parse_conf, start_session
from event_schemas import SchemaLoadError, load_registry
from event_schemas.topics import topic_error

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession
    from pyspark.sql.streaming.query import StreamingQuery

# pyarrow ships no type information; a batch is a pyarrow.RecordBatch
Batches = Iterable[Any]

PROG = "capture archive"
DEFAULT_WATERMARK = "1 hour"
DEFAULT_TRIGGER_S = 10.0
EVENTS = "events"
DEAD_LETTERS = "dead_letters"
# what Spark accepts as a watermark delay, checked before Spark starts: "1 hour", "90 seconds"
_INTERVAL = re.compile(
    r"^\s*(\d+\s+(second|minute|hour|day|week)s?\s*)+$",
    re.IGNORECASE,
)
POLL_S = 0.5


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "archive",
        help="stream every event topic into a Parquet lake (Spark)",
        description=_description(),
    )
    add_flags(p)


def _description() -> str:
    return (
        "Stream the event topics (and their overflow lanes) and the dead-letter topic into "
        "Parquet tables <lake>/events (by event and date) and <lake>/dead_letters (by date), "
        "deduplicated by event_id within --dedup-watermark, exactly once through Spark's "
        "file sink and checkpoints. Read the tables with Spark."
    )


def add_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bootstrap-servers", required=True, help="the Kafka cluster to read")
    p.add_argument("--lake", required=True, help="where the tables go (any path Spark writes)")
    p.add_argument("--checkpoint", help="checkpoint directory (default: <lake>/_checkpoints)")
    p.add_argument(
        "--topic",
        action="append",
        default=[],
        help="an event topic (repeatable; default: every event topic and its overflow lane)",
    )
    p.add_argument(
        "--dedup-watermark",
        default=DEFAULT_WATERMARK,
        help=f"drop an event_id read again within this long (default: {DEFAULT_WATERMARK})",
    )
    p.add_argument("--upgrade", action="store_true", help="upgrade to each event's newest version")
    p.add_argument(
        "--trigger-seconds",
        type=float,
        default=DEFAULT_TRIGGER_S,
        help=f"seconds between micro-batches (default: {DEFAULT_TRIGGER_S:g})",
    )
    p.add_argument(
        "--available-now",
        "--once",
        dest="available_now",
        action="store_true",
        help="archive what is in the topics now, then stop",
    )
    p.add_argument("--master", help="Spark master (default: local[*], or spark-submit's)")
    p.add_argument("--spark-conf", action="append", default=[], metavar="K=V", help="Spark setting")
    routing = p.add_argument_group(
        "routing", "as the collector routes; defaults from CAPTURE_* variables, as `serve`"
    )
    routing.add_argument("--topic-prefix", help="topic of event E is PREFIX+E")
    routing.add_argument("--topic-template", help="topic of an event, e.g. events.{event}")
    routing.add_argument("--dead-letter-topic")
    routing.add_argument("--config-file", help="TOML with the [routing] fan-out rules")
    routing.add_argument("--schemas-dir", help="the tracking plan (default: the bundled one)")
    p.set_defaults(data_dir=None)  # replay's settings helper reads it; the archive has no file log


@dataclass(frozen=True)
class Job:
    """Everything the queries need, resolved before Spark starts."""

    servers: str
    events_table: str
    dead_letters_table: str
    events_checkpoint: str
    dead_letters_checkpoint: str
    events_pattern: str
    dead_letter_pattern: str
    watermark: str
    trigger_s: float
    available_now: bool
    upgrader: Upgrader | None
    master: str | None
    conf: dict[str, str]
    topics: tuple[str, ...] = field(default=())


def build_job(args: argparse.Namespace) -> Job:
    """Raises BadInput (or SettingsError / SchemaLoadError) for anything that cannot run."""
    settings = settings_from_flags(args)
    schemas = load_registry(settings.schemas_dir)
    if not _INTERVAL.match(args.dedup_watermark):
        raise BadInput(
            f"--dedup-watermark {args.dedup_watermark!r}: use e.g. '1 hour' or '30 minutes'"
        )
    if not args.trigger_seconds > 0:
        raise BadInput(f"--trigger-seconds {args.trigger_seconds:g}: must be above 0")
    conf = parse_conf(args.spark_conf)
    dead_letter = settings.dead_letter_topic
    topics = _topics(args, settings, schemas) if not args.topic else list(args.topic)
    for topic in [*topics, dead_letter]:
        problem = topic_error(topic)
        if problem is not None:
            raise BadInput(f"topic {topic!r}: {problem}")
    topics = [t for t in dict.fromkeys(topics) if t != dead_letter]
    if not topics:
        raise BadInput("no event topics to archive: the plan has no events and no --topic given")
    lake = args.lake.rstrip("/")
    if not lake:
        raise BadInput("--lake: empty path")
    checkpoint = (args.checkpoint or f"{lake}/_checkpoints").rstrip("/")
    return Job(
        servers=args.bootstrap_servers,
        events_table=f"{lake}/{EVENTS}",
        dead_letters_table=f"{lake}/{DEAD_LETTERS}",
        events_checkpoint=f"{checkpoint}/{EVENTS}",
        dead_letters_checkpoint=f"{checkpoint}/{DEAD_LETTERS}",
        events_pattern=exact_pattern(topics),
        dead_letter_pattern=exact_pattern([dead_letter]),
        watermark=args.dedup_watermark.strip(),
        trigger_s=args.trigger_seconds,
        available_now=args.available_now,
        upgrader=Upgrader(schemas) if args.upgrade else None,
        master=args.master,
        conf=conf,
        topics=tuple(topics),
    )


def _topics(args: argparse.Namespace, settings: Settings, schemas: Any) -> list[str]:
    """Each event's topics (all versions, as `capture serve` routes them) and their lanes."""
    routes = build_plan(schemas, settings).routes
    own: list[str] = []
    for event in dict.fromkeys(schema.event for schema in schemas):
        own += event_topics(event, [], schemas, routes)
    return [*own, *(overflow_topic(t) for t in own)]


def exact_pattern(topics: Sequence[str]) -> str:
    """A Java regex matching exactly these topic names (Kafka's characters: [a-zA-Z0-9._-])."""
    return "|".join(re.escape(t) for t in topics)


def run(args: argparse.Namespace) -> int:
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        return _run(args, stop)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _run(args: argparse.Namespace, stop: threading.Event) -> int:
    try:
        job = build_job(args)
        spark = start_session("capture-archive", job.master, job.conf)
    except (ReplayError, SchemaLoadError, SettingsError) as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return exc.exit_code if isinstance(exc, ReplayError) else 2
    try:
        if stop.is_set():
            return 0
        try:
            queries = start_queries(spark, job)
        except Exception as exc:  # noqa: BLE001  # Spark refused the plan or paths: nothing ran
            print(f"{PROG}: cannot start: {_one_line(exc)}", file=sys.stderr)
            return 2
        return _watch(queries, job, stop)
    finally:
        spark.stop()


# Spark 4.1.1's Kafka micro-batch reader (v2) fails a query restarted on a batch that was
# planned but not committed (a kill mid-batch): its progress metrics read offsets it has not
# fetched yet (SPARK-55271). Spark's v1 Kafka source reads the same checkpoints and has no
# such step; a --spark-conf naming this setting wins.
V2_READERS_OFF = "spark.sql.streaming.disabledV2MicroBatchReaders"
KAFKA_PROVIDER = "org.apache.spark.sql.kafka010.KafkaSourceProvider"


def start_queries(spark: SparkSession, job: Job) -> list[StreamingQuery]:
    if V2_READERS_OFF not in job.conf:
        spark.conf.set(V2_READERS_OFF, KAFKA_PROVIDER)
    events = _events_frame(spark, job)
    dead = _dead_letters_frame(spark, job)
    started: list[StreamingQuery] = []
    try:
        started.append(_start(events, job, job.events_table, job.events_checkpoint, ["event"]))
        started.append(_start(dead, job, job.dead_letters_table, job.dead_letters_checkpoint, []))
    except Exception:
        for query in started:
            query.stop()
        raise
    return started


def _source(spark: SparkSession, job: Job, pattern: str) -> DataFrame:
    return (
        spark.readStream.format("kafka")
        .option("kafka.bootstrap.servers", job.servers)
        .option("subscribePattern", pattern)
        .option("startingOffsets", "earliest")
        .option("includeHeaders", "true")
        .load()
    )


def _header(name: str) -> str:
    return f"CAST(try_element_at(filter(headers, h -> h.key = '{name}'), 1).value AS STRING)"


def _common(frame: DataFrame) -> list[Any]:
    from pyspark.sql import functions as F

    return [
        F.col("topic"),
        F.col("partition"),
        F.col("offset"),
        F.expr("unix_millis(timestamp)").alias("timestamp_ms"),
        F.col("key").cast("string").alias("key"),
    ]


# the UTC date of the record timestamp, whatever the session's time zone
_DATE = "date_from_unix_date(CAST(floor(unix_millis(timestamp) / 86400000) AS INT))"


def _events_frame(spark: SparkSession, job: Job) -> DataFrame:
    from pyspark.sql import functions as F

    raw = _source(spark, job, job.events_pattern)
    rows = raw.select(
        *_common(raw),
        F.expr(_header("event")).alias("event"),
        F.expr(f"try_cast({_header('version')} AS INT)").alias("version"),
        F.expr(_header("event_id")).alias("event_id"),
        F.col("value").cast("string").alias("value"),
        F.expr(_DATE).alias("date"),
        F.current_timestamp().alias("_read_at"),  # the batch's time, fixed when a batch reruns
    )
    # a record without an event_id is its own key: never dropped as a duplicate
    rows = rows.withColumn(
        "_dedup_key",
        F.coalesce(F.col("event_id"), F.concat_ws("/", "topic", "partition", "offset")),
    )
    deduped = (
        rows.withWatermark("_read_at", job.watermark)
        .dropDuplicatesWithinWatermark(["_dedup_key"])
        .drop("_read_at", "_dedup_key")
    )
    if job.upgrader is None:
        return deduped
    return deduped.mapInArrow(upgrade_batches(job.upgrader), deduped.schema)


def _dead_letters_frame(spark: SparkSession, job: Job) -> DataFrame:
    from pyspark.sql import functions as F

    raw = _source(spark, job, job.dead_letter_pattern)
    return raw.select(
        *_common(raw),
        F.expr(_header("reason")).alias("reason"),
        F.expr(_header("event")).alias("event"),
        F.expr(_header("event_id")).alias("event_id"),
        F.col("value").cast("string").alias("value"),
        F.expr(_DATE).alias("date"),
    )


def upgrade_batches(
    upgrader: Upgrader,
) -> Callable[[Batches], Iterator[Any]]:
    """For mapInArrow: each row's value and version as `capture replay --upgrade` writes them
    (Upgrader + upgraded_record). A row that cannot be upgraded is archived as it came: the
    archive keeps every event, its version column says which it is."""

    def apply(batches: Batches) -> Iterator[Any]:
        pa: Any = importlib.import_module("pyarrow")

        for batch in batches:
            names = batch.schema.names
            at_value, at_version = names.index("value"), names.index("version")
            values = batch.column(at_value).to_pylist()
            versions = batch.column(at_version).to_pylist()
            for i, text in enumerate(values):
                upgraded = _upgrade(upgrader, text)
                if upgraded is not None:
                    values[i], versions[i] = upgraded
            columns = list(batch.columns)
            columns[at_value] = pa.array(values, type=batch.schema.field(at_value).type)
            columns[at_version] = pa.array(versions, type=batch.schema.field(at_version).type)
            yield pa.RecordBatch.from_arrays(columns, schema=batch.schema)

    return apply


def _upgrade(upgrader: Upgrader, text: str | None) -> tuple[str, int] | None:
    if text is None:
        return None
    value = text.encode()
    try:
        doc = msgspec.json.decode(value)
        if not isinstance(doc, dict):
            return None
        upgraded = upgrader.upgrade(doc)
    except (msgspec.DecodeError, UpgradeFailed):
        return None
    if upgraded is None:
        return None
    record = upgraded_record(Record("", None, value, [], 0), *upgraded)
    return record.value.decode(), int(upgraded[0]["version"])


def _start(frame: DataFrame, job: Job, path: str, checkpoint: str, by: list[str]) -> StreamingQuery:
    writer = (
        frame.writeStream.format("parquet")
        .outputMode("append")
        .option("path", path)
        .option("checkpointLocation", checkpoint)
        .partitionBy(*by, "date")
        .queryName(path.rsplit("/", 1)[-1])
    )
    if job.available_now:
        writer = writer.trigger(availableNow=True)
    else:
        writer = writer.trigger(processingTime=f"{job.trigger_s:g} seconds")
    return writer.start()


@dataclass
class Totals:
    """This run's batches of one query, from its progress reports (by batch id)."""

    batches: dict[int, dict[str, Any]] = field(default_factory=dict)

    def add(self, query: StreamingQuery) -> None:
        for progress in query.recentProgress:
            data = msgspec.json.decode(progress.json)
            if data.get("numInputRows", 0) or data["batchId"] not in self.batches:
                self.batches[data["batchId"]] = data

    def line(self, name: str, path: str) -> str:
        with_rows = [b for b in self.batches.values() if b.get("numInputRows", 0)]
        read = sum(int(b.get("numInputRows", 0)) for b in with_rows)
        dropped = late = 0
        for batch in with_rows:
            for op in batch.get("stateOperators", []):
                dropped += int(op.get("customMetrics", {}).get("numDroppedDuplicateRows", 0))
                late += int(op.get("numRowsDroppedByWatermark", 0))
        written = read - dropped - late
        return (
            f"{PROG}: {name}: {len(with_rows)} batches, {read} records read, "
            f"{dropped} duplicates dropped, {late} late, {written} rows written to {path}"
        )


def _watch(queries: list[StreamingQuery], job: Job, stop: threading.Event) -> int:
    names = [(EVENTS, job.events_table), (DEAD_LETTERS, job.dead_letters_table)]
    totals = [Totals() for _ in queries]
    failed: list[str] = []
    while not stop.is_set():
        for query, total in zip(queries, totals, strict=True):
            total.add(query)
        if any(q.exception() is not None for q in queries):
            break
        if all(not q.isActive for q in queries):
            break  # --available-now: both caught up
        stop.wait(POLL_S)
    for query, total, (name, _) in zip(queries, totals, names, strict=True):
        if query.isActive:
            query.stop()
        total.add(query)
        error = query.exception()
        if error is not None:
            failed.append(f"{PROG}: {name} failed: {_one_line(error)}")
    for total, (name, path) in zip(totals, names, strict=True):
        print(total.line(name, path), file=sys.stderr)
    for line in failed:
        print(line, file=sys.stderr)
    return 1 if failed else 0


def _one_line(exc: object) -> str:
    text = " ".join(str(exc).split())
    return text[:500]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=_description())
    add_flags(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    return run(build_parser().parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
