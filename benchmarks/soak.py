"""Memory soak: hold a collector at a steady open-loop rate and sample its RSS as time passes.

Reports the RSS series, first/last values and least-squares slopes (whole run, and after the
warm-up share). The file sink's logs are emptied past a disk cap, since only memory is judged
here. Must not start the collector (the caller hands it in) or judge the slope (`report` does).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from benchmarks.loadgen import LoadGenerator, StepSpec
from benchmarks.procstats import MIB, sample_tree
from benchmarks.stats import slope

# The first share of the soak is warm-up (allocator arenas, caches); its growth is expected.
WARMUP_SHARE = 0.2
# A soak at tens of MB/s would fill the disk; past this the topic logs are truncated to 0.
# Kept small on purpose: a truncate holds the file's lock while it frees blocks (~0.2 s per GiB
# here) and stalls the collector's appends meanwhile, and a stall shows up as RSS (backlog).
DISK_CAP_BYTES = 256 * 1024**2


def _logs_bytes(data_dir: Path) -> int:
    return sum(path.stat().st_size for path in data_dir.glob("*.jsonl"))


def _empty_logs(data_dir: Path) -> int:
    """Truncate the topic logs (the collector appends with O_APPEND, so this is safe for it)."""
    freed = 0
    for path in data_dir.glob("*.jsonl"):
        freed += path.stat().st_size
        path.write_bytes(b"")
    return freed


def run(
    gen: LoadGenerator,
    *,
    url: str,
    pid: int,
    rate_eps: float,
    duration_s: float,
    sample_every_s: float,
    data_dir: Path,
) -> dict[str, Any]:
    series: list[tuple[float, float]] = []
    truncated_bytes = 0
    stop = threading.Event()
    started = time.monotonic()

    def sample() -> None:
        nonlocal truncated_bytes
        series.append((time.monotonic() - started, sample_tree(pid).rss_bytes / MIB))
        if data_dir.exists() and _logs_bytes(data_dir) > DISK_CAP_BYTES:
            truncated_bytes += _empty_logs(data_dir)

    def sampler() -> None:
        while not stop.wait(sample_every_s):
            sample()

    sample()
    thread = threading.Thread(target=sampler, name="soak-sampler", daemon=True)
    thread.start()
    try:
        result = gen.run(StepSpec(url=url, duration_s=duration_s, rate_eps=rate_eps))
    finally:
        stop.set()
        thread.join(sample_every_s + 5)
    sample()
    times_min = [t / 60 for t, _ in series]
    rss_mib = [rss for _, rss in series]
    after = [i for i, (t, _) in enumerate(series) if t >= WARMUP_SHARE * duration_s]
    return {
        "rate_eps": rate_eps,
        "duration_s": duration_s,
        "sample_every_s": sample_every_s,
        "load": result.summary(),
        "series": [{"t_s": round(t, 1), "rss_mib": round(rss, 2)} for t, rss in series],
        "first_rss_mib": round(rss_mib[0], 2),
        "last_rss_mib": round(rss_mib[-1], 2),
        "max_rss_mib": round(max(rss_mib), 2),
        "slope_mib_per_min": round(slope(times_min, rss_mib), 3),
        "slope_after_warmup_mib_per_min": round(
            slope([times_min[i] for i in after], [rss_mib[i] for i in after]), 3
        ),
        "warmup_share": WARMUP_SHARE,
        "truncated_log_bytes": truncated_bytes,
    }
