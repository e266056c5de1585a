"""Where a collector's CPU goes, per pipeline stage, and how two runs' profiles compare.

Reads py-spy's collapsed stacks (benchmarks/profiler.py writes them during the probe at the
maximum) and puts every sample in one stage: the innermost frame that a rule below knows
decides it, so `socket.send` under aiokafka's connection counts as the produce request and
under aiohttp's writer as the HTTP response; the event loop's own frames stop the search.
Samples of a waiting thread (the loop in `select`, an idle pool worker) are not CPU and are
dropped. Each stage's share of the rest, times the CPU the probe measured per event, gives
CPU microseconds per event per stage, which two runs can compare stage by stage. Reads files
only; never runs a benchmark.

    python -m benchmarks.profile_stages BEFORE_RESULTS_DIR AFTER_RESULTS_DIR > table.md
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any

# (stage, substrings of a frame); the first stage whose substring is in the innermost known
# frame wins, so the more specific rules come first.
RULES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("sink: compression", ("aiokafka/codec.py",)),
    (
        "sink: produce request and socket",
        (
            "aiokafka/producer/sender.py",
            "aiokafka/conn.py",
            "aiokafka/client.py",
            "aiokafka/protocol/",
        ),
    ),
    (
        "sink: batching (builders, partitioner)",
        (
            "collector/sinks/kafka",
            "aiokafka/producer/message_accumulator.py",
            "aiokafka/partitioner.py",
            "aiokafka/cluster.py",
            "aiokafka/producer/producer.py",
            "aiokafka/record/",
        ),
    ),
    ("sink: file log write", ("collector/sinks/file.py",)),
    (
        "HTTP response",
        (
            "finish_response (aiohttp/",
            "json_response (collector/",
            "aiohttp/web_response.py",
            "aiohttp/http_writer.py",
        ),
    ),
    (
        "HTTP request (parse, read body, gunzip)",
        # read_body lived in decoding.py before request_body.py took it
        ("read_body (collector/", "GzipInflater", "collector/request_body.py", "aiohttp/", "yarl/"),
    ),
    ("metrics", ("prometheus_client/", "Plan.count_events")),
    ("decode", ("collector/decoding.py", "collector/limits.py")),
    ("validate", ("collector/validation.py",)),
    ("enrich", ("collector/enrichment.py",)),
    ("route (record bytes)", ("collector/routing.py",)),
    ("dedup and hot keys", ("collector/dedup.py", "collector/hotkeys.py")),
    (
        "auth and request context",
        (
            "collector/auth.py",
            "collector/browser_forms.py",
            "collector/client_ip.py",
            "collector/cors.py",
        ),
    ),
    ("handler (ours)", ("collector/",)),
)
OTHER = "event loop and other"
WAITING = "waiting (not CPU)"
STAGES = (*(stage for stage, _ in RULES), OTHER)
# The event loop's own frames: a sample whose innermost known frame is one of these is the
# loop's work (callbacks, timers), not a stage's, whatever runs it (aiohttp's run_app).
LOOP_FRAMES = ("BaseEventLoop._run_once (asyncio/", "BaseEventLoop.run_forever (asyncio/")
# Innermost frames of a thread that is waiting, not running: py-spy samples some of them.
WAITING_FRAMES = ("EpollSelector.select (selectors.py", "_worker (concurrent/futures/thread.py")


def stage_of(frames: list[str]) -> str:
    """The stage of one sample, given its frames from outermost to innermost."""
    if frames and frames[-1].startswith(WAITING_FRAMES):
        return WAITING
    for frame in reversed(frames):
        if frame.startswith(LOOP_FRAMES):
            return OTHER
        for stage, needles in RULES:
            if any(needle in frame for needle in needles):
                return stage
    return OTHER


def stages(collapsed: str) -> Counter[str]:
    """Samples per stage (and WAITING) in a collapsed-stacks text (`frame;... count` lines)."""
    counts: Counter[str] = Counter()
    for line in collapsed.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if stack and count_text.isdigit():
            counts[stage_of(stack.split(";"))] += int(count_text)
    return counts


def per_event_us(results_dir: Path, sink: str) -> dict[str, float] | None:
    """CPU µs per event per stage for one sink's probe in a results dir (its latest.json or
    results.json, and the profile it names), or None without a profile: each stage's share of
    the CPU samples times the collector CPU the probe measured per accepted event."""
    found = [p for p in (results_dir / "latest.json", results_dir / "results.json") if p.exists()]
    if not found:
        return None
    results = json.loads(found[0].read_text())
    ingest = results.get("http_ingest", {}).get(sink, {})
    profile, probe = ingest.get("profile"), ingest.get("probe")
    if not profile or not probe or "file" not in profile:
        return None
    stacks = results_dir / profile["file"]
    if not stacks.exists():
        return None
    counts = stages(stacks.read_text())
    busy = sum(counts[stage] for stage in STAGES)
    if not busy:
        return None
    us_per_event = probe["server_cpu_s"] / probe["accepted_events"] * 1e6
    return {stage: counts[stage] / busy * us_per_event for stage in STAGES}


def compare(before: dict[str, float], after: dict[str, float]) -> list[dict[str, Any]]:
    rows = []
    for stage in STAGES:
        old, new = before.get(stage, 0.0), after.get(stage, 0.0)
        rows.append({"stage": stage, "before_us": old, "after_us": new})
    rows.append(
        {"stage": "total", "before_us": sum(before.values()), "after_us": sum(after.values())}
    )
    return rows


def markdown(before_dir: Path, after_dir: Path) -> str:
    out = []
    for sink in ("kafka", "file"):
        before, after = per_event_us(before_dir, sink), per_event_us(after_dir, sink)
        if before is None or after is None:
            continue
        total_before, total_after = sum(before.values()), sum(after.values())
        out.append(f"| {sink} sink, CPU µs per event at the max | before | share | after | share |")
        out.append("|---|---:|---:|---:|---:|")
        for row in compare(before, after):
            old, new = row["before_us"], row["after_us"]
            if not old and not new:
                continue  # another sink's stage
            shares = f"{old / total_before:.0%} | {new:.2f} | {new / total_after:.0%}"
            out.append(f"| {row['stage']} | {old:.2f} | {shares} |")
        out.append("")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "before", type=Path, help="a results dir (latest.json or results.json, profiles)"
    )
    parser.add_argument("after", type=Path)
    args = parser.parse_args(argv)
    text = markdown(args.before, args.after)
    if not text:
        print("no profiles to compare in those directories", file=sys.stderr)
        return 2
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
