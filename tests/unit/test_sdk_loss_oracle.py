"""The SDK loss oracle (issue #12): every event track() accepted is sent, rejected, dropped
with a reason or still in the spool, exactly, at the end of every run; for both clients,
with and without the disk spool, under each fault, against a real local HTTP server.

    enqueued == sent + rejected + sum(dropped, less "rejected") + spooled

(`rejected` events are also counted in `dropped["rejected"]`, so that key is left out.) The
world must agree with the counters: the collector's acknowledgements, the `on_error`
reports and the records left on disk account for every event id track() returned.
"""

from __future__ import annotations

import errno
import gc
import gzip
import http.server
import os
import shutil
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import pytest

import capture_sdk._spool
from capture_sdk import ClientStats, DroppedEvent, RetryPolicy
from capture_sdk._spool import read_records
from devtools.ports import free_port
from tests import sdk_clients
from tests.sdk_clients import Kind, Sdk

make_sdk = sdk_clients.make_sdk
MakeSdk = Callable[..., Sdk]

# short retries: a batch nobody accepts is given up in well under a second
RETRY = RetryPolicy(
    backoff_base_s=0.02, backoff_cap_s=0.05, retry_after_cap_s=0.05, max_retry_time_s=0.3
)
# reasons track() gives before queueing; these runs send small valid events, so none occur
REFUSED_AT_TRACK = ("client_closed", "queue_full", "spool_full", "too_large", "unserializable")
GIVEN_UP = ("retries_exhausted", "shutdown", "internal_error")
REQUEST_TIMEOUT_S = 30.0  # a hung request outlives every shutdown() here


class FakeCollector:
    """A loopback HTTP collector that answers 200 (rejecting every event whose path is
    `/reject`), or 503, or holds requests without answering (a hung collector)."""

    def __init__(self) -> None:
        self.mode = "ok"  # ok | 503 | hang | hang_after_first
        self.accepted: list[str] = []  # event ids acknowledged with a 200, not rejected
        self.requests = 0
        self._lock = threading.Lock()
        self._release = threading.Event()
        collector = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet: the test reads the counters, not the access log."""

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                with collector._lock:
                    collector.requests += 1
                    number, mode = collector.requests, collector.mode
                if mode == "hang" or (mode == "hang_after_first" and number > 1):
                    collector._release.wait(60)
                    self.close_connection = True  # and never answer
                    return
                if mode == "503":
                    self._answer(503, {"error": "sink_unavailable", "detail": "down"})
                    return
                batch = msgspec.json.decode(body)["batch"]
                rejected = [
                    {"index": i, "event_id": e["event_id"], "reason": "invalid_properties"}
                    for i, e in enumerate(batch)
                    if e["properties"].get("path") == "/reject"
                ]
                bad = {r["index"] for r in rejected}
                with collector._lock:
                    collector.accepted.extend(
                        e["event_id"] for i, e in enumerate(batch) if i not in bad
                    )
                self._answer(200, {"accepted": len(batch) - len(bad), "rejected": rejected})

            def _answer(self, status: int, payload: object) -> None:
                data = msgspec.json.encode(payload)
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                if status == 503:
                    self.send_header("Retry-After", "0")
                self.end_headers()
                self.wfile.write(data)

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def release(self) -> None:
        """Let the held requests go (unanswered), and hold later ones again."""
        self._release.set()
        self._release = threading.Event()

    def close(self) -> None:
        self._release.set()
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def collector() -> Iterator[FakeCollector]:
    server = FakeCollector()
    yield server
    server.close()


@dataclass
class Run:
    """One run's tracked ids, `on_error` reports and client, for `check_ledger`."""

    ids: list[str] = field(default_factory=list)
    reports: list[DroppedEvent] = field(default_factory=list)


def spooled_ids(spool_dir: Path | None) -> tuple[set[str], int]:
    """The event ids in intact records on disk, and how many records are torn or corrupt."""
    if spool_dir is None or not spool_dir.exists():
        return set(), 0
    ids: set[str] = set()
    corrupt = 0
    for segment in spool_dir.glob("*.seg"):
        payloads, damaged = read_records(segment.read_bytes())
        ids.update(msgspec.json.decode(p)["event_id"] for p in payloads)
        corrupt += damaged
    return ids, corrupt


def check_ledger(
    stats: ClientStats,
    ids: list[str],
    reports: list[tuple[str, str]],
    accepted: list[str],
    spool_dir: Path | None,
) -> None:
    """The oracle: exact counts, and the world (collector, reports, disk) agreeing."""
    assert stats.queue_depth == 0
    assert (stats.replayed, stats.dropped["spool_corrupt"]) == (0, 0)
    assert {r: stats.dropped[r] for r in REFUSED_AT_TRACK} == dict.fromkeys(REFUSED_AT_TRACK, 0)
    assert stats.enqueued == len(ids) == len(set(ids))
    spooled = getattr(stats, "spooled", 0)
    dropped = sum(n for reason, n in stats.dropped.items() if reason != "rejected")
    assert stats.enqueued == stats.sent + stats.rejected + dropped + spooled, stats

    on_disk, corrupt = spooled_ids(spool_dir)
    assert corrupt == 0  # no torn record that would swallow its neighbour
    reported = {event_id for event_id, _ in reports}
    acked = set(accepted) & set(ids)
    assert len(reports) == sum(stats.dropped.values())  # every drop reached on_error
    assert stats.sent <= len(acked)
    assert set(ids) <= acked | reported | on_disk  # nothing gone without a trace
    given_up = {event_id for event_id, reason in reports if reason in GIVEN_UP}
    assert not given_up & on_disk  # a dropped event is not replayed by the next start
    assert spooled == len(on_disk - acked - reported)


def pages(sdk: Sdk, count: int, prefix: str = "p") -> list[str]:
    """Small valid events; every seventh is one the collector rejects."""
    return [
        sdk.track(
            "page_viewed", {"path": "/reject" if i % 7 == 3 else f"/{prefix}/{i}"}, anonymous_id="a"
        )
        for i in range(count)
    ]


def wait_until(predicate: Callable[[], bool], timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():  # the state lives on other threads
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.01)


def bounded_shutdown(sdk: Sdk) -> None:
    """shutdown(1 s) with a request hung: bounded by its own timeout, not the request's
    (REQUEST_TIMEOUT_S); a bound, not a speed check."""
    started = time.monotonic()
    assert sdk.shutdown(1.0) is False
    assert time.monotonic() - started < REQUEST_TIMEOUT_S / 2


# Counters a fault expects, checked after the ledger (so that the ledger speaks first).
EXPECTED: dict[Sdk, dict[str, int]] = {}

# --- the faults -------------------------------------------------------------------------------
# Each drives one client through one fault and returns the ids it tracked; the client is
# shut down when it returns.


def no_fault(sdk: Sdk, collector: FakeCollector, spool_dir: Path | None) -> list[str]:
    ids = pages(sdk, 30)
    assert sdk.shutdown(10)
    return ids


def hung_collector(sdk: Sdk, collector: FakeCollector, spool_dir: Path | None) -> list[str]:
    collector.mode = "hang"
    ids = pages(sdk, 30)  # batches of 10: one held, the others queued behind it
    wait_until(lambda: collector.requests >= 1)
    bounded_shutdown(sdk)
    # interrupted by shutdown, not out of retries: each one `shutdown`, or kept on disk
    EXPECTED[sdk] = {"spooled": 30} if spool_dir else {"shutdown": 30}
    return ids


def unavailable(mode: str) -> Callable[[Sdk, FakeCollector, Path | None], list[str]]:
    def run(sdk: Sdk, collector: FakeCollector, spool_dir: Path | None) -> list[str]:
        collector.mode = mode
        ids = pages(sdk, 30)
        assert sdk.flush(20)  # every batch given up after RETRY's 0.3 s
        assert sdk.shutdown(5)
        return ids

    return run


def shutdown_mid_batch(sdk: Sdk, collector: FakeCollector, spool_dir: Path | None) -> list[str]:
    # one batch of 100 cut into many requests by bytes: the first is answered, the second
    # hangs, and shutdown comes while the rest wait their turn
    collector.mode = "hang_after_first"
    ids = pages(sdk, 100)
    wait_until(lambda: collector.requests >= 2)
    bounded_shutdown(sdk)
    assert 0 < len(collector.accepted) < 90
    return ids


def loop_closed(sdk: Sdk, collector: FakeCollector, spool_dir: Path | None) -> list[str]:
    ids = pages(sdk, 1)
    assert sdk.flush(10)
    collector.mode = "hang"
    ids += pages(sdk, 10)  # a full batch: the sender takes it and its request hangs
    wait_until(lambda: collector.requests >= 2)
    closed = sdk.abandon_loop()
    collector.release()
    collector.mode = "ok"
    assert sdk.shutdown(10)  # on a new loop
    del closed
    gc.collect()  # the abandoned task goes now, inside this test
    return ids


def spool_dir_removed(sdk: Sdk, collector: FakeCollector, spool_dir: Path | None) -> list[str]:
    assert spool_dir is not None
    ids = pages(sdk, 10)
    assert sdk.flush(10)  # delivered: the segment is deleted, the next track() opens one
    shutil.rmtree(spool_dir)
    ids += pages(sdk, 10, "gone")  # raised FileNotFoundError out of track() before #12
    collector.mode = "503"
    ids += pages(sdk, 10, "down")  # memory only: given up, so dropped (not on disk)
    assert sdk.flush(20)
    collector.mode = "ok"
    ids += pages(sdk, 10, "back")
    assert sdk.shutdown(10)
    EXPECTED[sdk] = {"spool_errors": 30, "spooled": 0}
    return ids


def disk_write_failing(
    sdk: Sdk, collector: FakeCollector, spool_dir: Path | None, monkeypatch: pytest.MonkeyPatch
) -> list[str]:
    real_write = os.write
    calls = 0

    def flaky_write(fd: int, data: bytes | memoryview) -> int:
        nonlocal calls
        calls += 1
        if calls in (3, 9):  # a short write: half a record reaches the file
            return real_write(fd, bytes(data)[: len(data) // 2])
        if calls in (5, 6):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    class FlakyOs:
        """The os module as the spool sees it, with a disk that fails now and then."""

        write = staticmethod(flaky_write)

        def __getattr__(self, name: str) -> Any:
            return getattr(os, name)

    monkeypatch.setattr(capture_sdk._spool, "os", FlakyOs())
    collector.mode = "503"
    ids = pages(sdk, 30)
    assert sdk.flush(20)
    assert sdk.shutdown(5)
    # four writes failed: those events were in memory only, so given up means lost; the
    # rest is on disk for the next start
    EXPECTED[sdk] = {"spool_errors": 4, "retries_exhausted": 4, "spooled": 26}
    return ids


FORK_SCRIPT = textwrap.dedent(
    """
    import asyncio, os, sys
    import msgspec
    from capture_sdk import AsyncClient, Client, RetryPolicy

    kind, endpoint, spool_dir, out = sys.argv[1:5]
    reports = []
    options = dict(
        batch_size=10,
        flush_interval_s=0.05,
        retry=RetryPolicy(backoff_base_s=0.02, backoff_cap_s=0.05, max_retry_time_s=0.3),
        on_error=reports.extend,
        spool_dir=spool_dir or None,
    )

    def track(client, prefix, count):
        return [
            client.track(
                "page_viewed",
                {"path": "/reject" if i % 7 == 3 else f"/{prefix}/{i}"},
                anonymous_id="a",
            )
            for i in range(count)
        ]

    def write(name, client, ids):
        data = {
            "stats": client.stats(),
            "ids": ids,
            "reports": [(d.event_id, d.reason) for d in reports],
        }
        with open(os.path.join(out, name), "wb") as f:
            f.write(msgspec.json.encode(data))

    if kind == "thread":
        client = Client(endpoint, **options)
        ids = track(client, "before", 20)  # some still queued at the fork: the parent's
        pid = os.fork()
        if pid == 0:
            reports.clear()
            child_ids = track(client, "child", 10)
            client.shutdown(10)
            write("child.json", client, child_ids)
            os._exit(0)
        ids += track(client, "after", 10)
        client.shutdown(10)
    else:
        client = AsyncClient(endpoint, **options)
        loop = asyncio.new_event_loop()

        async def before():
            return track(client, "before", 20)

        ids = loop.run_until_complete(before())
        pid = os.fork()
        if pid == 0:
            reports.clear()

            async def child():
                child_ids = track(client, "child", 10)
                await client.shutdown(10)
                return child_ids

            write("child.json", client, asyncio.run(child()))
            os._exit(0)

        async def after():
            more = track(client, "after", 10)
            await client.shutdown(10)
            return more

        ids += loop.run_until_complete(after())
        loop.close()
    _, status = os.waitpid(pid, 0)
    write("parent.json", client, ids)
    sys.exit(os.waitstatus_to_exitcode(status))
    """
)


class Case(msgspec.Struct, frozen=True):
    fault: str
    kind: Kind
    spool: bool


FAULTS: dict[str, Callable[..., list[str]]] = {
    "none": no_fault,
    "hung-collector": hung_collector,
    "collector-down": unavailable("down"),
    "5xx": unavailable("503"),
    "shutdown-mid-batch": shutdown_mid_batch,
    "loop-closed": loop_closed,
    "spool-dir-removed": spool_dir_removed,
    "disk-write-failing": disk_write_failing,
}


def cases() -> list[Any]:
    params = []
    for fault in [*FAULTS, "fork"]:
        for kind in sdk_clients.KINDS:
            for spool in (False, True):
                if fault == "loop-closed" and kind == "thread":
                    continue  # a thread Client has no loop
                if fault in ("spool-dir-removed", "disk-write-failing") and not spool:
                    continue
                marks = []
                if fault == "loop-closed":
                    # the aiohttp session and the task left on the closed loop warn when
                    # collected; that is what this fault is
                    marks = [
                        pytest.mark.filterwarnings("ignore::ResourceWarning"),
                        pytest.mark.filterwarnings(
                            "ignore::pytest.PytestUnraisableExceptionWarning"
                        ),
                    ]
                name = f"{fault}-{kind}-{'spool' if spool else 'memory'}"
                params.append(pytest.param(Case(fault, kind, spool), id=name, marks=marks))
    return params


@pytest.mark.parametrize("case", cases())
def test_every_accepted_event_is_accounted_for(
    case: Case,
    collector: FakeCollector,
    make_sdk: MakeSdk,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    spool_dir = tmp_path / "spool" if case.spool else None
    if case.fault == "fork":
        run_forked(case, collector, spool_dir, tmp_path)
        return
    reports: list[DroppedEvent] = []
    endpoint = f"http://127.0.0.1:{free_port()}" if case.fault == "collector-down" else None
    sdk = make_sdk(
        case.kind,
        endpoint=endpoint or collector.url,
        batch_size=100 if case.fault == "shutdown-mid-batch" else 10,
        max_batch_bytes=1_000,  # a few events per request
        flush_interval_s=60 if case.fault == "shutdown-mid-batch" else 0.05,
        retry=RETRY,
        request_timeout_s=REQUEST_TIMEOUT_S,
        spool_dir=spool_dir,
        on_error=reports.extend,
    )
    fault = FAULTS[case.fault]
    if case.fault == "disk-write-failing":
        ids = fault(sdk, collector, spool_dir, monkeypatch)
    else:
        ids = fault(sdk, collector, spool_dir)
    check_ledger(
        sdk.stats(),
        ids,
        [(d.event_id, d.reason) for d in reports],
        list(collector.accepted),
        spool_dir,
    )
    stats = sdk.stats()
    for name, count in EXPECTED.pop(sdk, {}).items():
        value = stats.dropped[name] if name in stats.dropped else getattr(stats, name, None)
        assert value == count, name


def run_forked(case: Case, collector: FakeCollector, spool_dir: Path | None, out: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", FORK_SCRIPT, case.kind, collector.url, str(spool_dir or ""), out],
        timeout=120,
        check=False,
        capture_output=True,
    )
    assert result.returncode == 0, result.stderr.decode()
    for name, spool in (("parent.json", spool_dir), ("child.json", None)):  # child: no spool
        data = msgspec.json.decode((out / name).read_bytes(), type=dict[str, Any])
        stats = msgspec.convert(data["stats"], ClientStats)
        reports = [(event_id, reason) for event_id, reason in data["reports"]]
        check_ledger(stats, data["ids"], reports, list(collector.accepted), spool)
        assert stats.enqueued == (30 if name == "parent.json" else 10)
