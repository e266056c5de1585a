"""`make bench`: every benchmark in one run, so that the ratios between them mean something.

validation -> HTTP ingest (file sink, then Kafka) -> Kafka's own ceiling -> replay engines ->
naive baseline -> HTTP ingest and the ceiling on a three-broker cluster -> SDK -> the peer
SDKs -> memory soak;
then targets (beside the previous run's), JSON, Markdown and plots under benchmarks/results/.
Owns the lifetime of every process it starts (collectors, brokers, servers, load generator):
none outlives the run. Must not measure anything itself: each stage lives in its own module.

    python -m benchmarks.run [--quick] [--soak-s 600] [--stages file,kafka] [--profile]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import importlib
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from benchmarks import (
    ingest,
    kafka_ceiling,
    machine,
    peers,
    plot,
    procs,
    profiler,
    replay,
    report,
    sdk,
    soak,
    verify,
)
from benchmarks.collector_proc import run_collector
from benchmarks.loadgen import LoadGenerator, PoolSpec
from benchmarks.payloads import mean_event_bytes
from collector.settings import Settings
from devtools.kafka import KafkaBroker
from devtools.kafka_cluster import KafkaCluster
from devtools.ports import free_port

STAGES = (
    "validation", "file", "kafka", "ceiling", "replay", "naive", "cluster", "sdk", "peers", "soak",
)  # fmt: skip
# Where each stage's results go in latest.json (default: under the stage's name).
RESULT_PATHS = {
    "file": ("http_ingest", "file"),
    "kafka": ("http_ingest", "kafka"),
    "ceiling": ("kafka_ceiling",),
}
RESULTS_DIR = Path(__file__).resolve().parent / "results"
# Stand-in for the server fields enrichment adds, when no file-sink output can be measured.
ENRICHMENT_BYTES_ESTIMATE = 50

FULL = ingest.Plan(
    step_s=15, half_s=45, probe_s=5, warmup_s=3,
    fractions=(0.25, 0.5, 0.75, 0.9, 1.0, 1.1, 1.25, 1.5),
    refine_steps=2, probe_concurrency=16, budget_s=300,
)  # fmt: skip
QUICK = ingest.Plan(
    step_s=3, half_s=6, probe_s=3, warmup_s=1, fractions=(0.5, 0.9, 1.15, 1.4),
    refine_steps=1, probe_concurrency=16, budget_s=40,
)  # fmt: skip
NAIVE_FULL = ingest.Plan(
    step_s=8, half_s=15, probe_s=5, warmup_s=2, fractions=(0.5, 0.8, 1.0, 1.2, 1.5),
    refine_steps=1, probe_concurrency=4, budget_s=90, request_timeout_s=20,
)  # fmt: skip
NAIVE_QUICK = ingest.Plan(
    step_s=3, half_s=4, probe_s=3, warmup_s=1, fractions=(0.7, 1.2),
    refine_steps=1, probe_concurrency=4, budget_s=25, request_timeout_s=20,
)  # fmt: skip


def log(message: str) -> None:
    print(message, flush=True)


class Run:
    """One benchmark run: its options, its temp dir, and the results as they come in."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.quick: bool = args.quick
        self.plan = QUICK if self.quick else FULL
        self.work = Path(tempfile.mkdtemp(prefix="capture-bench-"))
        self.results: dict[str, Any] = {}
        self.failed: list[str] = []
        self.broker: KafkaBroker | None = None

    def stage(self, name: str, fn: Callable[[], dict[str, Any] | None]) -> None:
        if name not in self.args.stages:
            return
        log(f"== {name}")
        started = time.monotonic()
        try:
            outcome = fn()
        except Exception as exc:  # noqa: BLE001  # one broken stage must not lose the others
            traceback.print_exc()
            outcome = {"error": f"{type(exc).__name__}: {exc}"}
            self.failed.append(name)
        if outcome is not None:
            outcome.setdefault("stage_s", round(time.monotonic() - started, 1))
        *parents, leaf = RESULT_PATHS.get(name, (name,))
        target = self.results
        for key in parents:
            target = target.setdefault(key, {})
        target[leaf] = outcome
        log(f"   ({time.monotonic() - started:.0f} s)")

    def profile_hook(self, pid: int, label: str) -> ingest.Profiler | None:
        if not self.args.profile:
            return None
        self.args.results_dir.mkdir(parents=True, exist_ok=True)
        out = self.args.results_dir / f"profile-{label}.txt"
        return lambda duration_s: profiler.start(pid, duration_s, out)

    # -- stages ---------------------------------------------------------------------------

    def validation(self) -> dict[str, Any]:
        try:
            module = importlib.import_module("benchmarks.validation")
        except ModuleNotFoundError as exc:
            if exc.name != "benchmarks.validation":
                raise
            return {"skipped": "benchmarks/validation.py does not exist yet"}
        run_validation: Callable[[bool], dict[str, Any]] = module.run
        return run_validation(self.quick)

    def http(
        self, gen: LoadGenerator, sink: str, *, bootstrap: str | None = None, label: str = ""
    ) -> dict[str, Any]:
        label = label or sink
        work = self.work / f"collector-{label}"
        if bootstrap is None and self.broker is not None:
            bootstrap = self.broker.bootstrap_servers
        # `capture serve --workers`: with the file sink each worker writes logs of its own.
        workers = self.args.workers
        with run_collector(
            sink=sink, work_dir=work, bootstrap_servers=bootstrap, workers=workers
        ) as collector:
            hook = self.profile_hook(collector.pid, label)
            found = ingest.find_max(
                gen, collector.batch_url, collector.pid, self.plan, profiler=hook
            )
            found["collector_env"] = collector.env
        acked = sum(_accepted(found))
        data_dir = work / "data"
        if sink == "file":
            lines = verify.file_sink_lines(data_dir)
            events = sum(n for topic, n in lines.items() if topic != "events._invalid")
            found["correctness"] = verify.check_counts(events, acked) | {"per_topic": lines}
            found["mean_value_bytes"] = verify.mean_value_bytes(data_dir)
        else:
            assert bootstrap is not None
            records = asyncio.run(verify.kafka_event_records(bootstrap))
            events = sum(n for topic, n in records.items() if topic != "events._invalid")
            found["correctness"] = verify.check_counts(events, acked) | {"per_topic": records}
        shutil.rmtree(data_dir, ignore_errors=True)
        return found

    def record_bytes(self) -> tuple[int, str]:
        """The ceiling's record size: the file sink's mean value, else an estimate."""
        measured = _get_float(self.results, "http_ingest", "file", "mean_value_bytes")
        source = "file-sink output" if measured else "estimate from the pool"
        return round(measured or mean_event_bytes() + ENRICHMENT_BYTES_ESTIMATE), source

    def ceiling(self) -> dict[str, Any]:
        assert self.broker is not None
        record_bytes, source = self.record_bytes()
        common: dict[str, Any] = {
            "libs": self.broker.libs,
            "bootstrap_servers": self.broker.bootstrap_servers,
            # Enough records for the JVM to warm up: short runs understate the ceiling.
            "num_records": 500_000 if self.quick else 2_000_000,
            "record_bytes": record_bytes,
            "work_dir": self.work,
        }
        return {
            "record_bytes_source": source,
            "plain": kafka_ceiling.run(topic="bench.ceiling", **common),
            # With the collector's own producer defaults, for comparison (not the target).
            "matched": kafka_ceiling.run(
                topic="bench.ceiling-matched", extra_props=_collector_producer_props(), **common
            ),
        }

    def replay(self) -> dict[str, Any]:
        assert self.broker is not None
        profile_to = None
        if self.args.profile:
            profile_to = self.args.results_dir / "profile-replay-process-kafka.txt"
        return replay.run(
            bootstrap_servers=self.broker.bootstrap_servers,
            work_dir=self.work,
            quick=self.quick,
            profile_to=profile_to,
        )

    def naive(self, gen: LoadGenerator) -> dict[str, Any]:
        assert self.broker is not None
        port = free_port()
        log_path = self.work / "naive-server.log"
        argv = [sys.executable, "-m", "benchmarks.naive_server", "--port", str(port)]
        argv += ["--bootstrap-servers", self.broker.bootstrap_servers]
        with procs.running(argv, log_path=log_path) as server:
            url = f"http://127.0.0.1:{port}"
            procs.wait_http_ok(url + "/healthz", server, timeout_s=60, log_path=log_path)
            plan = NAIVE_QUICK if self.quick else NAIVE_FULL
            return ingest.find_max(gen, url + "/v1/batch", server.pid, plan)

    def cluster(self, gen: LoadGenerator) -> dict[str, Any]:
        """HTTP -> Kafka and ProducerPerformance on three brokers (RF 3, min ISR 2, acks=all):
        replication is what acks=all waits for there. No fault proxies: nothing is measured
        through one."""
        log("== starting a three-broker cluster")
        record_bytes, source = self.record_bytes()
        with KafkaCluster(3, proxies=False, work_dir=self.work / "cluster") as cluster:
            servers = cluster.bootstrap_servers
            ingest_found = self.http(gen, "kafka", bootstrap=servers, label="kafka-cluster")
            ceiling = kafka_ceiling.run(
                libs=cluster.nodes[0].process.libs,
                bootstrap_servers=servers,
                topic="bench.cluster-ceiling",
                num_records=500_000 if self.quick else 2_000_000,
                record_bytes=record_bytes,
                work_dir=self.work,
            )
            config = asyncio.run(cluster.topic_config("bench.cluster-ceiling"))
        return {
            "brokers": 3,
            "replication_factor": cluster.replication_factor,
            "min_insync_replicas": int(config["min.insync.replicas"]),
            "record_bytes_source": source,
            "http_ingest": ingest_found,
            "ceiling": ceiling,
            "vs_producer_perf": report.ratio(
                ingest_found.get("max_sustained_eps"), ceiling.get("records_per_s")
            ),
        }

    def sdk(self) -> dict[str, Any]:
        calls = 50_000 if self.quick else 200_000
        return sdk.run(track_calls=calls, delivery_events=calls, work_dir=self.work)

    def peers(self) -> dict[str, Any]:
        return peers.run(events=10_000 if self.quick else 50_000, work_dir=self.work)

    def soak(self, gen: LoadGenerator) -> dict[str, Any]:
        max_eps = _get_float(self.results, "http_ingest", "file", "max_sustained_eps")
        if not max_eps:
            return {"skipped": "needs the file stage's max sustained rate"}
        work = self.work / "collector-soak"
        with run_collector(sink="file", work_dir=work) as collector:
            return soak.run(
                gen,
                url=collector.batch_url,
                pid=collector.pid,
                rate_eps=round(max_eps / 2),
                duration_s=self.args.soak_s,
                sample_every_s=2.0 if self.args.soak_s <= 120 else 5.0,
                data_dir=work / "data",
            )

    # -- the whole run --------------------------------------------------------------------

    def execute(self) -> None:
        self.stage("validation", self.validation)
        with LoadGenerator(workers=self.args.loadgen_workers, pool=self.pool()) as gen:
            self.results["load_generator"] = {
                "workers": gen.workers,
                "mean_body_bytes": round(gen.mean_body_bytes),
                "events_per_body": gen.pool.events_per_body,
                "gzip": gen.pool.use_gzip,
            }
            self.stage("file", lambda: self.http(gen, "file"))
            with self.kafka_broker():
                self.stage("kafka", lambda: self.http(gen, "kafka"))
                self.stage("ceiling", self.ceiling)
                self.stage("replay", self.replay)
                self.stage("naive", lambda: self.naive(gen))
            self.stage("cluster", lambda: self.cluster(gen))
            self.stage("sdk", self.sdk)
            self.stage("peers", self.peers)
            self.stage("soak", lambda: self.soak(gen))

    @contextlib.contextmanager
    def kafka_broker(self) -> Iterator[None]:
        if not {"kafka", "ceiling", "replay", "naive"} & set(self.args.stages):
            yield
            return
        log("== starting the Kafka broker")
        with KafkaBroker(self.work / "kafka") as broker:
            self.broker = broker
            try:
                yield
            finally:
                self.broker = None

    def pool(self) -> PoolSpec:
        return PoolSpec(use_gzip=self.args.gzip)


def _collector_producer_props() -> dict[str, str]:
    defaults = Settings()
    props = {"linger.ms": str(defaults.kafka_linger_ms)}
    if defaults.kafka_compression != "none":
        props["compression.type"] = defaults.kafka_compression
    return props


def _accepted(found: dict[str, Any]) -> Iterator[int]:
    for key in ("warmup", "probe", "half_max"):
        if isinstance(found.get(key), dict):
            yield found[key]["accepted_events"]
    for step in found.get("steps", []):
        yield step["accepted_events"]


def _get_float(results: dict[str, Any], *path: str) -> float | None:
    value: Any = results
    for key in path:
        value = value.get(key) if isinstance(value, dict) else None
    return float(value) if isinstance(value, int | float) and value else None


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="make bench", description="Benchmark the ingest path (see benchmarks/README.md)."
    )
    parser.add_argument("--quick", action="store_true", help="a short smoke run (< 3 minutes)")
    parser.add_argument("--soak-s", type=float, default=None, help="soak length (60; quick 15)")
    parser.add_argument(
        "--stages", default=",".join(STAGES), help=f"comma-separated subset of {','.join(STAGES)}"
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=2,
        help="CAPTURE_WORKERS of the file- and Kafka-sink collectors (default: 2, one per core)",
    )
    parser.add_argument("--loadgen-workers", type=int, default=2, help="load generator processes")
    parser.add_argument("--gzip", action="store_true", help="send gzip bodies (default: plain)")
    parser.add_argument("--profile", action="store_true", help="py-spy the collector at its max")
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    parser.add_argument("--keep-work-dir", action="store_true", help="keep logs and data")
    args = parser.parse_args(argv)
    args.stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    unknown = set(args.stages) - set(STAGES)
    if unknown:
        parser.error(f"unknown stages: {', '.join(sorted(unknown))}")
    if args.soak_s is None:
        args.soak_s = 15.0 if args.quick else 60.0
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = dt.datetime.now(dt.UTC)
    clock = time.monotonic()
    run = Run(args)
    options = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    run.results.update(started_at=started.isoformat(timespec="seconds"), options=options)
    log(f"benchmark run ({'quick' if args.quick else 'full'}); work dir {run.work}")
    interrupted = False
    try:
        run.results["machine"] = machine.describe()
        run.execute()
    except KeyboardInterrupt:
        interrupted = True
        log("interrupted: writing what was measured so far")
    finally:
        results = run.results
        results.setdefault("machine", {})["load_average_at_end"] = machine.load_average()
        results["duration_s"] = round(time.monotonic() - clock, 1)
        results["failed_stages"] = run.failed
        results["interrupted"] = interrupted
        results["targets"] = report.targets(results)
        results["previous"] = report.previous(args.results_dir)
        stamp = started.strftime("%Y%m%dT%H%M%SZ")
        # again at the end: a py-spy that wrote its file after the stage's own pass did leaves
        # this machine's command line in the committed stacks
        for stacks in args.results_dir.glob("profile-*.txt"):
            stacks.write_text(profiler.strip_process_frames(stacks.read_text()))
        written = [
            report.write_json(results, args.results_dir, stamp),
            report.write_markdown(results, args.results_dir),
        ]
        try:
            written += plot.draw(results, args.results_dir)
        except Exception:  # noqa: BLE001  # a plotting bug must not lose the numbers
            traceback.print_exc()
        if args.keep_work_dir:
            log(f"work dir kept: {run.work}")
        else:
            shutil.rmtree(run.work, ignore_errors=True)
    log(report.markdown(results))
    log("wrote " + ", ".join(str(p) for p in written))
    return 1 if run.failed or interrupted else 0


if __name__ == "__main__":
    raise SystemExit(main())
