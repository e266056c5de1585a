"""Find a server's maximum sustained ingest rate by stepping open-loop load, then run at half.

A closed-loop probe estimates the capacity; open-loop steps at fractions of it (up to beyond
saturation) and a bisection between the last sustained and the first failed step find the
maximum; a longer step at half of it gives the latency headline. Every step also records the
server's CPU per accepted event and its memory. Must not start or stop the server itself.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from benchmarks.loadgen import LoadGenerator, StepResult, StepSpec
from benchmarks.procstats import MIB, sample_tree, system_busy_fraction, system_clock

# A step is sustained when fewer than this share of its requests failed,
MAX_ERROR_RATIO = 0.01
# the server accepted at least this share of what was offered,
MIN_ACHIEVED_RATIO = 0.95
# and no queue built up: the median latency of the step's last third stayed within this factor
# (plus a slack for noise) of its first third's. A backlog grows latency steadily over a step.
MAX_LATENCY_GROWTH = 2.0
LATENCY_SLACK_MS = 25.0
# Between steps, wait until the server uses less than this share of a core (a backlog drained).
SETTLE_CORE_SHARE = 0.1
SETTLE_WINDOW_S = 0.5
SETTLE_MAX_S = 15.0
ROUND_EPS = 50
# When every planned step was sustained, keep raising the load by this factor (a few times).
GROWTH = 1.3
MAX_GROWTH_STEPS = 4


@dataclass(frozen=True, slots=True)
class Plan:
    step_s: float
    half_s: float
    probe_s: float
    warmup_s: float
    fractions: tuple[float, ...]  # offered load as fractions of the probe's estimate
    refine_steps: int  # bisections between the last sustained and the first failed step
    probe_concurrency: int  # requests in flight per load generator worker during the probe
    budget_s: float  # no new step starts after this much time (the half step still runs)
    request_timeout_s: float = 10.0


Profiler = Callable[[float], Callable[[], dict[str, Any]]]


def sustained(step: StepResult) -> bool:
    offered = step.offered_eps or 0.0
    first, last = step.latency_p50_first_third_ms, step.latency_p50_last_third_ms
    # NaN (no replies in a window) compares False: not sustained.
    level = last <= MAX_LATENCY_GROWTH * first + LATENCY_SLACK_MS
    return (
        step.error_ratio < MAX_ERROR_RATIO
        and step.achieved_eps >= MIN_ACHIEVED_RATIO * offered
        and level
    )


def settle(pid: int) -> float:
    """Wait (bounded) until the server is idle; returns how long that took."""
    started = time.monotonic()
    before = sample_tree(pid).cpu_s
    while time.monotonic() - started < SETTLE_MAX_S:
        time.sleep(SETTLE_WINDOW_S)
        after = sample_tree(pid).cpu_s
        if after - before < SETTLE_CORE_SHARE * SETTLE_WINDOW_S:
            break
        before = after
    return round(time.monotonic() - started, 2)


def measure(gen: LoadGenerator, spec: StepSpec, pid: int) -> tuple[StepResult, dict[str, Any]]:
    """Run one step and add the server's CPU, memory and the machine's load to its summary."""
    before, clock_before = sample_tree(pid), system_clock()
    result = gen.run(spec)
    after, clock_after = sample_tree(pid), system_clock()
    cpu_s = after.cpu_s - before.cpu_s
    row = result.summary()
    row |= {
        "server_cpu_s": round(cpu_s, 3),
        "server_cores": round(cpu_s / result.elapsed_s, 3),
        "server_cpu_s_per_million_events": (
            round(cpu_s / result.accepted_events * 1e6, 2) if result.accepted_events else None
        ),
        "server_rss_mib": round(after.rss_bytes / MIB, 1),
        "server_peak_rss_mib": round(after.hwm_bytes / MIB, 1),
        "server_processes": after.processes,
        "machine_busy": round(system_busy_fraction(clock_before, clock_after), 3),
    }
    if spec.rate_eps is not None:
        row["sustained"] = sustained(result)
    row["settle_s"] = settle(pid)
    return result, row


def find_max(
    gen: LoadGenerator,
    url: str,
    pid: int,
    plan: Plan,
    *,
    profiler: Profiler | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    started = time.monotonic()

    def spec(duration_s: float, rate_eps: float | None = None, concurrency: int = 0) -> StepSpec:
        return StepSpec(
            url=url,
            duration_s=duration_s,
            rate_eps=rate_eps,
            concurrency=concurrency,
            request_timeout_s=plan.request_timeout_s,
            connections=max(32, plan.probe_concurrency),
        )

    _, warmup = measure(gen, spec(plan.warmup_s, concurrency=2), pid)
    stop_profile = profiler(plan.probe_s) if profiler is not None else None
    probe_result, probe = measure(gen, spec(plan.probe_s, concurrency=plan.probe_concurrency), pid)
    profile = stop_profile() if stop_profile is not None else None
    estimate_eps = max(float(ROUND_EPS), probe_result.achieved_eps)
    log(f"  probe: {estimate_eps:,.0f} events/s closed-loop, p99 {probe['latency_p99_ms']} ms")

    steps: list[dict[str, Any]] = []
    best_ok: float | None = None
    first_bad: float | None = None

    def step(rate_eps: float) -> bool:
        result, row = measure(gen, spec(plan.step_s, rate_eps=rate_eps), pid)
        steps.append(row)
        ok = sustained(result)
        log(
            f"  {rate_eps:>10,.0f} offered -> {result.achieved_eps:>10,.0f} events/s,"
            f" errors {result.error_ratio:.2%}, p99 {result.latency_p99_ms} ms"
            f"{'' if ok else '  (not sustained)'}"
        )
        return ok

    failures_in_a_row = 0
    for fraction in plan.fractions:
        if time.monotonic() - started > plan.budget_s:
            break
        rate_eps = _round(estimate_eps * fraction)
        if step(rate_eps):
            best_ok = rate_eps if best_ok is None else max(best_ok, rate_eps)
            failures_in_a_row = 0
        else:
            first_bad = rate_eps if first_bad is None else min(first_bad, rate_eps)
            failures_in_a_row += 1
            if failures_in_a_row >= 2:  # far enough beyond saturation
                break
    rate_eps = _round(estimate_eps * plan.fractions[-1])
    for _ in range(MAX_GROWTH_STEPS):  # never saturated: the probe underestimated
        if first_bad is not None or time.monotonic() - started > plan.budget_s:
            break
        rate_eps = _round(rate_eps * GROWTH)
        if step(rate_eps):
            best_ok = rate_eps
        else:
            first_bad = rate_eps
    low = best_ok if best_ok is not None else 0.0
    for _ in range(plan.refine_steps):
        if first_bad is None or time.monotonic() - started > plan.budget_s:
            break
        middle = _round((low + first_bad) / 2)
        if middle <= low or middle >= first_bad:
            break
        if step(middle):
            low = middle
        else:
            first_bad = middle

    ok_rows = [row for row in steps if row.get("sustained")]
    max_eps = max((row["achieved_eps"] for row in ok_rows), default=0.0)
    half: dict[str, Any] | None = None
    if max_eps > 0:
        _, half = measure(gen, spec(plan.half_s, rate_eps=_round(max_eps / 2)), pid)
        log(
            f"  half of max ({max_eps / 2:,.0f} events/s): p50 {half['latency_p50_ms']} ms,"
            f" p99 {half['latency_p99_ms']} ms, p99.9 {half['latency_p999_ms']} ms"
        )
    return {
        "warmup": warmup,
        "probe": probe,
        "steps": sorted(steps, key=lambda row: row["offered_eps"]),
        "max_sustained_eps": max_eps,
        "saturated": first_bad is not None,
        "half_max": half,
        "profile": profile,
        "elapsed_s": round(time.monotonic() - started, 1),
    }


def _round(rate_eps: float) -> float:
    return float(max(ROUND_EPS, round(rate_eps / ROUND_EPS) * ROUND_EPS))
