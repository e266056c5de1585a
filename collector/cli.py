"""The `capture` command: `capture serve` runs the collector, `capture schemas` checks the plan,
`capture replay` reads topics back (collector/replay builds its parser and runs it).

Flags mirror the settings (`--kafka-bootstrap-servers` is CAPTURE_KAFKA_BOOTSTRAP_SERVERS);
this module parses arguments and starts things, and holds no pipeline logic. The HTTP server's
modules are imported by `serve` alone: `capture replay` and `capture schemas` start without them.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from collector import replay
from collector.settings import FIELDS, Settings, SettingsError, env_var, load_settings
from collector.spark import archive
from event_schemas import SchemaLoadError, check_registry, load_registry
from event_schemas.codegen import PYTHON_OUT, TYPESCRIPT_OUT, python_source, typescript_source
from event_schemas.docs import render_markdown

log = logging.getLogger(__name__)


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
    codegen = schemas_sub.add_parser(
        "codegen",
        help="generate typed events (msgspec Structs and the TypeScript plan module)",
        description="Generate one msgspec Struct per event version (for Client.track) and the "
        "matching TypeScript types (the module sdk-js imports). With --check, write nothing "
        "and exit 1 if the files on disk differ from what would be generated.",
    )
    codegen.add_argument("--dir", default=None, help="schema directory (default: the bundled plan)")
    codegen.add_argument(
        "--python",
        default=None,
        metavar="OUT.py",
        help=f"Python module to write (default: {PYTHON_OUT})",
    )
    codegen.add_argument(
        "--typescript",
        default=None,
        metavar="OUT.ts",
        help=f"TypeScript module to write (default: {TYPESCRIPT_OUT})",
    )
    codegen.add_argument(
        "--check", action="store_true", help="compare with the files on disk, write nothing"
    )
    docs = schemas_sub.add_parser(
        "docs",
        help="render the tracking plan as one Markdown page",
        description="Render every event version, its fields, constraints, PII tags, owner and "
        "the changes between versions as one Markdown page.",
    )
    docs.add_argument("--dir", default=None, help="schema directory (default: the bundled plan)")
    docs.add_argument("--out", default=None, metavar="FILE", help="write here (default: stdout)")
    replay.add_parser(sub)
    archive.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "replay":
        return replay.run(args)
    if args.command == "archive":
        return archive.run(args)
    if args.command == "serve":
        return serve(args)
    if args.schemas_command == "codegen":
        return codegen(args.dir, args.python, args.typescript, check=args.check)
    if args.schemas_command == "docs":
        return render_docs(args.dir, args.out)
    return check_schemas(args.dir)


def render_docs(directory: str | None, out: str | None) -> int:
    try:
        page = render_markdown(load_registry(directory))
    except SchemaLoadError as exc:
        print(f"capture schemas docs: {exc}", file=sys.stderr)
        return 1
    if out is None:
        sys.stdout.write(page)
    else:
        Path(out).write_text(page)
    return 0


def refuse_to_start(exc: Exception) -> int:
    """The one place a start-up error becomes `capture serve: <one line>` and exit code 2."""
    line = " ".join(str(exc).split())  # one line, whatever the message holds
    if isinstance(exc, SchemaLoadError):
        line = f"the tracking plan ({env_var('schemas_dir')}) does not load: {line}"
    print(f"capture serve: {line}", file=sys.stderr)
    return 2


def serve(args: argparse.Namespace) -> int:
    from collector.app import ServerSetupError, create_app, require_c_http_parser
    from collector.logs import configure_logging
    from collector.startup import check_startup
    from collector.workers import run_workers

    overrides = {field: getattr(args, field) for field in FIELDS}
    # what start-up raises for a setting that cannot work; each becomes one line and exit 2
    startup_errors = (SettingsError, SchemaLoadError, ServerSetupError)
    try:
        settings = load_settings(os.environ, overrides)
        require_c_http_parser()
        create_app(settings)  # fail here, before forking, on a bad plan or sink setting
        check_startup(settings)  # the sink kind, data dir and listen address
    except startup_errors as exc:
        return refuse_to_start(exc)
    configure_logging(settings.log_level, settings.log_format)
    where = settings.data_dir if settings.sink_kind == "file" else settings.kafka_bootstrap_servers
    print(
        f"capture collector on http://{settings.host}:{settings.port} "
        f"(sink: {settings.sink_kind}, {where}; workers: {settings.workers})",
        flush=True,
    )
    if settings.workers == 1:
        return serve_one(settings)
    return run_workers(
        settings.workers, lambda index: serve_one(settings, reuse_port=True, worker=index)
    )


def serve_one(settings: Settings, *, reuse_port: bool = False, worker: int = 0) -> int:
    """Serve until stopped: 0; 2 (a refused start) only for an error before the listener
    is up; 1 for one after it, which a worker supervisor restarts rather than stopping all.
    `worker`: this process's index among the workers (a restart keeps it)."""
    listening = False

    def on_listening(*_message: object) -> None:
        nonlocal listening
        listening = True

    try:
        _run(settings, reuse_port=reuse_port, worker=worker, on_listening=on_listening)
    except OSError as exc:
        if listening:  # served, then failed (e.g. the sink's flush at shutdown): a crash
            log.exception("capture serve: stopped by an error after it started serving")
            return 1
        # check_startup passed, then the port was taken or the data dir went away: the
        # listener and the sink start inside run_app, before the first request.
        return refuse_to_start(SettingsError(f"cannot start: {exc}"))
    return 0


def _run(
    settings: Settings, *, reuse_port: bool, worker: int, on_listening: Callable[..., None]
) -> None:
    from aiohttp import web

    from collector.app import RUNNER_OPTIONS, create_app
    from collector.shutdown import drain_timeout_s

    web.run_app(
        create_app(settings, worker=worker),
        host=settings.host,
        port=settings.port,
        # run_app calls `print` once, after every site is listening (and before then runs
        # the app's start-up: the sink): the one hook that marks the end of start-up.
        print=on_listening,
        access_log=None,
        reuse_port=reuse_port or None,
        # SIGTERM: aiohttp closes the listener, waits this long for handlers, then runs the
        # cleanup that stops (flushes) the sink in the rest of shutdown_timeout_s; a handler
        # cut off sends no 200.
        shutdown_timeout=drain_timeout_s(settings.shutdown_timeout_s),
        **RUNNER_OPTIONS,
    )


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


def codegen(
    directory: str | None, python_out: str | None, typescript_out: str | None, *, check: bool
) -> int:
    try:
        registry = load_registry(directory)
        outputs = {
            Path(python_out) if python_out else PYTHON_OUT: python_source(registry),
            Path(typescript_out) if typescript_out else TYPESCRIPT_OUT: typescript_source(registry),
        }
    except (SchemaLoadError, ValueError) as exc:
        print(f"capture schemas codegen: {exc}", file=sys.stderr)
        return 1
    stale = []
    for path, text in outputs.items():
        try:
            current = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            current = None
        if current == text:
            print(f"up to date  {path}")
        elif check:
            stale.append(path)
            print(f"capture schemas codegen: {path} is out of date", file=sys.stderr)
        else:
            path.write_text(text, encoding="utf-8")
            print(f"wrote  {path}")
    if stale:
        print(
            "capture schemas codegen: run `capture schemas codegen` to regenerate", file=sys.stderr
        )
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
