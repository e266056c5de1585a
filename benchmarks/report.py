"""Turn one run's measurements into targets, `latest.json` (and a timestamped copy), `latest.md`.

Every ratio here divides two numbers measured in the same run on the same machine. Must not
measure anything, and must not hide a missing number: it is reported as null / "n/a".
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
from pathlib import Path
from typing import Any

# The goals (issue 17 for the ingest path, the SDK and replay). Ratios where the number depends
# on the machine, so that they hold on any machine the whole run shares.
KAFKA_VS_PRODUCER_PERF_MIN = 0.8
KAFKA_CPU_S_PER_MILLION_MAX = 7.0
PIPELINE_VS_BOUND_MIN = 0.7
FILE_VS_KAFKA_MIN = 0.8
KAFKA_VS_NAIVE_MIN = 20.0
P99_AT_HALF_MAX_MS_MAX = 25.0
SDK_TRACK_MEAN_US_MAX = 2.0
SDK_DELIVERY_EPS_MIN = 300_000.0
REPLAY_PLAIN_RPS_MIN = 200_000.0
REPLAY_DEDUP_UPGRADE_RPS_MIN = 100_000.0
# "Flat" memory: growth after warm-up at most this fast. RSS rises in steps whenever a stall
# lets requests pile up, so only a long soak is judged; a shorter one is reported, not judged.
SOAK_SLOPE_MIB_PER_MIN_MAX = 1.0
SOAK_JUDGED_MIN_S = 600.0


def _get(data: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(data, dict) or key not in data:
            return None
        data = data[key]
    return data


def ratio(top: Any, bottom: Any) -> float | None:
    if not isinstance(top, int | float) or not isinstance(bottom, int | float) or bottom <= 0:
        return None
    return round(top / bottom, 3)


def _target(value: Any, op: str, goal: float | None, unit: str, what: str) -> dict[str, Any]:
    met: bool | None = None
    if isinstance(value, int | float) and goal is not None:
        met = value >= goal if op == ">=" else value <= goal
    return {"what": what, "value": value, "op": op, "goal": goal, "unit": unit, "met": met}


def targets(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    kafka_max = _get(results, "http_ingest", "kafka", "max_sustained_eps")
    file_max = _get(results, "http_ingest", "file", "max_sustained_eps")
    validation = results.get("validation") or {}
    out = {
        "validation_ratio": _target(
            validation.get("ratio"),
            ">=",
            PIPELINE_VS_BOUND_MIN,
            "x",
            "decode+validate+enrich+route / the bare msgspec typed decode (benchmarks.validation)",
        ),
        "kafka_vs_producer_perf": _target(
            ratio(kafka_max, _get(results, "kafka_ceiling", "plain", "records_per_s")),
            ">=",
            KAFKA_VS_PRODUCER_PERF_MIN,
            "x",
            "HTTP->Kafka max sustained events/s / ProducerPerformance records/s (acks=all)",
        ),
        "kafka_cpu_s_per_million": _target(
            _get(results, "http_ingest", "kafka", "half_max", "server_cpu_s_per_million_events"),
            "<=",
            KAFKA_CPU_S_PER_MILLION_MAX,
            "s",
            "collector CPU seconds per million events at half max, Kafka sink",
        ),
        "kafka_vs_naive": _target(
            ratio(kafka_max, _get(results, "naive", "max_sustained_eps")),
            ">=",
            KAFKA_VS_NAIVE_MIN,
            "x",
            "HTTP->Kafka max sustained events/s / naive baseline max sustained events/s",
        ),
        "file_vs_kafka": _target(
            ratio(file_max, kafka_max),
            ">=",
            FILE_VS_KAFKA_MIN,
            "x",
            "file sink max sustained events/s / Kafka sink's",
        ),
        "cluster_vs_producer_perf": _target(
            _get(results, "cluster", "vs_producer_perf"),
            ">=",
            None,  # reported: replication makes both sides pay, no goal of its own
            "x",
            "HTTP->Kafka / ProducerPerformance, both on three brokers (RF 3, min ISR 2)",
        ),
    }
    for sink in ("kafka", "file"):
        out[f"p99_at_half_max_{sink}"] = _target(
            _get(results, "http_ingest", sink, "half_max", "latency_p99_ms"),
            "<=",
            P99_AT_HALF_MAX_MS_MAX,
            "ms",
            f"request p99 at half the max sustained rate, {sink} sink",
        )
    out["sdk_track_mean"] = _target(
        _get(results, "sdk", "track", "mean_us"),
        "<=",
        SDK_TRACK_MEAN_US_MAX,
        "µs",
        "SDK track() mean caller time while the worker delivers",
    )
    out["sdk_delivery"] = _target(
        _get(results, "sdk", "delivery", "delivered_eps"),
        ">=",
        SDK_DELIVERY_EPS_MIN,
        "ev/s",
        "SDK delivery, one Client, events/s",
    )
    for mode, goal, flags in (
        ("plain", REPLAY_PLAIN_RPS_MIN, "plain"),
        ("dedup_upgrade", REPLAY_DEDUP_UPGRADE_RPS_MIN, "--dedup --upgrade"),
    ):
        out[f"replay_{mode}"] = _target(
            _get(results, "replay", "kafka", mode, "process", "records_per_s"),
            ">=",
            goal,
            "rec/s",
            f"capture replay, one process, Kafka -> JSON lines, {flags}",
        )
    out["soak_slope"] = _target(
        _get(results, "soak", "slope_after_warmup_mib_per_min"),
        "<=",
        SOAK_SLOPE_MIB_PER_MIN_MAX,
        "MiB/min",
        "collector RSS growth after warm-up under half-max load (file sink)",
    )
    soak_s = _get(results, "soak", "duration_s")
    if not isinstance(soak_s, int | float) or soak_s < SOAK_JUDGED_MIN_S:
        out["soak_slope"]["met"] = None
        out["soak_slope"]["note"] = f"judged on soaks of {SOAK_JUDGED_MIN_S:.0f} s or more"
    return out


def previous(results_dir: Path) -> dict[str, Any] | None:
    """The last run's targets, computed by today's rules from its own results (so that a goal
    added since shows its old value too), before this run replaces latest.json."""
    try:
        earlier = json.loads((results_dir / "latest.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(earlier, dict):
        return None
    values = {name: t["value"] for name, t in targets(earlier).items()}
    return {
        "started_at": earlier.get("started_at"),
        "quick": _get(earlier, "options", "quick"),
        "values": values,
    }


REPO_ROOT = str(Path(__file__).resolve().parents[1])
TEMP_ROOT = tempfile.gettempdir()


def _clean(value: Any) -> Any:
    """NaN/inf become null (the JSON must stay strict); paths of this machine become relative
    to the repository or `<tmp>`, since results are committed."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, str):
        return value.replace(REPO_ROOT, ".").replace(TEMP_ROOT, "<tmp>")
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def write_json(results: dict[str, Any], results_dir: Path, stamp: str) -> Path:
    results_dir.mkdir(parents=True, exist_ok=True)
    latest = results_dir / "latest.json"
    latest.write_text(json.dumps(_clean(results), indent=2, allow_nan=False) + "\n")
    shutil.copyfile(latest, results_dir / f"{stamp}.json")
    return latest


def _fmt(value: Any, digits: int = 0) -> str:
    if not isinstance(value, int | float) or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:,.{digits}f}"


def _latency(half: Any) -> str:
    if not isinstance(half, dict):
        return "n/a"
    keys = ("latency_p50_ms", "latency_p99_ms", "latency_p999_ms")
    return " / ".join(_fmt(half.get(k), 1) for k in keys)


def _busiest_generator(found: dict[str, Any]) -> float | None:
    """At the highest sustained step; near 1.0 the generator, not the server, was the limit."""
    steps = [s for s in found.get("steps", []) if s.get("sustained")]
    if not steps:
        return None
    top = max(steps, key=lambda s: s["achieved_eps"])
    share: float = top["generator_busiest_worker"]
    return share


def markdown(results: dict[str, Any]) -> str:
    machine = results.get("machine", {})
    ingest = results.get("http_ingest", {})
    file, kafka = ingest.get("file", {}), ingest.get("kafka", {})
    half_file, half_kafka = file.get("half_max"), kafka.get("half_max")
    mode = "quick" if _get(results, "options", "quick") else "full"
    lines = [
        f"Benchmarks of {results.get('started_at', '?')} ({mode} run, {machine.get('nproc')}"
        f" cores {machine.get('cpu_model')}, {_fmt(machine.get('mem_total_mib'))} MiB,"
        f" Python {machine.get('python')}, Kafka {machine.get('kafka')}); all numbers from"
        " one run on one machine, load generator included.",
        "",
        "| ingest (100-event batches, plain JSON) | file sink | Kafka sink |",
        "|---|---:|---:|",
        f"| max sustained events/s (<1% errors) | {_fmt(file.get('max_sustained_eps'))} |"
        f" {_fmt(kafka.get('max_sustained_eps'))} |",
        f"| p50 / p99 / p99.9 ms at half max | {_latency(half_file)} | {_latency(half_kafka)} |",
        "| collector CPU s per million events at half max |"
        f" {_fmt(_get(half_file, 'server_cpu_s_per_million_events'), 1)} |"
        f" {_fmt(_get(half_kafka, 'server_cpu_s_per_million_events'), 1)} |",
        f"| collector peak RSS MiB | {_fmt(_get(half_file, 'server_peak_rss_mib'), 1)} |"
        f" {_fmt(_get(half_kafka, 'server_peak_rss_mib'), 1)} |",
        f"| collector processes | {_fmt(_get(half_file, 'server_processes'))} |"
        f" {_fmt(_get(half_kafka, 'server_processes'))} |",
        "| load generator: busiest process's CPU share at the max |"
        f" {_fmt(_busiest_generator(file), 2)} | {_fmt(_busiest_generator(kafka), 2)} |",
        "",
        "| reference, same run | value |",
        "|---|---:|",
        "| Kafka ProducerPerformance records/s (acks=all, same broker) |"
        f" {_fmt(_get(results, 'kafka_ceiling', 'plain', 'records_per_s'))} |",
        "| naive baseline (jsonschema + send_and_wait) max events/s |"
        f" {_fmt(_get(results, 'naive', 'max_sustained_eps'))} |",
        "| SDK `track()` mean / median / p99 µs |"
        f" {_fmt(_get(results, 'sdk', 'track', 'mean_us'), 2)} /"
        f" {_fmt(_get(results, 'sdk', 'track', 'median_us'), 1)} /"
        f" {_fmt(_get(results, 'sdk', 'track', 'p99_us'), 1)} |",
        "| SDK delivery, one Client, events/s |"
        f" {_fmt(_get(results, 'sdk', 'delivery', 'delivered_eps'))} |",
        f"| soak RSS MiB first -> last ({_fmt(_get(results, 'soak', 'duration_s'))} s) |"
        f" {_fmt(_get(results, 'soak', 'first_rss_mib'), 1)} ->"
        f" {_fmt(_get(results, 'soak', 'last_rss_mib'), 1)} |",
        *_cluster_lines(results.get("cluster")),
        *_peer_lines(results.get("peers")),
        *_replay_lines(results.get("replay")),
        "",
        *_target_lines(results.get("targets", {}), results.get("previous")),
    ]
    return "\n".join(lines) + "\n"


def _target_lines(found: dict[str, Any], earlier: Any) -> list[str]:
    """The targets, with the previous run's value of each beside this run's."""
    values = _get(earlier, "values") or {}
    when = _get(earlier, "started_at") or "none"
    lines = [
        f"| target | value | previous run ({when}) | goal | met |",
        "|---|---:|---:|---:|:---:|",
    ]
    for name, target in found.items():
        met = {True: "yes", False: "**no**", None: target.get("note", "n/a")}[target["met"]]
        goal = "n/a" if target["goal"] is None else f"{target['op']} {target['goal']:,}"
        unit = target["unit"]
        lines.append(
            f"| {name} | {_with_unit(target['value'], unit)} |"
            f" {_with_unit(values.get(name), unit)} | {goal} | {met} |"
        )
    return lines


def _with_unit(value: Any, unit: str) -> str:
    if not isinstance(value, int | float):
        return "n/a"
    return f"{_fmt(value, 0 if abs(value) >= 1000 else 2)} {unit}"


PEER_NAMES = {
    "capture_sdk": "event-capture (ours)",
    "capture_sdk_batch100": "event-capture, batches of 100",
    "segment": "segment-analytics-python",
    "posthog": "posthog",
    "snowplow": "snowplow-tracker",
}


def _peer_lines(found: Any) -> list[str]:
    """Our SDK beside the peers' own clients, same events, same stand-in sink."""
    sdks = _get(found, "sdks")
    if not isinstance(sdks, dict):
        return []
    ratios = _get(found, "ratios_ours_over_peer") or {}
    lines = [
        "",
        f"| SDK, {_fmt(_get(found, 'events'))} events, same sink | track() mean / median / p99"
        " µs | delivered events/s | wire bytes/event | ours ÷ peer: mean track() |"
        " ours ÷ peer: events/s |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, row in sdks.items():
        mine = ratios.get(name) or {}
        lines.append(
            f"| {PEER_NAMES.get(name, name)} | {_fmt(row.get('track_mean_us'), 2)} /"
            f" {_fmt(row.get('track_median_us'), 2)} / {_fmt(row.get('track_p99_us'), 1)} |"
            f" {_fmt(row.get('delivered_eps'))} | {_fmt(row.get('body_bytes_per_event'))} |"
            f" {_fmt(mine.get('track_mean_us'), 3)} | {_fmt(mine.get('delivered_eps'), 1)} |"
        )
    return lines


def _cluster_lines(cluster: Any) -> list[str]:
    """The three-broker stage: HTTP ingest and ProducerPerformance on the same cluster."""
    if not isinstance(cluster, dict) or "ceiling" not in cluster:
        return []
    found = cluster.get("http_ingest") or {}
    return [
        "",
        f"| three brokers (RF {cluster.get('replication_factor')}, min ISR"
        f" {cluster.get('min_insync_replicas')}, acks=all) | value |",
        "|---|---:|",
        f"| HTTP -> Kafka max sustained events/s | {_fmt(found.get('max_sustained_eps'))} |",
        f"| p50 / p99 / p99.9 ms at half max | {_latency(found.get('half_max'))} |",
        f"| ProducerPerformance records/s | {_fmt(_get(cluster, 'ceiling', 'records_per_s'))} |",
        f"| HTTP -> Kafka ÷ ProducerPerformance | {_fmt(cluster.get('vs_producer_perf'), 2)} |",
    ]


def _replay_lines(replay: Any) -> list[str]:
    """The replay stage's table: records/s of both engines per source and mode."""
    if not isinstance(replay, dict) or "n" not in replay:
        return []
    lines = [
        "",
        f"| `capture replay` of {_fmt(replay.get('n'))} records ({replay.get('cores')} cores,"
        f" Spark {replay.get('master')}) | process rec/s | Spark rec/s |"
        " Spark rec/s excl. start-up | Spark ÷ process | Spark start-up s | counts equal |",
        "|---|---:|---:|---:|---:|---:|:---:|",
    ]
    for source in ("kafka", "file"):
        for mode, flags in (("plain", "plain"), ("dedup_upgrade", "--dedup --upgrade")):
            found = _get(replay, source, mode)
            if not isinstance(found, dict):
                continue
            same = found.get("counts_equal")
            equal = "n/a" if not isinstance(same, bool) else "yes" if same else "**no**"
            lines.append(
                f"| {source}, {flags} | {_fmt(_get(found, 'process', 'records_per_s'))} |"
                f" {_fmt(_get(found, 'spark', 'records_per_s'))} |"
                f" {_fmt(_get(found, 'spark', 'records_per_s_after_startup'))} |"
                f" {_fmt(found.get('spark_vs_process'), 2)} |"
                f" {_fmt(_get(found, 'spark', 'startup_s'), 1)} | {equal} |"
            )
    return lines


def write_markdown(results: dict[str, Any], results_dir: Path) -> Path:
    path = results_dir / "latest.md"
    path.write_text(markdown(results))
    return path
