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

# The goals. Ratios, so that they hold on any machine the whole run shares.
KAFKA_VS_PRODUCER_PERF_MIN = 0.5
KAFKA_VS_NAIVE_MIN = 20.0
P99_AT_HALF_MAX_MS_MAX = 25.0
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


def _ratio(top: Any, bottom: Any) -> float | None:
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
    validation = results.get("validation") or {}
    out = {
        "validation_ratio": _target(
            validation.get("ratio"),
            validation.get("op", ">="),
            validation.get("target", validation.get("target_ratio")),
            "x",
            validation.get("what", "validation speed-up, as benchmarks.validation defines it"),
        ),
        "kafka_vs_producer_perf": _target(
            _ratio(kafka_max, _get(results, "kafka_ceiling", "plain", "records_per_s")),
            ">=",
            KAFKA_VS_PRODUCER_PERF_MIN,
            "x",
            "HTTP->Kafka max sustained events/s / ProducerPerformance records/s (acks=all)",
        ),
        "kafka_vs_naive": _target(
            _ratio(kafka_max, _get(results, "naive", "max_sustained_eps")),
            ">=",
            KAFKA_VS_NAIVE_MIN,
            "x",
            "HTTP->Kafka max sustained events/s / naive baseline max sustained events/s",
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
        "| SDK `track()` median / p99 µs |"
        f" {_fmt(_get(results, 'sdk', 'track', 'median_us'), 1)} /"
        f" {_fmt(_get(results, 'sdk', 'track', 'p99_us'), 1)} |",
        "| SDK delivery, one Client, events/s |"
        f" {_fmt(_get(results, 'sdk', 'delivery', 'delivered_eps'))} |",
        f"| soak RSS MiB first -> last ({_fmt(_get(results, 'soak', 'duration_s'))} s) |"
        f" {_fmt(_get(results, 'soak', 'first_rss_mib'), 1)} ->"
        f" {_fmt(_get(results, 'soak', 'last_rss_mib'), 1)} |",
        *_replay_lines(results.get("replay")),
        "",
        "| target | value | goal | met |",
        "|---|---:|---:|:---:|",
    ]
    for name, target in results.get("targets", {}).items():
        met = {True: "yes", False: "**no**", None: target.get("note", "n/a")}[target["met"]]
        goal = "n/a" if target["goal"] is None else f"{target['op']} {target['goal']}"
        lines.append(f"| {name} | {_fmt(target['value'], 2)} {target['unit']} | {goal} | {met} |")
    return "\n".join(lines) + "\n"


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
