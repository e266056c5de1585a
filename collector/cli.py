"""The `capture` command: `capture serve` runs the collector, `capture schemas` checks the plan.

Flags mirror the settings (`--kafka-bootstrap-servers` is CAPTURE_KAFKA_BOOTSTRAP_SERVERS);
this module parses arguments and starts things, and holds no pipeline logic.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from aiohttp import web

from collector.app import RUNNER_OPTIONS, create_app
from collector.settings import FIELDS, Settings, SettingsError, env_var, load_settings
from collector.workers import run_workers
from event_schemas import SchemaLoadError, check_registry, load_registry


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="capture", description="event-capture: typed event collector and tools."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = sub.add_parser(
        "serve",
        help="run the collector (HTTP ingest -> validation -> Kafka or the file sink)",
        description="Run the collector. Every flag can also be set as a CAPTURE_* variable.",
    )
    defaults = Settings()
    for field in FIELDS:
        default = getattr(defaults, field)
        serve.add_argument(
            "--" + field.replace("_", "-"),
            dest=field,
            default=None,
            metavar="VALUE",
            help=f"env {env_var(field)} (default: {default})",
        )
    schemas = sub.add_parser(
        "schemas", help="work with the tracking plan", description="Work with the tracking plan."
    )
    schemas_sub = schemas.add_subparsers(dest="schemas_command", required=True, metavar="ACTION")
    check = schemas_sub.add_parser(
        "check",
        help="load every schema file and check compatibility between versions",
        description="Load the plan, then check each version against the earlier ones under "
        "the mode its `x-compatibility` declares (default BACKWARD).",
    )
    check.add_argument("--dir", default=None, help="schema directory (default: the bundled plan)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "serve":
        return serve(args)
    return check_schemas(args.dir)


def serve(args: argparse.Namespace) -> int:
    overrides = {field: getattr(args, field) for field in FIELDS}
    try:
        settings = load_settings(os.environ, overrides)
        create_app(settings)  # fail here, before forking, on a bad plan or sink setting
    except (SettingsError, SchemaLoadError) as exc:
        print(f"capture serve: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    where = settings.data_dir if settings.sink_kind == "file" else settings.kafka_bootstrap_servers
    print(
        f"capture collector on http://{settings.host}:{settings.port} "
        f"(sink: {settings.sink_kind}, {where}; workers: {settings.workers})",
        flush=True,
    )
    if settings.workers == 1:
        return serve_one(settings)
    return run_workers(settings.workers, lambda _index: serve_one(settings, reuse_port=True))


def serve_one(settings: Settings, *, reuse_port: bool = False) -> int:
    web.run_app(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        print=None,
        access_log=None,
        reuse_port=reuse_port or None,
        **RUNNER_OPTIONS,
    )
    return 0


def check_schemas(directory: str | None) -> int:
    try:
        registry = load_registry(directory)
    except SchemaLoadError as exc:
        print(f"capture schemas check: {exc}", file=sys.stderr)
        return 1
    violations = check_registry(registry)
    for violation in violations:
        print(f"capture schemas check: {violation}", file=sys.stderr)
    if violations:
        return 1
    for schema in registry:
        print(f"ok  {schema.event} v{schema.version}  ({schema.file.name})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
