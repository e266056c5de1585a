"""Dev tool: the accounting oracle, the one definition of "nothing lost" for every fault test.

It reads every topic of a scenario back from offset 0 (no group, past the fault proxies) and
holds it against the load drivers' ledgers: acknowledged ⊆ Kafka, accepted by the SDK ⊆ Kafka or
counted as dropped or still spooled, Kafka ⊆ sent, rejected events only in the dead-letter
topic, duplicates counted. It judges; it never retries or repairs.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from devtools.load import Ledger, Load
from devtools.sdk_load import SdkLedger

# Reading back stops here even if the end offsets were not reached (a broker still down).
READ_TIMEOUT_S = 60.0


@dataclass
class Contents:
    """Event id -> how many copies, per kind of topic."""

    events: dict[str, int] = field(default_factory=dict)
    dead_letters: dict[str, int] = field(default_factory=dict)
    records: int = 0
    no_id: int = 0  # records without an event_id header (none expected)


async def read_back(bootstrap_servers: str, topics: list[str], dead_letter_topic: str) -> Contents:
    """Every record of `topics` (those that exist), from offset 0 to the end offsets seen at
    the start of the read."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap_servers,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        request_timeout_ms=10_000,
    )
    partitions = await _partitions(bootstrap_servers, topics)
    await consumer.start()
    contents = Contents()
    try:
        if not partitions:
            return contents
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        remaining = {tp for tp, end in ends.items() if end > 0}
        try:
            async with asyncio.timeout(READ_TIMEOUT_S):
                while remaining:
                    batches = await consumer.getmany(*remaining, timeout_ms=500)
                    for tp, records in batches.items():
                        for record in records:
                            _count(contents, record, dead=tp.topic == dead_letter_topic)
                    for tp in list(remaining):
                        if await consumer.position(tp) >= ends[tp]:
                            remaining.discard(tp)
        except TimeoutError:
            raise RuntimeError(f"could not read {sorted(map(str, remaining))} to the end") from None
    finally:
        await consumer.stop()
    return contents


async def _partitions(bootstrap_servers: str, topics: list[str]) -> list[TopicPartition]:
    # the admin client, because a consumer without a subscription keeps no topic metadata
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, request_timeout_ms=10_000)
    await admin.start()
    try:
        described = await admin.describe_topics(topics)
    finally:
        await admin.close()
    return [
        TopicPartition(topic["topic"], part["partition"])
        for topic in described
        if topic["error_code"] == 0
        for part in topic["partitions"]
    ]


def _count(contents: Contents, record: Any, *, dead: bool) -> None:
    contents.records += 1
    headers = dict(record.headers or ())
    raw = headers.get("event_id")
    if raw is None:
        contents.no_id += 1
        return
    event_id = raw.decode()
    copies = contents.dead_letters if dead else contents.events
    copies[event_id] = copies.get(event_id, 0) + 1


def p99_s(latencies: list[float]) -> float | None:
    if not latencies:
        return None
    ordered = sorted(latencies)
    return ordered[min(len(ordered) - 1, math.ceil(0.99 * len(ordered)) - 1)]


@dataclass
class Verdict:
    """One row of the reliability table, and every breach of the contract found."""

    scenario: str
    load: str
    sent: int
    acknowledged: int
    rejected: int
    in_kafka: int  # distinct event ids in the event topics
    dead_letters: int
    duplicates: int  # extra copies, event and dead-letter topics together
    lost: int  # acknowledged, not in the event topics
    statuses: dict[str, int]
    p99_s: float | None
    recover_s: float | None
    problems: list[str]
    destroyed: int = 0  # acknowledged, then deleted with their topic by the scenario itself
    sdk: str = "-"  # the SDK driver's accounting, when one ran beside the raw driver

    @property
    def ok(self) -> bool:
        return not self.problems

    def mix(self) -> str:
        return " ".join(f"{k}:{v}" for k, v in sorted(self.statuses.items()))

    def row(self) -> str:
        p99 = "-" if self.p99_s is None else f"{self.p99_s * 1000:.0f} ms"
        recover = "-" if self.recover_s is None else f"{self.recover_s:.1f} s"
        cells = [
            self.scenario,
            self.load,
            str(self.sent),
            str(self.acknowledged),
            str(self.in_kafka),
            str(self.duplicates),
            f"**{self.lost}**" + (f" ({self.destroyed} deleted)" if self.destroyed else ""),
            self.mix(),
            p99,
            recover,
            self.sdk,
        ]
        return "| " + " | ".join(cells) + " |"


TABLE_HEADER = (
    "| scenario | load | sent | acknowledged | in Kafka | duplicates | lost | answers"
    " | p99 | recover | SDK: accepted / in Kafka / dropped / spooled |"
    "\n|---|---|---|---|---|---|---|---|---|---|---|"
)


def judge(
    scenario: str,
    ledger: Ledger,
    contents: Contents,
    *,
    load: Load,
    recover_s: float | None = None,
    destroyed_before: float | None = None,
    sdk: SdkLedger | None = None,
) -> Verdict:
    """Hold what Kafka holds against what the ledger says; every breach becomes a problem.

    `destroyed_before`: the scenario destroyed data on purpose (deleted a topic); events
    acknowledged for requests sent before that moment and now missing are counted as
    destroyed, not lost. Every later acknowledgement must still be in Kafka.

    `sdk`: what an SDK driver accepted beside the raw driver. Each accepted event must be in
    an event topic, counted as dropped with a reason, or still in the spool (reported: a
    drained spool holds nothing); one that is none of these is lost.
    """
    sent = ledger.sent | (sdk.accepted if sdk is not None else set())
    in_events, in_dead = set(contents.events), set(contents.dead_letters)
    missing = ledger.acknowledged - in_events
    destroyed = set()
    if destroyed_before is not None:
        destroyed = {e for e in missing if ledger.acknowledged_at[e] < destroyed_before}
    lost = missing - destroyed
    problems = []
    if lost:
        problems.append(f"{len(lost)} acknowledged events are not in Kafka, e.g. {min(lost)}")
    sdk_cell, sdk_lost = "-", set[str]()
    if sdk is not None:
        sdk_cell, sdk_lost, sdk_problems = _judge_sdk(sdk, in_events, in_dead)
        problems.extend(sdk_problems)
    unknown = (in_events | in_dead) - sent
    if unknown:
        problems.append(f"{len(unknown)} events in Kafka were never sent, e.g. {min(unknown)}")
    if contents.no_id:
        problems.append(f"{contents.no_id} records carry no event_id header")
    misplaced = ledger.rejected & in_events
    if misplaced:
        problems.append(f"{len(misplaced)} rejected events are in event topics")
    lost_dead = ledger.rejected - in_dead
    if lost_dead:
        problems.append(f"{len(lost_dead)} rejected events are not in the dead-letter topic")
    valid_dead = ledger.sent_valid & in_dead
    if valid_dead:
        problems.append(f"{len(valid_dead)} valid events are in the dead-letter topic")
    invalid_kept = ledger.sent_invalid & in_events
    if invalid_kept:
        problems.append(f"{len(invalid_kept)} invalid events are in event topics")
    problems.extend(f"contract broken by an answer: {b}" for b in ledger.bad[:5])
    duplicates = sum(n - 1 for n in contents.events.values()) + sum(
        n - 1 for n in contents.dead_letters.values()
    )
    answered = [a.finished_s - a.started_s for a in ledger.attempts if isinstance(a.status, int)]
    return Verdict(
        scenario=scenario,
        load=load.describe(),
        sent=len(sent),
        acknowledged=len(ledger.acknowledged),
        rejected=len(ledger.rejected),
        in_kafka=len(in_events),
        dead_letters=len(in_dead),
        duplicates=duplicates,
        lost=len(lost) + len(sdk_lost),
        destroyed=len(destroyed),
        statuses={str(k): v for k, v in ledger.statuses().items()},
        p99_s=p99_s(answered),
        recover_s=recover_s,
        problems=problems,
        sdk=sdk_cell,
    )


def _judge_sdk(
    sdk: SdkLedger, in_events: set[str], in_dead: set[str]
) -> tuple[str, set[str], list[str]]:
    """The SDK's rule: every event track() accepted is delivered or counted (the table cell,
    the lost ids, the problems)."""
    problems = []
    delivered = sdk.accepted & in_events
    lost = sdk.accepted - in_events - set(sdk.dropped) - sdk.spooled_at_end
    if lost:
        problems.append(
            f"{len(lost)} events accepted by the SDK are neither in Kafka nor counted as "
            f"dropped nor spooled, e.g. {min(lost)}"
        )
    dead = sdk.accepted & in_dead
    if dead:
        problems.append(f"{len(dead)} valid SDK events are in the dead-letter topic")
    # a dropped event may still have landed (its request was in flight): not a problem
    drops = sdk.dropped_by_reason()
    dropped = "/".join(f"{k}:{v}" for k, v in sorted(drops.items())) or "0"
    cell = f"{len(sdk.accepted)} / {len(delivered)} / {dropped} / {len(sdk.spooled_at_end)}"
    if sdk.kills:
        cell += f" ({sdk.kills} SIGKILLs)"
    return cell, lost, problems
