"""Open-loop HTTP load generator: worker processes POST pre-encoded batches on a fixed schedule.

Request i is due at t0 + i / rate and its latency counts from that moment, not from the send,
so a server that falls behind shows up as latency, 503s and timeouts instead of as a slower
client (no coordinated omission). Every step is bounded in requests and time and targets
loopback only. Must not decide what a result means: stepping and verdicts live in `ingest`.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import multiprocessing
import time
from array import array
from collections import Counter
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

import aiohttp
import msgspec

from benchmarks.payloads import BodyPool, build_pool
from benchmarks.stats import ms, percentile

# Workers get the step a little before t0 so that every one of them starts on time.
START_DELAY_S = 0.3
# A reply slower than this after its due time is not waited for at the end of a step.
EXTRA_WAIT_S = 30.0
READY_TIMEOUT_S = 120.0


@dataclass(frozen=True, slots=True)
class PoolSpec:
    bodies: int = 64
    events_per_body: int = 100
    use_gzip: bool = False
    seed: int = 1


@dataclass(frozen=True, slots=True)
class StepSpec:
    url: str
    duration_s: float
    rate_eps: float | None = None  # open loop: offered events/s over all workers
    concurrency: int = 0  # closed loop (when rate_eps is None): requests in flight per worker
    max_requests: int = 1_000_000
    request_timeout_s: float = 10.0
    connections: int = 32  # per worker
    max_in_flight: int = 2_000  # per worker; a due request beyond it is counted as `overflow`


@dataclass(slots=True)
class _WorkerResult:
    latencies_s: array[float] = field(default_factory=lambda: array("d"))
    due_s: array[float] = field(default_factory=lambda: array("d"))  # since t0, per latency
    lags_s: array[float] = field(default_factory=lambda: array("d"))
    statuses: Counter[str] = field(default_factory=Counter)
    accepted_events: int = 0
    rejected_events: int = 0
    last_done: float = 0.0
    cpu_s: float = 0.0


@dataclass(frozen=True, slots=True)
class StepResult:
    offered_eps: float | None
    concurrency: int
    duration_s: float
    elapsed_s: float  # from t0 to the last reply (or give-up)
    requests: int
    statuses: dict[str, int]
    accepted_events: int
    rejected_events: int
    achieved_eps: float  # accepted events / elapsed_s
    error_ratio: float  # requests without a 200 / requests
    latency_p50_ms: float
    latency_p99_ms: float
    latency_p999_ms: float
    latency_max_ms: float
    # Median latency of the requests due in the first and in the last third of the step: a
    # server that keeps up holds them level; one that falls behind lets the last one grow.
    latency_p50_first_third_ms: float
    latency_p50_last_third_ms: float
    generator_cpu_s: float
    generator_busiest_worker: float  # CPU share of the busiest worker process (1.0 = saturated)
    generator_lag_p99_ms: float  # how late the generator itself issued requests

    def summary(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


class _Reply(msgspec.Struct):
    accepted: int = 0
    rejected: list[msgspec.Raw] = []


_reply_decoder = msgspec.json.Decoder(_Reply)


class _Sender:
    def __init__(
        self, session: aiohttp.ClientSession, spec: StepSpec, pool: BodyPool, t0: float
    ) -> None:
        self.session = session
        self.t0 = t0
        self.spec = spec
        self.pool = pool
        self.headers = {"Content-Type": "application/json"}
        if pool.gzip:
            self.headers["Content-Encoding"] = "gzip"
        self.result = _WorkerResult()

    async def send(self, n: int, due: float) -> None:
        result = self.result
        body = self.pool.bodies[n % len(self.pool.bodies)]
        try:
            async with self.session.post(self.spec.url, data=body, headers=self.headers) as reply:
                data = await reply.read()
                status = reply.status
        except TimeoutError:
            result.statuses["timeout"] += 1
            return
        except (aiohttp.ClientError, OSError):
            result.statuses["conn_error"] += 1
            return
        done = time.monotonic()
        result.latencies_s.append(done - due)
        result.due_s.append(due - self.t0)
        result.last_done = max(result.last_done, done)
        if status != 200:
            result.statuses[str(status)] += 1
            return
        try:
            reply_body = _reply_decoder.decode(data)
        except msgspec.DecodeError:
            result.statuses["bad_reply"] += 1
            return
        result.statuses["200"] += 1
        result.accepted_events += reply_body.accepted
        result.rejected_events += len(reply_body.rejected)


async def _open_loop(sender: _Sender, t0: float, index: int, workers: int) -> None:
    spec = sender.spec
    assert spec.rate_eps is not None
    request_rate = spec.rate_eps / sender.pool.events_per_body
    total = min(spec.max_requests, math.ceil(request_rate * spec.duration_s))
    in_flight: set[asyncio.Task[None]] = set()
    for i in range(index, total, workers):
        due = t0 + i / request_rate
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        sender.result.lags_s.append(max(0.0, time.monotonic() - due))
        if len(in_flight) >= spec.max_in_flight:
            sender.result.statuses["overflow"] += 1
            continue
        task = asyncio.create_task(sender.send(i // workers, due))
        in_flight.add(task)
        task.add_done_callback(in_flight.discard)
    if in_flight:
        await asyncio.wait(in_flight, timeout=spec.request_timeout_s + EXTRA_WAIT_S)


async def _closed_loop(sender: _Sender, t0: float) -> None:
    spec = sender.spec
    end = t0 + spec.duration_s
    counter = iter(range(spec.max_requests))

    async def lane() -> None:
        for n in counter:
            now = time.monotonic()
            if now >= end:
                return
            await sender.send(n, now)

    await asyncio.sleep(max(0.0, t0 - time.monotonic()))
    await asyncio.gather(*(lane() for _ in range(spec.concurrency)))


async def _run_step(spec: StepSpec, pool: BodyPool, t0: float, index: int, workers: int) -> Any:
    connector = aiohttp.TCPConnector(limit=spec.connections)
    timeout = aiohttp.ClientTimeout(total=spec.request_timeout_s)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        sender = _Sender(session, spec, pool, t0)
        cpu_before = time.process_time()
        if spec.rate_eps is not None:
            await _open_loop(sender, t0, index, workers)
        else:
            await _closed_loop(sender, t0)
        sender.result.cpu_s = time.process_time() - cpu_before
    return sender.result


def _worker_main(conn: Connection, index: int, pool_spec: PoolSpec) -> None:
    pool = build_pool(
        bodies=pool_spec.bodies,
        events_per_body=pool_spec.events_per_body,
        seed=pool_spec.seed * 1_000 + index,
        use_gzip=pool_spec.use_gzip,
    )
    conn.send(("ready", pool.mean_body_bytes))
    while True:
        message = conn.recv()
        if message is None:
            return
        spec, t0, workers = message
        conn.send(asyncio.run(_run_step(spec, pool, t0, index, workers)))


class LoadGenerator:
    """A fixed set of worker processes that run one step at a time against a URL."""

    def __init__(self, *, workers: int = 2, pool: PoolSpec | None = None) -> None:
        self.pool = pool or PoolSpec()
        self._context = multiprocessing.get_context("spawn")
        self._conns: list[Connection] = []
        self._processes: list[multiprocessing.process.BaseProcess] = []
        self.mean_body_bytes = 0.0
        try:
            for index in range(workers):
                parent, child = self._context.Pipe()
                process = self._context.Process(
                    target=_worker_main,
                    args=(child, index, self.pool),
                    name=f"loadgen-{index}",
                    daemon=True,
                )
                process.start()
                child.close()
                self._conns.append(parent)
                self._processes.append(process)
            sizes = [self._receive(conn, READY_TIMEOUT_S)[1] for conn in self._conns]
            self.mean_body_bytes = sum(sizes) / len(sizes)
        except BaseException:
            self.close()
            raise

    @property
    def workers(self) -> int:
        return len(self._conns)

    @staticmethod
    def _receive(conn: Connection, timeout_s: float) -> Any:
        if not conn.poll(timeout_s):
            raise TimeoutError(f"load generator worker silent for {timeout_s:.0f}s")
        try:
            return conn.recv()
        except EOFError as exc:
            raise RuntimeError("a load generator worker exited; see its traceback above") from exc

    def run(self, spec: StepSpec) -> StepResult:
        t0 = time.monotonic() + START_DELAY_S
        for conn in self._conns:
            conn.send((spec, t0, self.workers))
        wait_s = START_DELAY_S + spec.duration_s + spec.request_timeout_s + EXTRA_WAIT_S + 10
        parts: list[_WorkerResult] = [self._receive(conn, wait_s) for conn in self._conns]
        return _merge(spec, t0, parts)

    def close(self) -> None:
        for conn in self._conns:
            with contextlib.suppress(OSError):
                conn.send(None)
        for process in self._processes:
            process.join(5)
            if process.is_alive():
                process.kill()
                process.join(5)
        for conn in self._conns:
            conn.close()
        self._conns.clear()
        self._processes.clear()

    def __enter__(self) -> LoadGenerator:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _merge(spec: StepSpec, t0: float, parts: list[_WorkerResult]) -> StepResult:
    latencies = sorted(x for part in parts for x in part.latencies_s)
    lags = sorted(x for part in parts for x in part.lags_s)
    statuses: Counter[str] = Counter()
    for part in parts:
        statuses.update(part.statuses)
    requests = sum(statuses.values())
    accepted = sum(part.accepted_events for part in parts)
    last_done = max((part.last_done for part in parts), default=0.0)
    elapsed_s = max(spec.duration_s, last_done - t0)
    cpu = [part.cpu_s for part in parts]
    return StepResult(
        offered_eps=spec.rate_eps,
        concurrency=spec.concurrency if spec.rate_eps is None else 0,
        duration_s=spec.duration_s,
        elapsed_s=round(elapsed_s, 3),
        requests=requests,
        statuses=dict(sorted(statuses.items())),
        accepted_events=accepted,
        rejected_events=sum(part.rejected_events for part in parts),
        achieved_eps=round(accepted / elapsed_s, 1),
        error_ratio=round(1 - statuses["200"] / requests, 5) if requests else 1.0,
        latency_p50_ms=ms(percentile(latencies, 50)),
        latency_p99_ms=ms(percentile(latencies, 99)),
        latency_p999_ms=ms(percentile(latencies, 99.9)),
        latency_max_ms=ms(latencies[-1]) if latencies else math.nan,
        latency_p50_first_third_ms=ms(_p50_due_between(parts, 0, spec.duration_s / 3)),
        latency_p50_last_third_ms=ms(
            _p50_due_between(parts, spec.duration_s * 2 / 3, spec.duration_s)
        ),
        generator_cpu_s=round(sum(cpu), 3),
        generator_busiest_worker=round(max(cpu, default=0.0) / elapsed_s, 3),
        generator_lag_p99_ms=ms(percentile(lags, 99)) if lags else 0.0,
    )


def _p50_due_between(parts: list[_WorkerResult], start_s: float, end_s: float) -> float:
    window = sorted(
        latency
        for part in parts
        for latency, due in zip(part.latencies_s, part.due_s, strict=True)
        if start_s <= due < end_s
    )
    return percentile(window, 50)
