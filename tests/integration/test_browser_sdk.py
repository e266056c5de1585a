"""The browser SDK (sdk-js/) in a real headless Chromium against the real collector (issue 13).

The page is served from its own loopback origin, so every request is cross-origin and goes
through the collector's CORS checks exactly as in production; nothing is intercepted. Each
scenario compares the event_ids tracked in the page with those in the sink (real Kafka, or the
in-memory sink where the test needs the collector to answer 503), duplicates counted.
"""

from __future__ import annotations

import asyncio
import collections
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import pytest
from aiohttp import web

from collector.settings import Settings
from collector.sinks import MemorySink
from collector.sinks.kafka import KafkaSink
from devtools.chromium import Chromium, Page, find_chromium
from devtools.holding_proxy import Held, HoldingProxy
from devtools.kafka import KafkaBroker
from devtools.node import ensure_built
from devtools.ports import free_port
from event_schemas import SchemaRegistry
from tests.conftest import HttpClient, start_collector
from tests.integration.kafka_helpers import consume, kafka_settings

KEY = "browser-key-0123456789abcdef"
# the browser's shared keepalive budget, and how far under it the SDK aims at page hide
# (sdk-js/src/client.ts: KEEPALIVE_BUDGET_BYTES, UNLOAD_HEADROOM_BYTES)
KEEPALIVE_BUDGET_BYTES = 65536
UNLOAD_HEADROOM_BYTES = 4096
# a browser source that may send page_viewed only: track_played is refused whole (403)
NARROW_KEY = "narrow-key-0123456789abcdef"

# one valid event of the wire protocol, for requests the tests make by hand
BATCH_EVENT = {
    "event": "page_viewed",
    "version": 1,
    "event_id": "01937f1e-0000-7000-8000-000000000001",
    "occurred_at": "2026-11-26T12:00:00Z",
    "anonymous_id": "a",
    "properties": {"path": "/"},
}

PAGE = """<!doctype html>
<html><head><title>browser sdk test</title><script src="/capture.iife.js"></script>
<script>
window.dropped = [];
window.makeClient = (options) => {
  window.client = EventCapture.createClient({
    ...options,
    onError: (events) => window.dropped.push(...events),
  });
  return window.client.anonymousId;
};
window.trackMany = (n, extra, padChars) => {
  const ids = [];
  const context = padChars ? {pad: "p".repeat(padChars)} : undefined;
  for (let i = 0; i < n; i++) {
    ids.push(client.track({event: "track_played", version: 2, context,
      properties: {track_id: "t-" + i + (extra || ""), artist_id: "a-1", position_ms: i}}));
  }
  return ids;
};
</script></head><body>test</body></html>
"""


@pytest.fixture(scope="module")
def sdk_bundle() -> Path:
    if find_chromium() is None:
        pytest.fail("chromium not found: scripts/browser-deps.sh installs it")
    return ensure_built()


@dataclass
class PageServer:
    origin: str
    url: str


@pytest.fixture
async def page_server(sdk_bundle: Path) -> AsyncIterator[PageServer]:
    """The test page and the SDK's script-tag build, on an origin of their own."""

    async def index(request: web.Request) -> web.Response:
        return web.Response(text=PAGE, content_type="text/html")

    async def script(request: web.Request) -> web.FileResponse:
        return web.FileResponse(sdk_bundle)

    app = web.Application()
    app.router.add_get("/", index)
    app.router.add_get("/capture.iife.js", script)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    origin = f"http://127.0.0.1:{port}"
    yield PageServer(origin=origin, url=origin + "/")
    await runner.cleanup()


@pytest.fixture
async def browser(sdk_bundle: Path) -> AsyncIterator[Chromium]:
    async with Chromium() as chromium:
        yield chromium


def write_config(tmp_path: Path, origin: str) -> str:
    path = tmp_path / "collector.toml"
    path.write_text(
        f"""
[[sources]]
name = "web"
kind = "browser"
key = "{KEY}"
events = "*"
allowed_origins = ["{origin}"]

[[sources]]
name = "narrow"
kind = "browser"
key = "{NARROW_KEY}"
events = ["page_viewed"]
allowed_origins = ["{origin}"]
"""
    )
    return str(path)


@pytest.fixture
async def kafka_collector(
    kafka_broker: KafkaBroker, schemas: SchemaRegistry, page_server: PageServer, tmp_path: Path
) -> AsyncIterator[tuple[str, str]]:
    """(collector URL, topic prefix) of a collector writing to the real broker."""
    prefix = f"br{uuid.uuid4().hex[:8]}"
    config = write_config(tmp_path, page_server.origin)
    settings = kafka_settings(kafka_broker, prefix, config_file=config)
    client = await start_collector(settings, KafkaSink(kafka_broker.bootstrap_servers), schemas)
    yield str(client.make_url("")).rstrip("/"), prefix
    await client.close()


@pytest.fixture
async def memory_collector(
    memory_sink: MemorySink, schemas: SchemaRegistry, page_server: PageServer, tmp_path: Path
) -> AsyncIterator[HttpClient]:
    settings = Settings(
        sink="memory", sink_timeout_s=0.5, config_file=write_config(tmp_path, page_server.origin)
    )
    client = await start_collector(settings, memory_sink, schemas)
    yield client
    await client.close()


def options(endpoint: str, **extra: Any) -> str:
    """The createClient options as a JS object literal (fast retries for tests)."""
    base = {"endpoint": endpoint, "writeKey": KEY, "flushIntervalMs": 50}
    base |= {"backoffBaseMs": 50, "backoffCapMs": 200, "retryAfterCapMs": 300}
    return json.dumps(base | extra)


async def kafka_ids(
    broker: KafkaBroker, prefix: str, expected: int, event: str = "track_played"
) -> collections.Counter[str]:
    records = await consume(broker.bootstrap_servers, [f"{prefix}.{event}"], expected=expected)
    return collections.Counter(msgspec.json.decode(r.value)["event_id"] for r in records)


def assert_exactly(
    tracked: list[str], arrived: collections.Counter[str], *, retried: int = 0
) -> None:
    """tracked == arrived by event_id; duplicates and strangers are named in the failure.

    A duplicate needs a retry to explain it (at least once: a batch the collector answered 503
    after its sink deadline may land anyway, and its retry lands it again); with `retried` 0,
    the page never sent a batch twice, so any duplicate fails. Duplicates are reported."""
    duplicates = {i: n for i, n in arrived.items() if n > 1}
    if duplicates:
        print(f"{len(duplicates)} event_ids arrived more than once after {retried} retries")
    assert not duplicates or retried > 0, (
        f"{len(duplicates)} event_ids arrived more than once, and no batch was retried"
    )
    assert set(arrived) == set(tracked), (
        f"missing {len(set(tracked) - set(arrived))}, unexpected {len(set(arrived) - set(tracked))}"
    )


def dead_port() -> int:
    """A loopback port nothing listens on."""
    return free_port()


async def open_client(browser: Chromium, url: str, opts: str) -> Page:
    page = await browser.new_page(url)
    await page.evaluate(f"makeClient({opts})")
    return page


@pytest.mark.kafka
async def test_tracked_events_arrive_in_kafka_with_their_ids(
    browser: Chromium,
    page_server: PageServer,
    kafka_collector: tuple[str, str],
    kafka_broker: KafkaBroker,
) -> None:
    endpoint, prefix = kafka_collector
    page = await open_client(browser, page_server.url, options(endpoint, batchSize=10))
    anonymous_id = await page.evaluate("client.anonymousId")
    ids: list[str] = await page.evaluate("trackMany(45)")
    bad = await page.evaluate(
        "client.track({event: 'track_played', version: 2,"
        " properties: {track_id: 't', artist_id: 'a', position_ms: -1}})"
    )
    assert await page.evaluate("client.flush(20000)") is True

    arrived = await kafka_ids(kafka_broker, prefix, expected=len(ids))
    stats = await page.evaluate("client.stats()")
    assert_exactly(ids, arrived, retried=stats["retried"])
    records = await consume(
        kafka_broker.bootstrap_servers, [f"{prefix}.track_played"], expected=len(ids)
    )
    first = msgspec.json.decode(records[0].value)
    assert first["anonymous_id"] == anonymous_id
    assert first["context"]["library"]["name"] == "capture-sdk-browser"
    dead = await consume(kafka_broker.bootstrap_servers, [f"{prefix}._invalid"], expected=1)
    [dead_letter] = dead
    assert dict(dead_letter.headers)["event_id"] == bad.encode()

    [report] = await page.evaluate("dropped")
    assert (report["event_id"], report["reason"]) == (bad, "rejected")
    assert report["errors"][0]["path"] == "$.properties.position_ms"
    assert (stats["tracked"], stats["sent"], stats["queued"]) == (46, 45, 0)
    assert stats["dropped"] == {"rejected": 1}


@pytest.mark.kafka
async def test_a_reload_resends_the_persisted_queue_with_the_same_ids(
    browser: Chromium,
    page_server: PageServer,
    kafka_collector: tuple[str, str],
    kafka_broker: KafkaBroker,
) -> None:
    endpoint, prefix = kafka_collector
    unreachable = f"http://127.0.0.1:{dead_port()}"
    page = await open_client(browser, page_server.url, options(unreachable))
    ids: list[str] = await page.evaluate("trackMany(12)")
    await page.wait_for("client.stats().retried >= 2")
    assert (await page.evaluate("client.stats()"))["queued"] == 12

    await page.reload()  # pagehide while the collector is unreachable: nothing is handed off
    assert await page.evaluate("window.client === undefined")
    await page.evaluate(f"makeClient({options(endpoint)})")
    assert await page.evaluate("client.flush(20000)") is True

    assert_exactly(ids, await kafka_ids(kafka_broker, prefix, expected=len(ids)))
    assert (await page.evaluate("client.stats()"))["sent"] == 12


@pytest.mark.kafka
@pytest.mark.parametrize("safelisted", [True, False], ids=["beacon", "keepalive-fetch"])
async def test_closing_the_tab_right_after_track_delivers_on_pagehide(
    browser: Chromium,
    page_server: PageServer,
    kafka_collector: tuple[str, str],
    kafka_broker: KafkaBroker,
    safelisted: bool,
) -> None:
    endpoint, prefix = kafka_collector
    # a long interval: nothing goes out while the page lives, only at pagehide
    opts = options(endpoint, flushIntervalMs=60_000, safelisted=safelisted)
    page = await open_client(browser, page_server.url, opts)
    ids: list[str] = await page.evaluate("trackMany(20)")
    assert (await page.evaluate("client.stats()"))["queued"] == 20
    await page.close()

    assert_exactly(ids, await kafka_ids(kafka_broker, prefix, expected=len(ids)))


async def test_a_503_is_retried_and_the_same_events_are_accepted(
    browser: Chromium,
    page_server: PageServer,
    memory_collector: HttpClient,
    memory_sink: MemorySink,
) -> None:
    memory_sink.available = False  # the collector answers 503 + Retry-After
    endpoint = str(memory_collector.make_url("")).rstrip("/")
    page = await open_client(browser, page_server.url, options(endpoint))
    ids: list[str] = await page.evaluate("trackMany(8)")
    await page.wait_for("client.stats().retried >= 2")
    assert memory_sink.records == []
    # the page can read the 503's Retry-After (exposed by CORS), so the SDK waits at least that
    body = json.dumps(json.dumps({"sent_at": "2026-11-26T12:00:00Z", "batch": [BATCH_EVENT]}))
    retry_after = await page.evaluate(
        f"fetch({json.dumps(endpoint + '/v1/batch')}, {{method: 'POST', body: {body},"
        f" headers: {{'Content-Type': 'application/json', Authorization: 'Bearer {KEY}'}}}})"
        ".then((r) => [r.status, r.headers.get('Retry-After')])"
    )
    assert retry_after[0] == 503
    assert retry_after[1] is not None
    memory_sink.available = True
    assert await page.evaluate("client.flush(20000)") is True

    arrived = collections.Counter(
        msgspec.json.decode(r.value)["event_id"] for r in memory_sink.topic("events.track_played")
    )
    assert_exactly(ids, arrived)
    stats = await page.evaluate("client.stats()")
    assert (stats["sent"], stats["dropped"]) == (8, {})
    assert await page.evaluate("dropped") == []


async def test_a_refused_batch_is_reported_and_not_retried(
    browser: Chromium,
    page_server: PageServer,
    memory_collector: HttpClient,
    memory_sink: MemorySink,
) -> None:
    endpoint = str(memory_collector.make_url("")).rstrip("/")
    page = await open_client(browser, page_server.url, options(endpoint, writeKey=NARROW_KEY))
    [event_id] = await page.evaluate("trackMany(1)")
    assert await page.evaluate("client.flush(20000)") is True

    [report] = await page.evaluate("dropped")
    assert (report["event_id"], report["reason"]) == (event_id, "collector_refused")
    assert report["detail"] == "403 event_not_allowed"
    stats = await page.evaluate("client.stats()")
    assert (stats["sent"], stats["retried"], stats["dropped"]) == (0, 0, {"collector_refused": 1})
    assert memory_sink.records == []


@pytest.mark.kafka
async def test_two_tabs_share_the_queue_and_send_each_event_once(
    browser: Chromium,
    page_server: PageServer,
    kafka_collector: tuple[str, str],
    kafka_broker: KafkaBroker,
) -> None:
    endpoint, prefix = kafka_collector
    opts = options(endpoint, batchSize=5, flushIntervalMs=20)
    tabs = [await open_client(browser, page_server.url, opts) for _ in range(2)]
    tracked = await asyncio.gather(
        *(tab.evaluate(f"trackMany(40, '-{n}')") for n, tab in enumerate(tabs))
    )
    for tab in tabs:
        assert await tab.evaluate("client.flush(20000)") is True
    ids = [event_id for ids in tracked for event_id in ids]

    assert_exactly(ids, await kafka_ids(kafka_broker, prefix, expected=len(ids)))
    sent = [(await tab.evaluate("client.stats()"))["sent"] for tab in tabs]
    assert sum(sent) == len(ids)


# issue 13: the tab holding the Web Lock closes while its batch is in flight. Its events leave
# the shared queue only on the collector's answer, so the other tab sends them again: none is
# lost, and only that batch may arrive twice (its request may still land: at-least-once).
@pytest.mark.kafka
@pytest.mark.parametrize("held", ["lost", "answered_late"])
async def test_a_tab_closed_mid_send_leaves_its_batch_to_the_other_tab(
    browser: Chromium,
    page_server: PageServer,
    kafka_collector: tuple[str, str],
    kafka_broker: KafkaBroker,
    held: Held,
) -> None:
    endpoint, prefix = kafka_collector
    async with HoldingProxy(endpoint, held=held) as proxy:
        opts = options(proxy.url, batchSize=10)
        sender = await open_client(browser, page_server.url, opts)
        ids: list[str] = await sender.evaluate("trackMany(25)")
        await asyncio.wait_for(proxy.holding.wait(), 20)
        assert proxy.held_ids == ids[:10], "the first batch is the one in flight"
        other = await open_client(browser, page_server.url, opts)
        locks = await other.evaluate("navigator.locks.query().then((s) => s.held.length)")
        assert locks == 1, "the sending tab holds the origin's send lock while it waits"
        await sender.close()  # pagehide hands off what is not in flight; the held batch stays
        assert await other.evaluate("client.flush(20000)") is True
        other_sent = (await other.evaluate("client.stats()"))["sent"]
        proxy.release()  # the held request ends only now, with nobody left to hear it
        twice = len(proxy.held_ids) if held == "answered_late" else 0
        arrived = await kafka_ids(kafka_broker, prefix, expected=len(ids) + twice)

    duplicates = {event_id: n for event_id, n in arrived.items() if n > 1}
    print(f"tab closed mid-send ({held}): {len(ids)} tracked, {len(duplicates)} duplicates")
    assert set(arrived) == set(ids), (
        f"missing {len(set(ids) - set(arrived))}, unexpected {len(set(arrived) - set(ids))}"
    )
    # the other tab resent exactly the unacknowledged batch, nothing handed off at pagehide
    assert other_sent == len(proxy.held_ids)
    resent = {event_id for batch in proxy.passed for event_id in batch} & set(proxy.held_ids)
    assert resent == set(proxy.held_ids)
    expected = dict.fromkeys(proxy.held_ids, 2) if held == "answered_late" else {}
    assert duplicates == expected


async def collector_metric(endpoint: str, sample: str) -> float:
    """The sum of a sample of the collector's /metrics over the labels that `sample` leaves
    open (`name` sums every label set, `name{a="b"}` is that one); 0 when absent."""
    async with aiohttp.ClientSession() as session, session.get(endpoint + "/metrics") as response:
        text = await response.text()
    return sum(
        float(line.split()[-1])
        for line in text.splitlines()
        if line.startswith(sample) and line[len(sample) : len(sample) + 1] in (" ", "{")
    )


# issue 13: a tab close fires pagehide and then visibilitychange; each used to hand off its
# own budget's worth, and what the browser refused of the second went by keepalive fetches
# that left the queue and were refused too, so a page gone before the rejection lost them.
@pytest.mark.kafka
async def test_closing_during_a_large_queue_keeps_to_the_budget_and_loses_nothing(
    browser: Chromium,
    page_server: PageServer,
    kafka_collector: tuple[str, str],
    kafka_broker: KafkaBroker,
) -> None:
    endpoint, prefix = kafka_collector
    opts = options(endpoint, flushIntervalMs=60_000, batchSize=1000)
    page = await open_client(browser, page_server.url, opts)
    # about 850 B each: some 250 KB queued, nearly four times the 64 KiB unload budget
    ids: list[str] = await page.evaluate("trackMany(300, '', 450)")
    await page.close()
    unload_records = await consume(
        kafka_broker.bootstrap_servers,
        [f"{prefix}.track_played"],
        expected=len(ids),
    )
    handed = collections.Counter(msgspec.json.decode(r.value)["event_id"] for r in unload_records)
    assert 0 < len(handed) < len(ids), f"{len(handed)} of {len(ids)} went out at pagehide"
    # the request bodies the collector received from the closing page, all of them beacons in
    # flight together: within the budget, less the SDK's headroom for URLs and headers
    body_bytes = await collector_metric(
        endpoint, 'capture_http_request_body_bytes_sum{form="sent"}'
    )
    assert 0 < body_bytes <= KEEPALIVE_BUDGET_BYTES - UNLOAD_HEADROOM_BYTES, body_bytes
    assert await collector_metric(endpoint, "capture_request_errors_total") == 0

    # nothing lost in between: each event is in Kafka or still stored for the next page
    page = await browser.new_page(page_server.url)
    stored = await page.evaluate(
        "Object.keys(localStorage).filter((k) => k.includes(':q:'))"
        ".map((k) => k.slice(k.lastIndexOf(':') + 1))"
    )
    assert not set(stored) & set(handed), "handed off and still stored: it would be sent twice"
    assert_exactly(ids, handed + collections.Counter(stored))
    # the next page of the origin sends what did not fit
    await page.evaluate(f"makeClient({options(endpoint)})")
    assert await page.evaluate("client.flush(20000)") is True
    assert_exactly(ids, await kafka_ids(kafka_broker, prefix, expected=len(ids)))


@pytest.mark.kafka
async def test_storage_full_falls_back_to_memory_and_still_delivers(
    browser: Chromium,
    page_server: PageServer,
    kafka_collector: tuple[str, str],
    kafka_broker: KafkaBroker,
) -> None:
    endpoint, prefix = kafka_collector
    page = await open_client(browser, page_server.url, options(endpoint, flushIntervalMs=200))
    # fill the origin's quota to the last character: big chunks first, then ever smaller ones
    filled = await page.evaluate(
        "(() => { let i = 0, error = null;"
        " for (let size = 1 << 20; size >= 1; size >>= 1) {"
        "  try { for (;;) localStorage.setItem('fill' + i++, 'f'.repeat(size)); }"
        "  catch (e) { error = e.name; } }"
        " return error; })()"
    )
    assert filled == "QuotaExceededError"
    ids: list[str] = await page.evaluate("trackMany(10)")
    assert (await page.evaluate("client.stats()"))["storage_errors"] >= 10
    assert await page.evaluate("client.flush(20000)") is True
    assert_exactly(ids, await kafka_ids(kafka_broker, prefix, expected=len(ids)))


@pytest.mark.kafka
async def test_offline_pauses_and_online_resumes(
    browser: Chromium,
    page_server: PageServer,
    kafka_collector: tuple[str, str],
    kafka_broker: KafkaBroker,
) -> None:
    endpoint, prefix = kafka_collector
    page = await open_client(browser, page_server.url, options(endpoint))
    await page.call("Network.enable")
    conditions = {"latency": 0, "downloadThroughput": -1, "uploadThroughput": -1}
    await page.call("Network.emulateNetworkConditions", offline=True, **conditions)
    await page.wait_for("navigator.onLine === false")
    ids: list[str] = await page.evaluate("trackMany(10)")
    await asyncio.sleep(1.0)  # twenty flush intervals: nothing may be tried while offline
    stats = await page.evaluate("client.stats()")
    assert (stats["queued"], stats["retried"], stats["sent"]) == (10, 0, 0)

    await page.call("Network.emulateNetworkConditions", offline=False, **conditions)
    assert await page.evaluate("client.flush(20000)") is True
    assert_exactly(ids, await kafka_ids(kafka_broker, prefix, expected=len(ids)))


async def test_a_refused_origin_gets_no_cors_grant(
    browser: Chromium,
    page_server: PageServer,
    memory_collector: HttpClient,
    memory_sink: MemorySink,
) -> None:
    endpoint = str(memory_collector.make_url("")).rstrip("/")
    # the same page from `localhost`: another origin, one no source lists
    other = page_server.url.replace("127.0.0.1", "localhost")
    page = await open_client(browser, other, options(endpoint))
    await page.evaluate("trackMany(3)")
    await page.wait_for("client.stats().retried >= 2")
    stats = await page.evaluate("client.stats()")
    assert (stats["sent"], stats["queued"], stats["dropped"]) == (0, 3, {})
    refused = await page.evaluate(
        f"fetch({json.dumps(endpoint + '/v1/batch')}, {{method: 'POST', body: '{{}}',"
        f" headers: {{'Content-Type': 'application/json', Authorization: 'Bearer {KEY}'}}}})"
        ".then(() => 'granted', (e) => e.name)"
    )
    assert refused == "TypeError"  # the preflight was refused: no response to read
    assert memory_sink.records == []
