"""The durable disk spool: append-only segment files of encoded events, one CRC per record.

Durability contract ("accepted by track()"): with `spool_dir` set, `track()` returns only
after the event's record was handed to the kernel with a plain `write()` on the caller's
thread. The page cache outlives the process, so an accepted event survives SIGKILL (or any
crash of the process). It survives a machine crash or power loss only once the worker's
background `fsync` ran: at most about one `flush_interval_s`, or one batch, after `track()`
(like Postgres' `synchronous_commit=off` or Kafka's default flush). An fsync per event would
cost milliseconds on the caller's thread.

Record format: `<crc32 as 8 hex digits> <event JSON>\\n`. msgspec never writes a raw newline
inside JSON, so a reader resynchronises on the next newline after a torn or corrupt record:
such a record is skipped and counted (`spool_corrupt`), never fatal.

A segment is deleted once every record in it was settled (acknowledged with a 200, or
dropped for good: rejected, refused, invalid). Records the client gives up on (retries
exhausted, shutdown) stay on disk and are counted `spooled`, not dropped: the next start
replays them, so duplicates are possible (removable by `event_id`). The spool is bounded
in bytes: new events beyond `max_bytes` are refused (`spool_full`). A write that fails or
is short is cut back to the last whole record (so it cannot swallow the next one), and its
event stays queued in memory only (`spool_errors`). A lock file (`flock`) keeps two live
processes off one directory. This module does no networking and never raises out of `append`.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import threading
import zlib
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import msgspec

from capture_sdk._errors import ConfigurationError
from capture_sdk._events import QueuedEvent

log = logging.getLogger("capture_sdk")

SEGMENT_SUFFIX = ".seg"
LOCK_NAME = "spool.lock"
# A segment is closed (and can then be deleted as a whole) once it reaches this size.
DEFAULT_SEGMENT_BYTES = 4 * 1024 * 1024
_CRC_HEX_BYTES = 8

# What `append` did with an event: written and queued; queued in memory only (the write
# failed); refused by the memory queue (nothing written); or refused because the spool is full.
AppendResult = Literal["queued", "unspooled", "refused", "full"]


class _Head(msgspec.Struct):
    """The fields of a spooled event that reports need; the rest stays encoded."""

    event: str
    version: int
    event_id: str


_head_decoder = msgspec.json.Decoder(_Head)


@dataclass(slots=True)
class _Segment:
    seq: int
    path: Path
    fd: int | None  # open for appending while active, or until its first fsync
    size_bytes: int = 0
    written: int = 0  # records accounted to this segment
    settled: int = 0  # of those, delivered or dropped for good


def encode_record(payload: bytes) -> bytes:
    return b"%08x " % zlib.crc32(payload) + payload + b"\n"


def read_records(data: bytes) -> tuple[list[bytes], int]:
    """The intact payloads in a segment's bytes, and how many records were torn or corrupt."""
    payloads: list[bytes] = []
    corrupt = 0
    lines = data.split(b"\n")
    tail = lines.pop()  # after the last newline: empty, or a torn last record
    if tail:
        corrupt += 1
    for line in lines:
        crc_hex, payload = line[:_CRC_HEX_BYTES], line[_CRC_HEX_BYTES + 1 :]
        try:
            intact = line[_CRC_HEX_BYTES : _CRC_HEX_BYTES + 1] == b" " and int(
                crc_hex, 16
            ) == zlib.crc32(payload)
        except ValueError:
            intact = False
        if intact:
            payloads.append(payload)
        else:
            corrupt += 1
    return payloads, corrupt


class Spool:
    """One process's spool directory. Thread-safe; `append` runs on callers' threads."""

    def __init__(
        self, directory: str | os.PathLike[str], *, max_bytes: int, segment_bytes: int
    ) -> None:
        self.directory = Path(directory)
        self._max_bytes = max_bytes
        self._segment_bytes = segment_bytes
        self._lock = threading.Lock()
        self._segments: dict[int, _Segment] = {}
        self._active: _Segment | None = None
        self._next_seq = 0
        self._total_bytes = 0
        self._unsynced: list[_Segment] = []  # closed segments whose fd awaits fsync + close
        self._dirty = False
        self._failing = False  # the last write failed (warn once per run of failures)
        self._lock_fd: int | None = None

    # --- start and stop ----------------------------------------------------------------------

    def open(self) -> tuple[list[QueuedEvent], int]:
        """Lock the directory, then read what a previous process left: (replay, corrupt)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        lock_fd = os.open(self.directory / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(lock_fd)
            raise ConfigurationError(
                f"spool_dir {str(self.directory)!r} is in use by another live process; "
                "give each process its own spool_dir"
            ) from None
        self._lock_fd = lock_fd
        replay: list[QueuedEvent] = []
        corrupt_total = 0
        for path in sorted(self.directory.glob("*" + SEGMENT_SUFFIX)):
            try:
                seq = int(path.stem)
            except ValueError:
                continue  # not ours
            self._next_seq = max(self._next_seq, seq + 1)
            payloads, corrupt = read_records(path.read_bytes())
            events = [e for e in (self._revive(p, seq) for p in payloads) if e is not None]
            corrupt_total += corrupt + len(payloads) - len(events)
            if not events:
                path.unlink()
                continue
            segment = _Segment(seq, path, None, path.stat().st_size, written=len(events))
            self._segments[seq] = segment
            self._total_bytes += segment.size_bytes
            replay.extend(events)
        if corrupt_total:
            log.warning("capture_sdk spool: skipped %d corrupt or torn record(s)", corrupt_total)
        return replay, corrupt_total

    @staticmethod
    def _revive(payload: bytes, seq: int) -> QueuedEvent | None:
        try:
            head = _head_decoder.decode(payload)
        except msgspec.DecodeError:
            return None  # CRC matched but not an event (written by something else): skip
        return QueuedEvent(
            head.event, head.version, head.event_id, 0, None, None, None, None, payload, seq
        )

    def close(self) -> None:
        """fsync and close every file; unsettled records stay for the next start."""
        self.sync()
        with self._lock:
            if self._active is not None and self._active.fd is not None:
                _fsync_close(self._active.fd)
                self._active.fd = None
            self._active = None
            if self._lock_fd is not None:
                os.close(self._lock_fd)  # releases the flock
                self._lock_fd = None

    def abandon_after_fork(self) -> None:
        """In a forked child: close inherited descriptors; the parent keeps the spool."""
        for segment in [self._active, *self._unsynced]:
            if segment is not None and segment.fd is not None:
                with contextlib.suppress(OSError):
                    os.close(segment.fd)
        if self._lock_fd is not None:
            # flock belongs to the open file description the parent still holds open, so
            # closing the child's copy does not unlock the parent's directory.
            with contextlib.suppress(OSError):
                os.close(self._lock_fd)
        self._lock = threading.Lock()

    # --- the caller's side -------------------------------------------------------------------

    def append(self, payload: bytes, enqueue: Callable[[int], bool]) -> AppendResult:
        """Write one record, then queue its event with `enqueue(segment)` (False: the memory
        queue refused it). Never raises: a failed write queues the event with no segment.

        Both run under the spool lock, so the record is counted in its segment before the
        worker can settle it, and a record is on disk only for an event that was queued.
        """
        record = encode_record(payload)
        with self._lock:
            if self._total_bytes + len(record) > self._max_bytes:
                return "full"
            segment = self._writable()
            if segment is None or not self._write(segment, record):
                # disk full, directory or file gone: the event is still sent from memory
                return "unspooled" if enqueue(-1) else "refused"
            if not enqueue(segment.seq):
                self._cut_back(segment)  # no record for an event the queue refused
                return "refused"
            self._failing = False
            segment.written += 1
            segment.size_bytes += len(record)
            self._total_bytes += len(record)
            self._dirty = True
            if segment.size_bytes >= self._segment_bytes:
                self._active = None
                self._unsynced.append(segment)
            return "queued"

    def _writable(self) -> _Segment | None:
        segment = self._active
        if segment is not None and segment.fd is not None:
            try:
                if os.fstat(segment.fd).st_nlink > 0:
                    return segment
            except OSError:
                pass
            # its file was deleted under us (the directory removed, say): records written
            # there would survive nothing, so stop using it
            self._retire(segment)
        try:
            return self._roll()
        except OSError as exc:
            self._warn(f"cannot create a spool segment: {exc!r}")
            return None

    def _write(self, segment: _Segment, record: bytes) -> bool:
        assert segment.fd is not None
        try:
            written = os.write(segment.fd, record)
        except OSError as exc:
            self._warn(f"spool write failed: {exc!r}")
            written = -1
        if written == len(record):
            return True
        if written >= 0:
            self._warn(f"spool write was short ({written} of {len(record)} bytes)")
        # a torn record would swallow the next one (the reader resyncs on a newline)
        self._cut_back(segment)
        return False

    def _cut_back(self, segment: _Segment) -> None:
        """Truncate the segment to its last whole record; if that fails, write no more there."""
        assert segment.fd is not None
        try:
            os.ftruncate(segment.fd, segment.size_bytes)
        except OSError as exc:
            self._warn(f"spool truncate failed, closing the segment: {exc!r}")
            self._retire(segment)

    def _retire(self, segment: _Segment) -> None:
        if segment is self._active:
            self._active = None
            self._unsynced.append(segment)  # fsynced and closed by the next sync()
            self._dirty = True

    def _warn(self, message: str) -> None:
        if not self._failing:  # once per run of failures, not once per event
            log.warning("capture_sdk %s; events stay queued in memory only", message)
        self._failing = True

    def _roll(self) -> _Segment:
        seq = self._next_seq
        path = self.directory / f"{seq:012d}{SEGMENT_SUFFIX}"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self._next_seq = seq + 1
        segment = _Segment(seq, path, fd)
        self._segments[seq] = segment
        self._active = segment
        return segment

    def keeps(self, seq: int) -> bool:
        """Is the record of an event in segment `seq` on disk, for the next start to replay?"""
        if seq < 0:
            return False
        with self._lock:
            segment = self._segments.get(seq)
        return segment is not None and segment.path.exists()

    # --- the worker's side -------------------------------------------------------------------

    def settle(self, events: Iterable[QueuedEvent]) -> None:
        """These events are delivered or dropped for good; delete segments left empty."""
        per_segment = Counter(e.segment for e in events if e.segment >= 0)
        with self._lock:
            for seq, count in per_segment.items():
                segment = self._segments.get(seq)
                if segment is None:
                    continue
                segment.settled += count
                if segment.settled >= segment.written:
                    self._delete(segment)

    def _delete(self, segment: _Segment) -> None:
        # Deleting the active segment too (rather than waiting for it to fill) keeps an idle
        # client's spool empty, so a restart replays nothing that was already delivered.
        if segment is self._active:
            self._active = None
        if segment in self._unsynced:
            self._unsynced.remove(segment)
        if segment.fd is not None:
            os.close(segment.fd)
            segment.fd = None
        with contextlib.suppress(FileNotFoundError):
            segment.path.unlink()
        del self._segments[segment.seq]
        self._total_bytes -= segment.size_bytes

    def sync(self) -> None:
        """fsync what was written since the last call (machine-crash durability)."""
        with self._lock:
            if not self._dirty:
                return
            self._dirty = False
            closing, self._unsynced = self._unsynced, []
            fds = [s.fd for s in closing if s.fd is not None]
            for segment in closing:
                segment.fd = None
            active = self._active
            # a duplicate descriptor, so fsync can run outside the lock even if the active
            # segment is closed or deleted meanwhile
            active_fd = os.dup(active.fd) if active is not None and active.fd is not None else None
        for fd in fds:
            _fsync_close(fd)
        if active_fd is not None:
            _fsync_close(active_fd)

    @property
    def needs_sync(self) -> bool:
        """Something was written since the last `sync()` (a hint: read without the lock)."""
        return self._dirty

    @property
    def total_bytes(self) -> int:
        return self._total_bytes


def _fsync_close(fd: int) -> None:
    try:
        os.fsync(fd)
    except OSError as exc:
        log.warning("capture_sdk spool fsync failed: %r", exc)
    finally:
        os.close(fd)
