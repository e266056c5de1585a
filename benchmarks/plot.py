"""Draw a run's steps: achieved vs offered events/s, and latency percentiles vs offered load.

Reads the results dict only (re-plot an old run with `python -m benchmarks.plot FILE.json`);
must not measure anything. Uses matplotlib's Agg backend: no display needed.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import matplotlib as mpl

mpl.use("Agg")
import matplotlib.pyplot as plt  # the backend must be chosen first

SERIES = (("file", "collector, file sink"), ("kafka", "collector, Kafka sink"))
COLOURS = {"file": "tab:blue", "kafka": "tab:orange", "naive": "tab:red"}
LATENCY_TARGET_MS = 25.0


def _steps(results: dict[str, Any], name: str) -> list[dict[str, Any]]:
    source = results.get("naive") if name == "naive" else results.get("http_ingest", {}).get(name)
    if not isinstance(source, dict):
        return []
    return [s for s in source.get("steps", []) if s.get("offered_eps")]


def _half(results: dict[str, Any], name: str) -> dict[str, Any] | None:
    source = results.get("naive") if name == "naive" else results.get("http_ingest", {}).get(name)
    half = source.get("half_max") if isinstance(source, dict) else None
    return half if isinstance(half, dict) else None


def throughput(results: dict[str, Any], path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(8, 5.5))
    highest, lowest = 1.0, float("inf")
    for name, label in (*SERIES, ("naive", "naive baseline (jsonschema + send_and_wait)")):
        steps = _steps(results, name)
        if not steps:
            continue
        offered = [s["offered_eps"] for s in steps]
        achieved = [s["achieved_eps"] for s in steps]
        highest = max(highest, *offered, *achieved)
        lowest = min(lowest, *offered, *achieved)
        ax.plot(offered, achieved, "o-", color=COLOURS[name], label=label)
        failed = [
            (o, a) for o, a, s in zip(offered, achieved, steps, strict=True) if not s["sustained"]
        ]
        if failed:
            ax.plot(*zip(*failed, strict=True), "x", color="black", markersize=9)
    ceiling = results.get("kafka_ceiling", {}).get("plain", {}).get("records_per_s")
    if ceiling:
        ax.axhline(
            ceiling, color="grey", linestyle=":", label="Kafka ProducerPerformance (acks=all)"
        )
        highest = max(highest, ceiling)
    low = lowest / 2 if lowest != float("inf") else 1.0
    ax.plot([low, highest], [low, highest], "--", color="lightgrey", label="achieved = offered")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("offered events/s (open loop, 100-event batches)")
    ax.set_ylabel("accepted events/s")
    ax.set_title("Ingest throughput (x: step not sustained)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="upper left", fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def latency(results: dict[str, Any], path: Path) -> Path:
    names = [n for n in ("file", "kafka", "naive") if _steps(results, n)]
    fig, axes = plt.subplots(1, max(1, len(names)), figsize=(5 * max(1, len(names)), 4.5))
    axes_list = list(axes) if len(names) > 1 else [axes]
    titles = {"file": "file sink", "kafka": "Kafka sink", "naive": "naive baseline"}
    for ax, name in zip(axes_list, names, strict=False):
        steps = _steps(results, name)
        offered = [s["offered_eps"] for s in steps]
        for key, style, label in (
            ("latency_p50_ms", "o-", "p50"),
            ("latency_p99_ms", "s-", "p99"),
            ("latency_p999_ms", "^-", "p99.9"),
        ):
            values = [s[key] if s[key] is not None else float("nan") for s in steps]
            ax.plot(offered, values, style, label=label)
        half = _half(results, name)
        if half is not None and half.get("latency_p99_ms") is not None:
            ax.plot(
                [half["offered_eps"]], [half["latency_p99_ms"]], "*", color="black",
                markersize=12, label="p99 at half max",
            )  # fmt: skip
        ax.axhline(LATENCY_TARGET_MS, color="grey", linestyle=":", label="25 ms")
        ax.set_yscale("log")
        ax.xaxis.set_major_formatter(mpl.ticker.FuncFormatter(lambda x, _: f"{x:,.0f}"))
        ax.set_title(titles[name])
        ax.set_xlabel("offered events/s")
        ax.set_ylabel("request latency ms (from the scheduled time)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def draw(results: dict[str, Any], results_dir: Path) -> list[Path]:
    results_dir.mkdir(parents=True, exist_ok=True)
    return [
        throughput(results, results_dir / "throughput.png"),
        latency(results, results_dir / "latency.png"),
    ]


if __name__ == "__main__":
    source = (
        Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "results/latest.json"
    )
    for written in draw(json.loads(source.read_text()), source.parent):
        print(written)
