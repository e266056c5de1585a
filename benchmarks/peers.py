"""Our Python SDK beside its peers, in one run, against one stand-in sink.

Each SDK tracks the same events (names, properties, user ids, one event count) and delivers
them over loopback to a sink in a subprocess (`python -m benchmarks.peers --port N`). The sink
answers every POST 200 at once and counts the events in each body (inflating gzip), per path:
each SDK posts its own wire format to its own path, so delivered == tracked is checked from
what reached the sink, not from the SDK's own counters.

Per SDK: what one `track()` call costs its caller while the SDK's background thread delivers
(median, mean, p99: timed one call at a time), and events/s from the first call until the
SDK's flush returns. Each SDK runs with its documented batching defaults; the queue bound is
raised to the event count everywhere, so that no SDK drops events for a full queue (the
defaults are 10,000 for all four). What differs by design is in `NOTES`.

Must not measure the collector: nothing here talks to it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import threading
import time
import urllib.request
import zlib
from array import array
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import msgspec

from benchmarks import procs
from benchmarks.procstats import sample_tree
from benchmarks.sdk import Call, _calls
from benchmarks.stats import percentile
from devtools.ports import free_port

READY_TIMEOUT_S = 30.0
FLUSH_TIMEOUT_S = 180.0  # per SDK: a peer that cannot deliver in this time is reported so
GZIP_WBITS = 16 + zlib.MAX_WBITS

# Where each SDK posts, as the sink counts it. Ours and Segment both post to /v1/batch
# (their hosts differ by prefix), PostHog's v0 capture to /batch/, Snowplow to its tp2 path.
PATHS = {
    "capture_sdk": "/v1/batch",
    "segment": "/segment/v1/batch",
    "posthog": "/posthog/batch/",
    "snowplow": "/com.snowplowanalytics.snowplow/tp2",
}
NOTES = {
    "capture_sdk": "batch_size 500 (default); gzip level 1 (default); one kept-alive "
    "connection (http.client); encodes and gzips on two background threads",
    "capture_sdk_batch100": "as capture_sdk, with batch_size 100 (the peers' default)",
    "segment": "upload_size 100, upload_interval 0.5 s (defaults); no gzip (default); "
    "requests.Session kept alive; json.dumps per event to check its size, then per batch",
    "posthog": "flush_at 100, flush_interval 5 s (defaults; flush() sends the rest); no gzip "
    "(default); v0 /batch/ capture; requests session kept alive; json.dumps per event to "
    "check its size, then per batch; capture() reads the OS "
    "release (distro) for every event: about half of its track() time",
    "snowplow": "AsyncEmitter (a background thread; the plain Emitter posts from track() "
    "itself), batch_size 10 (default), no gzip; requests.post without a session, so a "
    "new connection per batch (default); base64-encoded self-describing event JSON "
    "(default); per-event Subject for the user id; its per-request INFO log turned off",
}


# --- the sink ------------------------------------------------------------------------------


class _Envelope(msgspec.Struct):
    """Every peer's body is a JSON object holding its events in `batch` or in `data`."""

    batch: list[msgspec.Raw] = []
    data: list[msgspec.Raw] = []


_envelope = msgspec.json.Decoder(_Envelope)


def count_events(body: bytes, gzipped: bool) -> int:
    """The number of events in one request body (raises ValueError if it is not a batch)."""
    if gzipped:
        body = zlib.decompress(body, GZIP_WBITS)
    try:
        envelope = _envelope.decode(body)
    except msgspec.DecodeError as exc:
        raise ValueError(f"not a batch body: {exc}") from exc
    return len(envelope.batch) + len(envelope.data)


class _Counts:
    def __init__(self) -> None:
        self.events = dict.fromkeys(PATHS, 0)
        self.requests = dict.fromkeys(PATHS, 0)
        self.bytes = dict.fromkeys(PATHS, 0)
        self.bad = 0

    def as_json(self) -> bytes:
        return json.dumps(
            {"events": self.events, "requests": self.requests, "bytes": self.bytes, "bad": self.bad}
        ).encode()


_ROUTES = {path: name for name, path in PATHS.items()}


def _reply(status: str, body: bytes, close: bool) -> bytes:
    connection = "Connection: close\r\n" if close else ""
    head = (
        f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n{connection}\r\n"
    )
    return head.encode() + body


class _SinkProtocol(asyncio.Protocol):
    """HTTP/1.1 with keep-alive and Content-Length bodies (what all four SDKs send)."""

    def __init__(self, counts: _Counts) -> None:
        self._counts = counts
        self._buffer = bytearray()
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        while self._transport is not None:
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            lines = bytes(self._buffer[:end]).decode("latin-1").split("\r\n")
            headers = {}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            length = int(headers.get("content-length", "0"))
            if len(self._buffer) < end + 4 + length:
                return  # the rest of the body is still coming
            body = bytes(self._buffer[end + 4 : end + 4 + length])
            del self._buffer[: end + 4 + length]
            method, _, target = lines[0].partition(" ")
            path = target.partition(" ")[0].partition("?")[0]
            close = headers.get("connection", "").lower() == "close"
            self._transport.write(self._answer(method, path, headers, body, close))
            if close:
                self._transport.close()
                self._transport = None

    def _answer(
        self, method: str, path: str, headers: dict[str, str], body: bytes, close: bool
    ) -> bytes:
        counts = self._counts
        if method == "GET" and path == "/healthz":
            return _reply("200 OK", b'"ok"', close)
        if method == "GET" and path == "/counts":
            return _reply("200 OK", counts.as_json(), close)
        name = _ROUTES.get(path)
        if method != "POST" or name is None:
            return _reply("404 Not Found", b'{"error":"not_found"}', close)
        try:
            events = count_events(body, headers.get("content-encoding") == "gzip")
        except (ValueError, zlib.error):
            counts.bad += 1
            return _reply("400 Bad Request", b'{"error":"bad_body"}', close)
        counts.events[name] += events
        counts.requests[name] += 1
        counts.bytes[name] += len(body)
        # what our SDK reads from a 200 (the peers only look at the status)
        return _reply("200 OK", b'{"accepted":%d,"rejected":[]}' % events, close)


def serve_sink(port: int) -> None:
    async def main() -> None:
        counts = _Counts()
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: _SinkProtocol(counts), "127.0.0.1", port)
        await server.serve_forever()

    asyncio.run(main())


def sink_counts(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url + "/counts", timeout=10) as response:  # noqa: S310  # loopback
        counts: dict[str, Any] = json.loads(response.read())
        return counts


# --- the SDKs, each behind the same four calls ----------------------------------------------


class Sdk:
    """One SDK: made for the sink's URL, then track() per event, flush, close."""

    name = ""
    route = ""  # its key in PATHS: where it posts

    def __init__(self, url: str, events: int) -> None:
        self.failures = 0  # reported by the SDK's own error callback

    def track(self, call: Call) -> None:
        raise NotImplementedError

    def flush(self) -> None:
        """Block until the SDK says everything tracked so far was sent."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class Ours(Sdk):
    name = route = "capture_sdk"
    options: ClassVar[dict[str, Any]] = {}

    def __init__(self, url: str, events: int) -> None:
        super().__init__(url, events)
        from capture_sdk import Client

        self.client = Client(url, max_queue_size=events + 1, on_error=self._failed, **self.options)
        self._track = self.client.track

    def _failed(self, dropped: Any) -> None:
        self.failures += len(dropped)

    def track(self, call: Call) -> None:
        name, version, properties, user_id, anonymous_id = call
        self._track(name, properties, version=version, user_id=user_id, anonymous_id=anonymous_id)

    def flush(self) -> None:
        self.client.flush(timeout_s=FLUSH_TIMEOUT_S)

    def close(self) -> None:
        self.client.shutdown(timeout_s=10)


class OursBatch100(Ours):
    """Ours at the peers' batch size (Segment's and PostHog's default), for a like-for-like row."""

    name = "capture_sdk_batch100"
    options: ClassVar[dict[str, Any]] = {"batch_size": 100}


class Segment(Sdk):
    name = route = "segment"

    def __init__(self, url: str, events: int) -> None:
        super().__init__(url, events)
        from segment.analytics import Client

        self.client = Client(
            write_key="bench",
            host=url + "/segment",
            max_queue_size=events + 1,
            on_error=self._failed,
        )
        self._track = self.client.track

    def _failed(self, error: Exception, batch: list[Any]) -> None:
        self.failures += len(batch)

    def track(self, call: Call) -> None:
        name, _, properties, user_id, anonymous_id = call
        self._track(user_id=user_id, event=name, properties=properties, anonymous_id=anonymous_id)

    def flush(self) -> None:
        self.client.flush()

    def close(self) -> None:
        self.client.shutdown()


class PostHog(Sdk):
    name = route = "posthog"

    def __init__(self, url: str, events: int) -> None:
        super().__init__(url, events)
        from posthog import Posthog

        self.client = Posthog(
            "phc_bench", host=url + "/posthog", max_queue_size=events + 1, on_error=self._failed
        )
        self._capture = self.client.capture

    def _failed(self, error: Exception, batch: list[Any]) -> None:
        self.failures += len(batch)

    def track(self, call: Call) -> None:
        name, _, properties, user_id, anonymous_id = call
        self._capture(name, distinct_id=user_id or anonymous_id, properties=properties)

    def flush(self) -> None:
        self.client.flush(timeout_seconds=FLUSH_TIMEOUT_S)

    def close(self) -> None:
        self.client.shutdown()


class Snowplow(Sdk):
    name = route = "snowplow"

    def __init__(self, url: str, events: int) -> None:
        super().__init__(url, events)
        # Importing snowplow_tracker calls logging.basicConfig() and sets its emitter's logger
        # to INFO: a line on stderr per request. Its exported `logger` is turned down to
        # WARNING, and the root handler it added is taken away (it is this process's logging).
        root = logging.getLogger()
        handlers = list(root.handlers)
        from snowplow_tracker.emitters import AsyncEmitter, logger
        from snowplow_tracker.events.self_describing import SelfDescribing
        from snowplow_tracker.self_describing_json import SelfDescribingJson
        from snowplow_tracker.subject import Subject
        from snowplow_tracker.tracker import Tracker

        for handler in list(root.handlers):
            if handler not in handlers:
                root.removeHandler(handler)
        logger.setLevel(logging.WARNING)

        self.emitter = AsyncEmitter(
            url, buffer_capacity=events + 1, on_failure=self._failed, request_timeout=10
        )
        self.tracker = Tracker("bench", self.emitter, app_id="bench")
        self._event = SelfDescribing
        self._json = SelfDescribingJson
        self._subject = Subject

    def _failed(self, sent: int, unsent: list[Any]) -> None:
        self.failures += len(unsent)

    def track(self, call: Call) -> None:
        name, version, properties, user_id, anonymous_id = call
        subject = self._subject().set_user_id(user_id or anonymous_id or "")
        schema = f"iglu:com.example/{name}/jsonschema/{version}-0-0"
        self.tracker.track(self._event(self._json(schema, properties), event_subject=subject))

    def flush(self) -> None:
        self.emitter.sync_flush()

    def close(self) -> None:
        pass  # no shutdown call: its threads are daemons, idle once flushed


SDKS: dict[str, type[Sdk]] = {
    "capture_sdk": Ours,
    "capture_sdk_batch100": OursBatch100,
    "segment": Segment,
    "posthog": PostHog,
    "snowplow": Snowplow,
}


def _bounded(fn: Callable[[], None], timeout_s: float) -> bool:
    """Run a blocking flush with a deadline (Segment's and Snowplow's have none)."""
    done = threading.Event()
    failed: list[Exception] = []

    def target() -> None:
        try:
            fn()
        except Exception as exc:  # noqa: BLE001  # re-raised below, on the caller's thread
            failed.append(exc)
        finally:
            done.set()

    threading.Thread(target=target, name="peers-flush", daemon=True).start()
    finished = done.wait(timeout_s)
    if failed:
        raise RuntimeError("flush failed") from failed[0]
    return finished


def measure(name: str, url: str, calls: list[Call], events: int) -> dict[str, Any]:
    """Track `events` with one SDK, timing every call, then flush; the sink counts."""
    route = SDKS[name].route
    sink_before = sink_counts(url)
    sdk = SDKS[name](url, events)
    samples = array("q")
    clock = time.perf_counter_ns
    track = sdk.track
    flushed = False
    try:
        cpu_before_s = time.process_time()
        started = time.perf_counter()
        for i in range(events):
            call = calls[i % len(calls)]
            before = clock()
            track(call)
            samples.append(clock() - before)
        tracked_s = time.perf_counter() - started
        flushed = _bounded(sdk.flush, FLUSH_TIMEOUT_S)
        elapsed_s = time.perf_counter() - started
        cpu_s = time.process_time() - cpu_before_s
    finally:
        _bounded(sdk.close, 30)
    sink_after = sink_counts(url)
    delivered, requests, body_bytes = (
        sink_after[key][route] - sink_before[key][route] for key in ("events", "requests", "bytes")
    )
    ordered = sorted(samples)
    return {
        "events": events,
        "flushed": flushed,
        "delivered": delivered,
        "delivered_all": delivered == events,
        "sdk_failures": sdk.failures,
        "track_median_us": round(percentile(ordered, 50) / 1000, 3),
        "track_mean_us": round(sum(ordered) / len(ordered) / 1000, 3),
        "track_p99_us": round(percentile(ordered, 99) / 1000, 3),
        "track_phase_s": round(tracked_s, 3),
        "elapsed_s": round(elapsed_s, 3),
        "delivered_eps": round(delivered / elapsed_s, 1),
        "client_cpu_s": round(cpu_s, 3),
        "client_cpu_us_per_event": round(cpu_s / events * 1e6, 3),
        "requests": requests,
        "body_bytes_per_event": round(body_bytes / max(1, delivered), 1),
        "notes": NOTES[name],
    }


def _ratio(ours: float, peer: float) -> float | None:
    return round(ours / peer, 3) if peer else None


def run(
    *, events: int, work_dir: Path, sdks: tuple[str, ...] = tuple(SDKS), seed: int = 11
) -> dict[str, Any]:
    """Every SDK in `sdks`, one after the other, in this process, against one sink.

    `ratios_ours_over_peer[peer]` (and `ratios_ours_batch100_over_peer`, ours at the peers'
    batch size): ours over the peer's. For track() times, below 1 means ours costs its
    caller less; for delivered_eps, above 1 means ours delivers faster.
    """
    calls = _calls(1_000, seed=seed)
    port = free_port()
    log_path = work_dir / "peers-sink.log"
    argv = [sys.executable, "-m", "benchmarks.peers", "--port", str(port)]
    results: dict[str, Any] = {}
    with procs.running(argv, log_path=log_path) as sink:
        url = f"http://127.0.0.1:{port}"
        procs.wait_http_ok(url + "/healthz", sink, timeout_s=READY_TIMEOUT_S, log_path=log_path)
        for name in sdks:
            sink_before_s = sample_tree(sink.pid).cpu_s
            results[name] = measure(name, url, calls, events)
            results[name]["sink_cpu_s"] = round(sample_tree(sink.pid).cpu_s - sink_before_s, 3)
    out: dict[str, Any] = {"events": events, "sdks": results}
    for ours_name, key in (
        ("capture_sdk", "ratios_ours_over_peer"),
        ("capture_sdk_batch100", "ratios_ours_batch100_over_peer"),
    ):
        if ours_name in results:
            out[key] = _ratios(results[ours_name], results)
    return out


RATIO_KEYS = ("track_median_us", "track_mean_us", "track_p99_us", "delivered_eps")


def _ratios(ours: dict[str, Any], results: dict[str, Any]) -> dict[str, dict[str, float | None]]:
    return {
        name: {key: _ratio(ours[key], peer[key]) for key in RATIO_KEYS}
        for name, peer in results.items()
        if not name.startswith("capture_sdk")
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="the peers' stand-in sink: count and accept")
    parser.add_argument("--port", type=int, required=True)
    serve_sink(parser.parse_args().port)
