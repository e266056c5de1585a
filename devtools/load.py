"""Dev tool: paced HTTP load for fault scenarios, with a ledger of every event and answer.

Each request carries fresh event ids (a few deliberately invalid); a refused or unanswered
batch is retried with the same ids, as the SDK does. The ledger only records what was sent and
what each answer said; judging it is the oracle's job (devtools/oracle.py). Every client loop
is bounded by a request count as well as by the caller's stop event.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import msgspec

# How long a request may go unanswered before the driver counts "no answer" and retries.
REQUEST_TIMEOUT_S = 20.0
# Attempts per batch (the first included) before the driver gives up on it, as an SDK would.
MAX_ATTEMPTS = 100
# Pause after a refused or failed request, so a collector refusing at once is not spun on.
REFUSED_PAUSE_S = 0.2
INVALID_POSITION_MS = -1  # track_played requires position_ms >= 0: a dead letter


@dataclass
class Attempt:
    started_s: float  # time.monotonic()
    finished_s: float
    status: int | str  # the HTTP status, "error" (refused, reset) or "no_answer"


@dataclass
class Ledger:
    """Everything the driver sent and was told. Event ids are keys; nothing is ever removed."""

    sent_valid: set[str] = field(default_factory=set)
    sent_invalid: set[str] = field(default_factory=set)
    acknowledged: set[str] = field(default_factory=set)  # 200, accepted
    # when the request that got each acknowledgement was sent (time.monotonic())
    acknowledged_at: dict[str, float] = field(default_factory=dict)
    rejected: set[str] = field(default_factory=set)  # 200, listed in `rejected`
    gave_up: set[str] = field(default_factory=set)  # MAX_ATTEMPTS refusals in a row
    attempts: list[Attempt] = field(default_factory=list)
    # answers that break the contract: a 5xx but 503, a 503 without Retry-After or reason,
    # a 200 whose counts do not add up
    bad: list[str] = field(default_factory=list)
    marks: dict[str, float] = field(default_factory=dict)

    def mark(self, name: str) -> None:
        """Note when a step of the scenario happened (`fault`, `heal`, ...)."""
        self.marks[name] = time.monotonic()

    @property
    def sent(self) -> set[str]:
        return self.sent_valid | self.sent_invalid

    def statuses(self) -> collections.Counter[int | str]:
        return collections.Counter(a.status for a in self.attempts)

    def acknowledged_since(self, name: str) -> int:
        """200s for requests started after mark `name`."""
        since = self.marks[name]
        return sum(1 for a in self.attempts if a.status == 200 and a.started_s >= since)

    def recover_s(self, name: str) -> float | None:
        """From mark `name` to the first 200 for a request started after it (None: never)."""
        since = self.marks.get(name)
        if since is None:
            return None
        answers = [a.finished_s for a in self.attempts if a.status == 200 and a.started_s >= since]
        return min(answers) - since if answers else None


def _event(event_id: str, user: int, *, valid: bool) -> dict[str, Any]:
    return {
        "event": "track_played",
        "version": 1,
        "event_id": event_id,
        "occurred_at": "2026-11-26T12:00:00.123Z",
        "user_id": f"u-{user}",  # spread over partitions by key
        "properties": {
            "track_id": "t-1",
            "artist_id": "a-1",
            "position_ms": 1200 if valid else INVALID_POSITION_MS,
        },
    }


@dataclass
class Load:
    """What to send: `rate_rps` requests per second in all (at most), `events` per request,
    one invalid event in every `invalid_every` requests (0: none)."""

    clients: int = 4
    rate_rps: float = 20.0
    events: int = 10
    invalid_every: int = 10
    max_requests: int = 5_000  # per client, retries included

    def describe(self) -> str:
        return f"{self.rate_rps:g} req/s x {self.events} ev, {self.clients} clients"


class _Client:
    def __init__(self, url: str, ledger: Ledger, load: Load, counter: itertools.count[int]):
        self.url = url
        self.ledger = ledger
        self.load = load
        self.counter = counter
        self.interval_s = load.clients / load.rate_rps

    def _new_batch(self) -> list[dict[str, Any]]:
        number = next(self.counter)
        batch = []
        for i in range(self.load.events):
            event_id = str(uuid.uuid4())
            valid = not (
                self.load.invalid_every and number % self.load.invalid_every == 0 and i == 0
            )
            (self.ledger.sent_valid if valid else self.ledger.sent_invalid).add(event_id)
            batch.append(_event(event_id, number * self.load.events + i, valid=valid))
        return batch

    async def run(self, session: aiohttp.ClientSession, stop: asyncio.Event) -> None:
        batch: list[dict[str, Any]] | None = None
        attempts = 0
        for _ in range(self.load.max_requests):
            if stop.is_set():
                return
            if batch is None:
                batch, attempts = self._new_batch(), 0
            started = time.monotonic()
            done = await self._post(session, batch, started)
            attempts += 1
            if done:
                batch = None
            elif attempts >= MAX_ATTEMPTS:
                self.ledger.gave_up.update(e["event_id"] for e in batch)
                batch = None
            pause = REFUSED_PAUSE_S if not done else 0.0
            wait = max(pause, started + self.interval_s - time.monotonic())
            if wait > 0:
                # a stop ends the wait at once
                try:
                    async with asyncio.timeout(wait):
                        await stop.wait()
                except TimeoutError:
                    pass

    async def _post(
        self, session: aiohttp.ClientSession, batch: list[dict[str, Any]], started: float
    ) -> bool:
        """One attempt; True when the batch got its final answer (a 200)."""
        body = msgspec.json.encode({"sent_at": "2026-11-26T12:00:01Z", "batch": batch})
        status: int | str
        answer: Any = None
        try:
            async with session.post(
                self.url, data=body, headers={"Content-Type": "application/json"}
            ) as response:
                status = response.status
                retry_after = response.headers.get("Retry-After")
                answer = await response.json(content_type=None)
        except TimeoutError:
            status = "no_answer"
        except (aiohttp.ClientError, ValueError):
            status = "error"  # refused, reset, or cut mid-answer: not acknowledged
        self.ledger.attempts.append(Attempt(started, time.monotonic(), status))
        if status == 200 and isinstance(answer, dict):
            return self._accepted(batch, answer, started)
        if status == 503:
            if retry_after is None or not isinstance(answer, dict) or "error" not in answer:
                self.ledger.bad.append(f"503 {retry_after=} {answer}")
        elif isinstance(status, int):
            self.ledger.bad.append(f"{status} {answer}")
        return False

    def _accepted(
        self, batch: list[dict[str, Any]], answer: dict[str, Any], started: float
    ) -> bool:
        rejected = {r.get("event_id") for r in answer.get("rejected", [])}
        if answer.get("accepted", -1) + len(rejected) != len(batch):
            self.ledger.bad.append(f"200 counts do not add up: {answer}")
        for event in batch:
            event_id = event["event_id"]
            if event_id in rejected:
                self.ledger.rejected.add(event_id)
            else:
                self.ledger.acknowledged.add(event_id)
                self.ledger.acknowledged_at[event_id] = started
        return True


async def drive(url: str, ledger: Ledger, stop: asyncio.Event, load: Load) -> None:
    """POST batches to `url` at `load`'s pace until `stop` is set; the caller reads `ledger`
    while it runs."""
    counter = itertools.count()
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        clients = [_Client(url, ledger, load, counter) for _ in range(load.clients)]
        await asyncio.gather(*(client.run(session, stop) for client in clients))


@dataclass
class Calibration:
    """The collector's measured maximum on this machine: unpaced clients for a while."""

    events_per_s: float  # acknowledged events per second, after the first WARMUP_S
    p99_s: float | None
    statuses: dict[str, int]
    load: Load

    def describe(self) -> str:
        p99 = "-" if self.p99_s is None else f"{self.p99_s * 1000:.0f} ms"
        return (
            f"{self.events_per_s:.0f} events/s acknowledged, unpaced ({self.load.clients} "
            f"clients x {self.load.events} events per request, p99 {p99})"
        )

    def paced(self, share: float, *, clients: int = 8, events: int = 10) -> Load:
        """A paced load at `share` of the maximum (one invalid event in ten requests)."""
        rate_rps = max(1.0, self.events_per_s * share / events)
        return Load(clients=clients, rate_rps=round(rate_rps, 1), events=events)


# Calibration ignores its first seconds (connections, the producer's first metadata).
CALIBRATION_WARMUP_S = 5.0


async def calibrate(url: str, *, duration_s: float = 20.0, clients: int = 8) -> Calibration:
    """Drive `url` unpaced (every client sends its next request as soon as the last is
    answered) for `duration_s`, and measure what got acknowledged."""
    load = Load(clients=clients, rate_rps=1e9, events=10, invalid_every=0, max_requests=10**9)
    ledger = Ledger()
    stop = asyncio.Event()
    task = asyncio.create_task(drive(url, ledger, stop, load))
    started = time.monotonic()
    await asyncio.sleep(duration_s)
    stop.set()
    await task
    since = started + CALIBRATION_WARMUP_S
    window = [a for a in ledger.attempts if a.started_s >= since]
    acked = sum(1 for a in window if a.status == 200) * load.events
    elapsed = max(a.finished_s for a in window) - since if window else 1.0
    answered = sorted(a.finished_s - a.started_s for a in window if isinstance(a.status, int))
    p99 = answered[min(len(answered) - 1, int(0.99 * len(answered)))] if answered else None
    statuses = collections.Counter(str(a.status) for a in window)
    return Calibration(acked / elapsed, p99, dict(statuses), load)
