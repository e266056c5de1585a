"""The accounting oracle (devtools/oracle.py) and the load driver's ledger (devtools/load.py):
each rule of "nothing lost" fires on the breach it names, and the ledger records what each
answer said (issue 14). The oracle's run against a collector that loses data is in
tests/integration/faults/test_oracle_catches_loss.py."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import msgspec
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from devtools.load import Attempt, Ledger, Load, drive
from devtools.oracle import Contents, Verdict, judge, p99_s

LOAD = Load()


def clean() -> tuple[Ledger, Contents]:
    """Three valid events acknowledged, one invalid one rejected, all where they belong."""
    ledger = Ledger(sent_valid={"a", "b", "c"}, sent_invalid={"x"}, acknowledged={"a", "b", "c"})
    ledger.rejected = {"x"}
    ledger.attempts = [Attempt(0.0, 0.1, 200)]
    return ledger, Contents(events={"a": 1, "b": 1, "c": 1}, dead_letters={"x": 1}, records=4)


def verdict(ledger: Ledger, contents: Contents) -> Verdict:
    return judge("test", ledger, contents, load=LOAD)


def test_a_clean_run_holds() -> None:
    result = verdict(*clean())
    assert result.ok, result.problems
    assert (result.sent, result.acknowledged, result.in_kafka, result.lost) == (4, 3, 3, 0)


def test_an_acknowledged_event_missing_from_kafka_is_lost() -> None:
    ledger, contents = clean()
    del contents.events["b"]
    result = verdict(ledger, contents)
    assert result.lost == 1
    assert any("acknowledged events are not in Kafka" in p for p in result.problems)


def test_an_event_never_sent_is_reported() -> None:
    ledger, contents = clean()
    contents.events["ghost"] = 1
    assert any("never sent" in p for p in verdict(ledger, contents).problems)


def test_a_rejected_event_belongs_in_the_dead_letter_topic_only() -> None:
    ledger, contents = clean()
    contents.events["x"] = 1
    assert any(
        "rejected events are in event topics" in p for p in verdict(ledger, contents).problems
    )
    ledger, contents = clean()
    del contents.dead_letters["x"]
    problems = verdict(ledger, contents).problems
    assert any("rejected events are not in the dead-letter topic" in p for p in problems)


def test_a_valid_event_in_the_dead_letter_topic_is_reported() -> None:
    ledger, contents = clean()
    contents.dead_letters["a"] = 1
    assert any(
        "valid events are in the dead-letter" in p for p in verdict(ledger, contents).problems
    )


def test_duplicates_are_counted_not_hidden_and_not_a_breach() -> None:
    ledger, contents = clean()
    contents.events["a"] = 3
    contents.dead_letters["x"] = 2
    result = verdict(ledger, contents)
    assert result.duplicates == 3
    assert result.ok
    assert "| 3 |" in result.row()


def test_an_answer_that_breaks_the_contract_is_a_breach() -> None:
    ledger, contents = clean()
    ledger.bad.append("500 {}")
    assert not verdict(ledger, contents).ok


def test_records_without_an_event_id_are_a_breach() -> None:
    ledger, contents = clean()
    contents.no_id = 1
    assert not verdict(ledger, contents).ok


def test_p99() -> None:
    assert p99_s([]) is None
    assert p99_s([float(i) for i in range(1, 101)]) == 99.0
    assert p99_s([0.5]) == 0.5


class Scripted:
    """A fake collector: 503 for every first attempt of a batch, then 200 with the invalid
    event rejected; one 500 on request 5."""

    def __init__(self) -> None:
        self.seen: set[str] = set()
        self.requests = 0

    async def handle(self, request: web.Request) -> web.Response:
        self.requests += 1
        batch = msgspec.json.decode(await request.read())["batch"]
        first = batch[0]["event_id"]
        if self.requests == 5:
            return web.json_response({"error": "boom"}, status=500)
        if first not in self.seen:
            self.seen.add(first)
            return web.json_response(
                {"error": "sink_unavailable", "detail": "x"},
                status=503,
                headers={"Retry-After": "1"},
            )
        rejected = [
            {"index": i, "event_id": e["event_id"], "errors": []}
            for i, e in enumerate(batch)
            if e["properties"]["position_ms"] < 0
        ]
        return web.json_response({"accepted": len(batch) - len(rejected), "rejected": rejected})


@pytest.fixture
async def scripted() -> AsyncIterator[tuple[str, Scripted]]:
    fake = Scripted()
    app = web.Application()
    app.router.add_post("/v1/batch", fake.handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    yield str(server.make_url("/v1/batch")), fake
    await server.close()


async def test_the_ledger_records_every_answer_and_retries_with_the_same_ids(
    scripted: tuple[str, Scripted],
) -> None:
    url, fake = scripted
    ledger = Ledger()
    stop = asyncio.Event()
    load = Load(clients=2, rate_rps=200.0, events=5, invalid_every=2, max_requests=20)
    await asyncio.wait_for(drive(url, ledger, stop, load), timeout=60)
    statuses = ledger.statuses()
    assert statuses[503] >= 1
    assert statuses[200] >= 1
    assert statuses[500] == 1
    assert ledger.bad == ["500 {'error': 'boom'}"]
    # a 503 is retried with the same event ids: everything acknowledged was sent, and each
    # acknowledged batch got its 503 first
    assert ledger.acknowledged
    assert ledger.acknowledged <= ledger.sent_valid
    assert ledger.rejected <= ledger.sent_invalid
    assert ledger.rejected
    assert len(ledger.sent) == 5 * len(fake.seen)


def test_only_acknowledgements_before_a_deliberate_deletion_may_be_missing() -> None:
    ledger, contents = clean()
    ledger.acknowledged_at = {"a": 1.0, "b": 1.0, "c": 3.0}
    del contents.events["b"]  # sent before the deletion at 2.0: deleted with its topic
    result = judge("test", ledger, contents, load=LOAD, destroyed_before=2.0)
    assert (result.lost, result.destroyed) == (0, 1)
    assert result.ok
    del contents.events["c"]  # sent after it: lost
    result = judge("test", ledger, contents, load=LOAD, destroyed_before=2.0)
    assert (result.lost, result.destroyed) == (1, 1)
    assert not result.ok
