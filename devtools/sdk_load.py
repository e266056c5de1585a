"""Dev tool: the SDK as a load driver, in a process of its own that tests may SIGKILL.

It runs `capture_sdk.Client` with the disk spool on, tracks paced events and appends every
event id `track()` returned, and every drop `on_error` reported, to a ledger file (one line
each, written to the kernel at once, so a SIGKILL keeps them). On SIGTERM it shuts the client
down and writes the SDK's own counts beside the ledger. It records; it never judges (that is
devtools/oracle.py's job) and never retries on its own: retrying is the SDK's.

    python -m devtools.sdk_load --endpoint URL --spool-dir DIR --ledger FILE [--rate-eps 50]
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import msgspec

from capture_sdk import Client, DroppedEvent, RetryPolicy
from capture_sdk._spool import SEGMENT_SUFFIX, read_records

STATS_SUFFIX = ".stats.json"
# shutdown() settles every event within this; what it could not deliver stays spooled.
SHUTDOWN_TIMEOUT_S = 60.0
READY_LINE = "ready"


class _Head(msgspec.Struct):
    event_id: str


_head = msgspec.json.Decoder(_Head)


class LedgerFile:
    """Append-only lines `A <event_id>` (accepted by track()) and `D <reason> <event_id>`
    (dropped), from the caller's thread and the SDK's worker thread alike."""

    def __init__(self, path: Path) -> None:
        # unbuffered: each line is one write() to the kernel, which outlives a SIGKILL
        self._file = path.open("ab", buffering=0)
        self._lock = threading.Lock()

    def accepted(self, event_id: str) -> None:
        self._write(f"A {event_id}\n")

    def dropped(self, events: Sequence[DroppedEvent]) -> None:
        self._write("".join(f"D {e.reason} {e.event_id}\n" for e in events))

    def _write(self, text: str) -> None:
        with self._lock:
            self._file.write(text.encode())

    def close(self) -> None:
        self._file.close()


def spooled_ids(spool_dir: Path) -> set[str]:
    """Event ids whose records are on disk in `spool_dir` (intact ones; a torn record's id is
    unknown by definition, and the SDK counts it as `spool_corrupt`)."""
    ids: set[str] = set()
    for path in spool_dir.glob("*" + SEGMENT_SUFFIX):
        payloads, _ = read_records(path.read_bytes())
        for payload in payloads:
            try:
                ids.add(_head.decode(payload).event_id)
            except msgspec.DecodeError:
                continue
    return ids


@dataclass
class SdkLedger:
    """What the SDK driver(s) of one scenario accepted, dropped and left on disk."""

    accepted: set[str] = field(default_factory=set)  # returned by track(), or found spooled
    dropped: dict[str, str] = field(default_factory=dict)  # event id -> reason
    spooled_at_end: set[str] = field(default_factory=set)  # still on disk after the last stop
    stats: list[dict[str, object]] = field(default_factory=list)  # one per process that ended
    kills: int = 0

    def read(self, path: Path) -> None:
        lines = path.read_bytes().split(b"\n")
        # after the last newline: nothing, or a line torn by a SIGKILL mid-write (its event,
        # if track() had accepted it, is on disk and found by `spooled_ids` at the restart)
        lines.pop()
        for line in lines:
            parts = line.decode().split()
            if len(parts) == 2 and parts[0] == "A":
                self.accepted.add(parts[1])
            elif len(parts) == 3 and parts[0] == "D":
                self.dropped[parts[2]] = parts[1]

    def dropped_by_reason(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for reason in self.dropped.values():
            counts[reason] = counts.get(reason, 0) + 1
        return counts


class SdkDriver:
    """One `python -m devtools.sdk_load` process at a time on one spool dir and ledger file:
    `kill()` (SIGKILL) and `start()` again resume on the same spool, which the new client drains."""

    def __init__(self, endpoint: str, work_dir: Path, *, rate_eps: float, max_retry_s: float):
        self.endpoint = endpoint
        self.spool_dir = work_dir / "sdk-spool"
        self.ledger_path = work_dir / "sdk-ledger.txt"
        self.log_path = work_dir / "sdk-driver.log"
        self.rate_eps = rate_eps
        self.max_retry_s = max_retry_s
        self.ledger = SdkLedger()
        self.process: subprocess.Popen[bytes] | None = None
        self.runs = 0

    def start(self) -> None:
        # what an earlier process left on disk was accepted by its track(): a SIGKILL between
        # the spool write and the ledger line must not make such an event look never sent
        if self.spool_dir.exists():
            self.ledger.accepted |= spooled_ids(self.spool_dir)
        if self.ledger_path.exists() and not self.ledger_path.read_bytes().endswith(b"\n"):
            # end the line a SIGKILL tore, so the next process's first line stays whole
            with self.ledger_path.open("ab") as ledger:
                ledger.write(b"\n")
        self.runs += 1
        command = [
            sys.executable,
            "-m",
            "devtools.sdk_load",
            f"--endpoint={self.endpoint}",
            f"--spool-dir={self.spool_dir}",
            f"--ledger={self.ledger_path}",
            f"--rate-eps={self.rate_eps}",
            f"--max-retry-s={self.max_retry_s}",
            f"--tag=r{self.runs}",
        ]
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log)
        assert self.process.stdout is not None
        line = self.process.stdout.readline().decode().strip()
        self.process.stdout.close()  # the driver prints nothing after its ready line
        assert line == READY_LINE, f"the SDK driver did not start: {line!r} (see {self.log_path})"

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait()
        self.ledger.kills += 1

    def stop(self) -> None:
        """SIGTERM: the driver stops tracking, shuts its client down (bounded) and exits."""
        assert self.process is not None
        self.process.terminate()
        code = self.process.wait(SHUTDOWN_TIMEOUT_S + 30)
        assert code == 0, f"the SDK driver exited {code} (see {self.log_path})"
        stats_path = self.ledger_path.with_suffix(STATS_SUFFIX)
        self.ledger.stats.append(msgspec.json.decode(stats_path.read_bytes()))

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def finish(self) -> SdkLedger:
        """After the last `stop()`: the ledger file read whole, and what is still spooled."""
        self.ledger.read(self.ledger_path)
        self.ledger.spooled_at_end = spooled_ids(self.spool_dir)
        return self.ledger

    def tracked(self) -> int:
        """Events accepted so far by every run (a cheap progress measure while one runs)."""
        if not self.ledger_path.exists():
            return 0
        return self.ledger_path.read_bytes().count(b"A ")


def _run(args: argparse.Namespace) -> int:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    ledger = LedgerFile(Path(args.ledger))
    client = Client(
        args.endpoint,
        spool_dir=args.spool_dir,
        on_error=ledger.dropped,
        flush_interval_s=0.2,
        batch_size=50,
        # a long outage must not make the client give up on a batch (it would stay spooled,
        # not delivered, until the next start)
        retry=RetryPolicy(backoff_cap_s=2.0, max_retry_time_s=args.max_retry_s),
    )
    print(READY_LINE, flush=True)
    interval_s = 1.0 / args.rate_eps
    n = 0
    next_at = time.monotonic()
    while not stop.is_set():
        event_id = client.track(
            "track_played",
            {"track_id": f"sdk-{args.tag}-{n}", "artist_id": "a-1", "position_ms": n},
            version=1,
            user_id=f"sdk-u-{n % 97}",  # spread over partitions by key
        )
        ledger.accepted(event_id)
        n += 1
        next_at += interval_s
        stop.wait(max(0.0, next_at - time.monotonic()))
    client.shutdown(SHUTDOWN_TIMEOUT_S)
    stats = msgspec.structs.asdict(client.stats())
    ledger.close()
    Path(args.ledger).with_suffix(STATS_SUFFIX).write_bytes(msgspec.json.encode(stats))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.sdk_load", description=__doc__)
    parser.add_argument("--endpoint", required=True, help="the collector's base URL")
    parser.add_argument("--spool-dir", required=True)
    parser.add_argument("--ledger", required=True, help="file the accepted ids are appended to")
    parser.add_argument("--rate-eps", type=float, default=50.0, help="events per second")
    parser.add_argument("--max-retry-s", type=float, default=600.0, help="per batch")
    parser.add_argument("--tag", default="r1", help="marks this process's events")
    args = parser.parse_args(argv)
    os.makedirs(args.spool_dir, exist_ok=True)
    return _run(args)


if __name__ == "__main__":
    sys.exit(main())
