"""`capture replay`: parse flags into a source, an output and a plan, run, print the summary.

Topics come from the collector's own settings (CAPTURE_* variables, the config file's
`[routing]`), overridable by flags, through `collector.reload.build_plan`: replay reads and
recovers into exactly the topics `capture serve` writes. Exit codes: 0 done, 2 bad input
(nothing was read), 1 the broker went away mid-replay. The summary goes to stderr, so JSON
lines on stdout stay clean. No pipeline logic here.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from collector.hotkeys import overflow_topic
from collector.replay.errors import BadInput, ReplayError
from collector.replay.outputs import JsonlOutput, Output, ParquetOutput, TopicOutput
from collector.replay.runner import Plan, ReplayAborted, run_replay
from collector.replay.select import Filter, parse_where
from collector.replay.sources import FileLogSource, KafkaSource, Selection, Source
from collector.replay.transform import Upgrader
from collector.settings import Settings, SettingsError, load_settings
from collector.sinks.base import Sink
from collector.sinks.file import FileSink
from collector.spark.options import add_engine_arguments
from event_schemas import SchemaLoadError, SchemaRegistry, load_registry
from event_schemas.topics import topic_error

if TYPE_CHECKING:
    from collector.routing import RouteTable

DEFAULT_RATE_PER_S = 1_000.0


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "replay",
        help="replay Kafka topics or the file sink's log into files or topics",
        description="Read topics (Kafka with --bootstrap-servers, else the file sink's log "
        "in --data-dir) without joining a consumer group, select, filter, transform, and "
        "write JSON lines, Parquet, or republish. Prints exact counts on stderr.",
    )
    src = p.add_argument_group("source")
    src.add_argument("--bootstrap-servers", help="read Kafka here (else the file log)")
    src.add_argument("--data-dir", help="the file sink's data directory (CAPTURE_DATA_DIR)")
    src.add_argument("--topic", action="append", default=[], help="a topic (repeatable)")
    src.add_argument("--event", action="append", default=[], help="an event's topic + filter")
    src.add_argument("--dead-letters", action="store_true", help="read the dead-letter topic")
    routing = p.add_argument_group(
        "routing", "as the collector routes; defaults from CAPTURE_* variables, as `serve`"
    )
    routing.add_argument("--topic-prefix", help="topic of event E is PREFIX+E")
    routing.add_argument("--topic-template", help="topic of an event, e.g. events.{event}")
    routing.add_argument("--dead-letter-topic")
    routing.add_argument(
        "--config-file", help="TOML with the [routing] fan-out rules and [segment] map"
    )
    src.add_argument("--request-timeout-ms", type=int, default=10_000)
    sel = p.add_argument_group("selection")
    sel.add_argument("--since", help="ISO 8601 time, inclusive (no offset: UTC)")
    sel.add_argument("--until", help="ISO 8601 time, exclusive (no offset: UTC)")
    sel.add_argument("--from-offset", type=int, help="first offset per partition")
    sel.add_argument("--to-offset", type=int, help="offset per partition to stop before")
    sel.add_argument("--version", type=int, action="append", default=[])
    sel.add_argument("--user-id", action="append", default=[])
    sel.add_argument("--anonymous-id", action="append", default=[])
    sel.add_argument("--where", action="append", default=[], help="a.b=v, !=, <, >, `a exists`")
    out = p.add_argument_group("output")
    out.add_argument("--out", default="-", help="output file (default: stdout)")
    out.add_argument("--format", choices=("jsonl", "parquet"), default="jsonl")
    out.add_argument("--with-metadata", action="store_true", help="JSONL with topic/offset/...")
    out.add_argument("--to-topic", help="republish to this topic (same broker or data dir)")
    out.add_argument("--to-bootstrap-servers", help="republish to another Kafka cluster")
    out.add_argument("--rate", type=float, default=DEFAULT_RATE_PER_S, help="records/s")
    tr = p.add_argument_group("transforms")
    tr.add_argument("--dedup", action="store_true", help="keep the first of each event_id")
    tr.add_argument("--upgrade", action="store_true", help="upgrade to each event's newest version")
    tr.add_argument("--recover", action="store_true", help="republish dead letters now valid")
    tr.add_argument("--schemas-dir", help="the tracking plan (default: the bundled one)")
    tr.add_argument("--dry-run", action="store_true", help="only count; write nothing")
    add_engine_arguments(p)


def run(args: argparse.Namespace) -> int:
    try:
        source, output, plan = _build(args)
        if args.engine == "spark":
            from collector.spark.session import check_requirements

            check_requirements()  # pyspark and Java, before anything imports them
            from collector.spark.replay import run_spark

            summary = run_spark(args, source, output, plan)
        else:
            summary = asyncio.run(run_replay(source, output, plan))
    except ReplayAborted as exc:
        print(exc.summary.render(), file=sys.stderr)
        print(f"capture replay: {exc}", file=sys.stderr)
        return exc.exit_code
    except (ReplayError, SchemaLoadError, SettingsError) as exc:
        print(f"capture replay: {exc}", file=sys.stderr)
        return exc.exit_code if isinstance(exc, ReplayError) else 2
    print(summary.render(), file=sys.stderr)
    return 0


def settings_from_flags(args: argparse.Namespace) -> Settings:
    """The collector's settings from the environment, with replay's flags on top."""
    flags = {
        "topic_prefix": args.topic_prefix,
        "topic_template": args.topic_template,
        "dead_letter_topic": args.dead_letter_topic,
        "config_file": args.config_file,
        "schemas_dir": args.schemas_dir,
        "data_dir": args.data_dir,
    }
    return load_settings(os.environ, flags)


def event_topics(
    event: str, versions: list[int], schemas: SchemaRegistry, routes: RouteTable
) -> list[str]:
    """The topics the collector writes `event` to: per version (a template or a schema's
    x-topic may differ by version), fan-out copies left out."""
    known = versions or schemas.versions(event) or [1]
    return list(dict.fromkeys(routes.route_for(event, version)[0] for version in known))


def _build(args: argparse.Namespace) -> tuple[Source, Output | None, Plan]:
    settings = settings_from_flags(args)
    needs_plan = bool(args.upgrade or args.recover or args.event)
    schemas = load_registry(settings.schemas_dir) if needs_plan else None
    routes = None
    if schemas is not None:
        # here, not at the top: it brings in the HTTP side, which a plain replay never needs
        from collector.reload import build_plan

        routes = build_plan(schemas, settings).routes
    topics = list(args.topic)
    # Kafka's rules, as for every topic the collector writes; for the file log a topic is
    # also a file name, so this keeps reads and writes inside the data directory.
    for flag, topic in [*(("--topic", t) for t in topics), ("--to-topic", args.to_topic)]:
        problem = topic_error(topic) if topic is not None else None
        if problem is not None:
            raise BadInput(f"{flag}: {problem}")
    optional: list[str] = []  # the events' overflow lanes: read when they exist
    if schemas is not None and routes is not None:
        for event in args.event:
            own = event_topics(event, list(args.version), schemas, routes)
            topics += own
            optional += [overflow_topic(t) for t in own]
    optional = [t for t in dict.fromkeys(optional) if t not in topics]
    if args.dead_letters:
        topics.append(settings.dead_letter_topic)
    topics = list(dict.fromkeys(topics))  # a topic named twice is read once, first place kept
    if not topics:
        raise BadInput("name what to replay: --topic, --event or --dead-letters")
    if args.recover and not args.dead_letters:
        raise BadInput("--recover reads the dead letters: add --dead-letters")
    if args.recover and (args.to_topic or args.out != "-"):
        raise BadInput("--recover republishes to each event's own topic: no --to-topic/--out")
    selection = Selection(
        since_ms=_time_ms(args.since, "--since"),
        until_ms=_time_ms(args.until, "--until"),
        from_offset=args.from_offset,
        to_offset=args.to_offset,
    )
    selection.check()
    plan = Plan(
        filter=Filter(
            events=frozenset(args.event),
            versions=frozenset(args.version),
            user_ids=frozenset(args.user_id),
            anonymous_ids=frozenset(args.anonymous_id),
            where=tuple(parse_where(w) for w in args.where),
        ),
        dead_letter_topic=settings.dead_letter_topic,
        dedup=args.dedup,
        upgrader=Upgrader(schemas) if args.upgrade and schemas is not None else None,
        schemas=schemas,
        dry_run=args.dry_run,
    )
    if args.recover and schemas is not None:
        plan.recover_with = routes  # the collector's topics, template and fan-out rules
        key = settings.pii_hash_key  # hash PII as the collector does
        plan.pii_hash_key = key.encode() if key else None
        plan.max_event_bytes = settings.max_event_bytes
        # Segment dead letters map with the collector's `[segment]` table, from the same file
        from collector.config_file import load_config_file
        from collector.replay.segment import SegmentRecovery
        from collector.segment.config import build_segment_config

        config = load_config_file(settings.config_file)
        segment = build_segment_config(config, path=settings.config_file)
        plan.segment = SegmentRecovery(segment, schemas, settings.max_event_bytes)
    timeout_s = args.request_timeout_ms / 1000
    source: Source
    if args.bootstrap_servers:
        source = KafkaSource(
            args.bootstrap_servers,
            topics,
            selection,
            request_timeout_ms=args.request_timeout_ms,
            optional=optional,
        )
    else:
        source = FileLogSource(Path(settings.data_dir), topics, selection, optional=optional)
    output: Output
    if args.recover or args.to_topic:
        rate = args.rate if args.rate > 0 else None
        sink = _sink(args, settings)
        output = TopicOutput(sink, topic=args.to_topic, rate_per_s=rate, timeout_s=timeout_s)
    elif args.format == "parquet":
        if args.out == "-":
            raise BadInput("Parquet output needs --out FILE")
        output = ParquetOutput(Path(args.out))
    else:
        path = None if args.out == "-" else Path(args.out)
        output = JsonlOutput(path, with_metadata=args.with_metadata)
    return source, output, plan


def _sink(args: argparse.Namespace, settings: Settings) -> Sink:
    servers = args.to_bootstrap_servers or args.bootstrap_servers
    if servers:
        from collector.sinks.kafka import KafkaSink  # aiokafka only when used

        return KafkaSink(servers, request_timeout_ms=args.request_timeout_ms)
    return FileSink(Path(settings.data_dir))


def _time_ms(text: str | None, flag: str) -> int | None:
    if text is None:
        return None
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError as exc:
        raise BadInput(f"{flag}: not an ISO 8601 time: {text!r}") from exc
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return int(when.timestamp() * 1000)
