"""The SDK's costs: what one `track()` call costs its caller, and how fast one Client delivers.

`track()` is timed per call against a transport that answers 200 at once; delivery runs one
`capture_sdk.Client` against a server in a subprocess that answers at once, so only the SDK
is measured: `python -m benchmarks.sdk --port N` (reads each body, parses nothing), and, for
comparison, `benchmarks.ack_server` (aiohttp; inflates and decodes each body).
Must not measure the collector: nothing here talks to it.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from array import array
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from benchmarks import procs
from benchmarks.events import mixed_batch
from benchmarks.procstats import sample_tree
from benchmarks.stats import percentile
from capture_sdk import Client, Response, Transport
from devtools.ports import free_port

READY_TIMEOUT_S = 30.0
DELIVERY_TIMEOUT_S = 300.0
# What the SDK reads from a 200: nothing rejected (it counts every event of the batch sent).
ACK_REPLY = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 28\r\n\r\n"
    b'{"accepted":0,"rejected":[]}'
)
Call = tuple[str, int, dict[str, Any], str | None, str | None]


class DiscardTransport(Transport):
    """Answers 200 without sending anything (the worker still encodes and gzips)."""

    REPLY = Response(200, b'{"accepted":0,"rejected":[]}')

    def send(self, body: bytes, headers: Mapping[str, str]) -> Response:
        return self.REPLY


def _calls(count: int, seed: int = 7) -> list[Call]:
    return [
        (
            event["event"],
            event["version"],
            event["properties"],
            event.get("user_id"),
            event.get("anonymous_id"),
        )
        for event in mixed_batch(count, seed=seed)
    ]


def _timer_overhead_ns(rounds: int = 100_000) -> int:
    samples = array("q")
    clock = time.perf_counter_ns
    for _ in range(rounds):
        started = clock()
        samples.append(clock() - started)
    return int(percentile(sorted(samples), 50))


def track_cost(calls: int, spool_dir: Path | None = None) -> dict[str, Any]:
    """Per-call wall time of `track()`, timed one call at a time with perf_counter_ns.

    With `spool_dir`, track() also encodes the event and write()s it to the disk spool.
    """
    variety = _calls(1_000)
    client = Client(
        transport=DiscardTransport(),
        max_queue_size=calls + 1,
        spool_dir=spool_dir,
        spool_max_bytes=1 << 40,  # measure the write path, not spool_full drops
    )
    samples = array("q")
    clock = time.perf_counter_ns
    try:
        started = time.perf_counter()
        for i in range(calls):
            name, version, properties, user_id, anonymous_id = variety[i % len(variety)]
            before = clock()
            client.track(
                name, properties, version=version, user_id=user_id, anonymous_id=anonymous_id
            )
            samples.append(clock() - before)
        loop_s = time.perf_counter() - started
        client.flush(timeout_s=60)
    finally:
        client.shutdown(timeout_s=10)
    stats = client.stats()
    ordered = sorted(samples)
    return {
        "calls": calls,
        "spool": spool_dir is not None,
        "median_us": round(percentile(ordered, 50) / 1000, 3),
        # what callers pay on average: GIL turns taken by the encoder and sender threads,
        # lock hand-offs and GC pauses all land in some calls and show here, not in the median
        "mean_us": round(sum(ordered) / len(ordered) / 1000, 3),
        "p99_us": round(percentile(ordered, 99) / 1000, 3),
        "p999_us": round(percentile(ordered, 99.9) / 1000, 3),
        "calls_per_s": round(calls / loop_s),
        "timer_overhead_ns": _timer_overhead_ns(),
        "sent": stats.sent,
        "dropped": {k: v for k, v in stats.dropped.items() if v},
    }


class _AckProtocol(asyncio.Protocol):
    """HTTP/1.1 keep-alive: skip each request's headers and Content-Length bytes, answer 200."""

    def __init__(self) -> None:
        self._buffer = b""
        self._body_left = -1  # -1: reading headers
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        while True:
            if self._body_left < 0:
                end = self._buffer.find(b"\r\n\r\n")
                if end < 0:
                    return
                head, self._buffer = self._buffer[:end].lower(), self._buffer[end + 4 :]
                at = head.find(b"content-length:")
                self._body_left = int(head[at + 15 :].split(b"\r\n")[0]) if at >= 0 else 0
            taken = min(self._body_left, len(self._buffer))
            self._buffer = self._buffer[taken:]
            self._body_left -= taken
            if self._body_left:
                return
            self._body_left = -1
            assert self._transport is not None
            self._transport.write(ACK_REPLY)


def serve_ack(port: int) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(_AckProtocol, "127.0.0.1", port)
        await server.serve_forever()

    asyncio.run(main())


def delivery_rate(
    events: int, work_dir: Path, *, ack_server: str = "raw", batch_size: int | None = None
) -> dict[str, Any]:
    """Events/s one Client delivers end to end to a server that accepts at once.

    `ack_server`: "raw" (this module's server, parses nothing) or "aiohttp" (`ack_server`,
    which inflates and decodes every body: on a shared 2-core machine it was the bottleneck).
    """
    port = free_port()
    log_path = work_dir / f"ack-server-{ack_server}.log"
    module = "benchmarks.sdk" if ack_server == "raw" else "benchmarks.ack_server"
    argv = [sys.executable, "-m", module, "--port", str(port)]
    variety = _calls(1_000, seed=11)
    options: dict[str, Any] = {} if batch_size is None else {"batch_size": batch_size}
    with procs.running(argv, log_path=log_path) as server:
        url = f"http://127.0.0.1:{port}"
        procs.wait_http_ok(url + "/healthz", server, timeout_s=READY_TIMEOUT_S, log_path=log_path)
        server_before = sample_tree(server.pid).cpu_s
        client = Client(url, max_queue_size=events + 1, **options)
        try:
            cpu_before_s = time.process_time()
            started = time.perf_counter()
            for i in range(events):
                name, version, properties, user_id, anonymous_id = variety[i % len(variety)]
                client.track(
                    name, properties, version=version, user_id=user_id, anonymous_id=anonymous_id
                )
            tracked_s = time.perf_counter() - started
            flushed = client.flush(timeout_s=DELIVERY_TIMEOUT_S)
            elapsed_s = time.perf_counter() - started
            client_cpu_s = time.process_time() - cpu_before_s
        finally:
            client.shutdown(timeout_s=10)
        server_cpu_s = sample_tree(server.pid).cpu_s - server_before
    stats = client.stats()
    return {
        "events": events,
        "flushed": flushed,
        "sent": stats.sent,
        "retried": stats.retried,
        "dropped": {k: v for k, v in stats.dropped.items() if v},
        "track_phase_s": round(tracked_s, 3),
        # the mean wall time of one track() while the worker delivers over HTTP (untimed
        # calls, so this includes the loop's own few tens of ns)
        "track_phase_mean_us": round(tracked_s / events * 1e6, 3),
        "elapsed_s": round(elapsed_s, 3),
        "delivered_eps": round(stats.sent / elapsed_s, 1),
        # this process's CPU (track() calls, encoder and sender threads): steadier than
        # elapsed time on a shared machine
        "client_cpu_s": round(client_cpu_s, 3),
        "ack_server_cpu_s": round(server_cpu_s, 3),
        "gzip": True,
        "ack_server": ack_server,
        "batch_size": client._queue_sizes[1],
    }


def run(*, track_calls: int, delivery_events: int, work_dir: Path) -> dict[str, Any]:
    return {
        "track": track_cost(track_calls),
        "track_spool": track_cost(track_calls, spool_dir=work_dir / "sdk-spool"),
        "delivery": delivery_rate(delivery_events, work_dir),
        "delivery_aiohttp_server": delivery_rate(delivery_events, work_dir, ack_server="aiohttp"),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="answer every HTTP request 200 at once")
    parser.add_argument("--port", type=int, required=True)
    serve_ack(parser.parse_args().port)
