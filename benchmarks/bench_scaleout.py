"""Scale-out benchmark: 1, 2 and 4 `capture serve` processes (file sink) behind a real HAProxy.

Each setup gets a warm-up and then a closed-loop run from the load generator through the
balancer (deploy/haproxy/haproxy.cfg via devtools/haproxy.py), plus one collector driven
directly to show what the proxy costs. Not part of `make test` or `make bench`; it must not
patch the collector (configured only through CAPTURE_* variables).

    python -m benchmarks.bench_scaleout [--duration-s 15] [--out benchmarks/results/scaleout.json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from benchmarks.collector_proc import Collector, run_collector
from benchmarks.loadgen import LoadGenerator, PoolSpec, StepSpec
from benchmarks.procstats import sample_tree, system_busy_fraction, system_clock
from devtools.haproxy import HAProxy

RESULTS = Path(__file__).resolve().parent / "results" / "scaleout.json"
SETUPS = (1, 2, 4)
WARMUP_S = 3.0
# requests in flight per load generator process: enough to keep 4 collectors busy
CONCURRENCY = 16
LOADGEN_WORKERS = 2


@contextlib.contextmanager
def fleet(count: int, work_dir: Path) -> Iterator[list[Collector]]:
    with contextlib.ExitStack() as stack:
        collectors = []
        for number in range(count):
            own = work_dir / f"c{number}"
            own.mkdir(parents=True)
            collectors.append(stack.enter_context(run_collector(sink="file", work_dir=own)))
        yield collectors


def cpu_s(pids: Sequence[int]) -> float:
    return sum(sample_tree(pid).cpu_s for pid in pids)


def measure(gen: LoadGenerator, url: str, pids: dict[str, list[int]], duration_s: float) -> Any:
    """A warm-up, then the closed-loop run: events/s, latency, and each party's CPU."""

    def spec(seconds: float) -> StepSpec:
        return StepSpec(url=url, duration_s=seconds, concurrency=CONCURRENCY, connections=32)

    gen.run(spec(WARMUP_S))
    before = {name: cpu_s(group) for name, group in pids.items()}
    clock = system_clock()
    result = gen.run(spec(duration_s))
    busy = system_busy_fraction(clock, system_clock())
    cores = {
        name: round((cpu_s(group) - before[name]) / result.elapsed_s, 2)
        for name, group in pids.items()
    }
    cores["loadgen"] = round(result.generator_cpu_s / result.elapsed_s, 2)
    return {
        "events_per_s": round(result.achieved_eps),
        "p50_ms": result.latency_p50_ms,
        "p99_ms": result.latency_p99_ms,
        "statuses": result.statuses,
        "cores": cores,
        "machine_busy": round(busy, 3),
    }


def run(duration_s: float, out: Path) -> dict[str, Any]:
    results: dict[str, Any] = {
        "what": "closed loop, 100-event batches, file sink (fsync), loopback",
        "cpus": os.cpu_count(),
        "loadavg_start": os.getloadavg(),
        "duration_s": duration_s,
        "setups": [],
    }
    pool = PoolSpec(bodies=64, events_per_body=100)
    with (
        tempfile.TemporaryDirectory(prefix="scaleout-") as tmp,
        LoadGenerator(workers=LOADGEN_WORKERS, pool=pool) as gen,
    ):
        work_dir = Path(tmp)
        results["mean_body_bytes"] = round(gen.mean_body_bytes)
        with fleet(1, work_dir / "direct") as [collector]:
            row = measure(
                gen,
                collector.batch_url,
                {"collectors": [collector.pid]},
                duration_s,
            )
            results["setups"].append({"collectors": 1, "haproxy": False, **row})
            print(f"1 collector, direct: {row}", flush=True)
        for count in SETUPS:
            with (
                fleet(count, work_dir / f"lb{count}") as collectors,
                HAProxy([c.url.removeprefix("http://") for c in collectors]) as balancer,
            ):
                for number in range(1, count + 1):
                    balancer.wait_state(f"c{number}", "UP")
                assert balancer.pid is not None
                pids = {
                    "collectors": [c.pid for c in collectors],
                    "haproxy": [balancer.pid],
                }
                row = measure(gen, balancer.url + "/v1/batch", pids, duration_s)
                results["setups"].append({"collectors": count, "haproxy": True, **row})
                print(f"{count} collectors behind HAProxy: {row}", flush=True)
    results["loadavg_end"] = os.getloadavg()
    results["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    return results


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_scaleout")
    parser.add_argument("--duration-s", type=float, default=15.0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    run(args.duration_s, args.out)


if __name__ == "__main__":
    main()
