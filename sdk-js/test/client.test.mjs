// Unit tests of the browser SDK's queue, batching, unload splitting, retries and storage
// fallbacks, against the built ESM (dist/) in a fake browser (env.mjs).
import assert from "node:assert/strict";
import { after, test } from "node:test";
import { MemoryStorage, installBrowser, played, until } from "./env.mjs";

installBrowser();
const sdk = await import("../dist/index.js");
const { KEEPALIVE_BUDGET_BYTES } = sdk;
// every client is shut down at the end, so that no pending timer keeps the process alive
const clients = [];
const createClient = (options) => {
  const client = sdk.createClient(options);
  clients.push(client);
  return client;
};
after(async () => {
  for (const client of clients) await client.shutdown(0);
});
const { utf8Bytes } = await import("../dist/queue.js");

const fast = { endpoint: "http://collector", writeKey: "k", flushIntervalMs: 5, backoffBaseMs: 5, backoffCapMs: 20 };
const json = { ...fast, safelisted: false };
const reset = (answers = []) => installBrowser({ answers });

test("utf8Bytes counts what the keepalive budget counts", () => {
  for (const s of ["abc", "é", "€", "😀", "a😀é€"]) assert.equal(utf8Bytes(s), Buffer.byteLength(s));
});

test("batches close by count and every event is sent once with its id", async () => {
  const { requests } = reset();
  const client = createClient({ ...fast, batchSize: 10 });
  const ids = Array.from({ length: 25 }, (_, i) => client.track(played(i)));
  assert.equal(await client.flush(), true);
  assert.deepEqual(requests.map((r) => r.body.batch.length), [10, 10, 5]);
  assert.deepEqual(requests.flatMap((r) => r.body.batch.map((e) => e.event_id)), ids);
  const [first] = requests[0].body.batch;
  assert.equal(first.context.library.name, "capture-sdk-browser");
  assert.equal(first.anonymous_id, client.anonymousId);
  assert.match(first.event_id, /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
  assert.deepEqual(client.stats(), { tracked: 25, sent: 25, handed_off: 0, retried: 0, sending: 0, queued: 0, storage_errors: 0, sampled_out: 0, dropped: {} });
});

test("batches close by bytes", async () => {
  const { requests } = reset();
  const client = createClient({ ...fast, maxBatchBytes: 2000 });
  for (let i = 0; i < 20; i++) client.track(played(i, "x".repeat(300)));
  assert.equal(await client.flush(), true);
  assert.ok(requests.length > 1);
  for (const r of requests) assert.ok(r.bytes <= 2000, `${r.bytes} bytes`);
  assert.equal(requests.reduce((n, r) => n + r.body.batch.length, 0), 20);
});

test("503 with Retry-After is retried with the same ids after at least Retry-After", async () => {
  const { requests } = reset([[503, { "Retry-After": "0.2" }]]);
  const client = createClient(fast);
  const id = client.track(played(1));
  assert.equal(await client.flush(), true);
  assert.equal(requests.length, 2);
  assert.equal(requests[0].body.batch[0].event_id, id);
  assert.equal(requests[1].body.batch[0].event_id, id);
  assert.ok(requests[1].at - requests[0].at >= 190, "Retry-After is the floor of the wait");
  assert.equal(client.stats().retried, 1);
});

test("network errors, 408 and 429 are retried; other 4xx are dropped with a reason", async () => {
  const { requests } = reset([[0], [408], [429], [400]]);
  const reports = [];
  const client = createClient({ ...fast, onError: (d) => reports.push(...d) });
  const id = client.track(played(1));
  assert.equal(await client.flush(), true);
  assert.equal(requests.length, 4);
  assert.deepEqual(reports.map((d) => [d.event_id, d.reason, d.detail]), [[id, "collector_refused", "400 bad_request"]]);
  assert.deepEqual(client.stats().dropped, { collector_refused: 1 });
  assert.equal(client.stats().retried, 3);
});

test("per-event rejections reach onError, the rest count as sent", async () => {
  const errors = [{ path: "$.properties.position_ms", message: "Expected `int` >= 0" }];
  reset([[200, {}, { accepted: 1, rejected: [{ index: 1, event_id: "x", errors }] }]]);
  const reports = [];
  const client = createClient({ ...fast, onError: (d) => reports.push(...d) });
  client.track(played(1));
  const bad = client.track(played(2));
  assert.equal(await client.flush(), true);
  assert.deepEqual(reports.map((d) => [d.event_id, d.reason, d.errors]), [[bad, "rejected", errors]]);
  assert.equal(client.stats().sent, 1);
});

test("the queue is persisted: a new page sends what the last one left, same ids", async () => {
  const { requests } = reset([[0], [0], [0], [0], [0], [0], [0], [0]]);
  const first = createClient({ ...fast, flushIntervalMs: 10_000 });
  const ids = [first.track(played(1)), first.track(played(2))];
  assert.equal(first.stats().queued, 2);
  await first.shutdown(1);
  // the page goes; a new one on the same origin (same localStorage) starts a client
  const second = createClient(fast);
  assert.equal(second.anonymousId, first.anonymousId);
  assert.equal(await second.flush(), true);
  const sent = requests.slice(-1)[0].body.batch.map((e) => e.event_id);
  assert.deepEqual(sent, ids);
});

test("page hide splits the queue under the shared 64 KiB budget, the rest stays stored", async () => {
  const { beacons, refused } = reset();
  const client = createClient({ ...fast, flushIntervalMs: 60_000, safelisted: true });
  const ids = Array.from({ length: 200 }, (_, i) => client.track(played(i, "y".repeat(800))));
  window.dispatchEvent(new Event("pagehide"));
  const total = beacons.reduce((n, b) => n + b.bytes, 0);
  assert.ok(beacons.length >= 1);
  assert.ok(total <= KEEPALIVE_BUDGET_BYTES, `${total} bytes in flight`);
  assert.ok(beacons[0].url.endsWith("/v1/batch?write_key=k"));
  const stats = client.stats();
  assert.equal(stats.handed_off + stats.queued, ids.length);
  assert.equal(stats.sending, 0, "no keepalive fallback needed");
  assert.deepEqual(refused, [], "the split kept within the budget: the browser refused nothing");
  assert.ok(stats.queued > 0, "what did not fit waits for the next page");
  const beaconed = beacons.flatMap((b) => b.body.batch.map((e) => e.event_id));
  assert.deepEqual(beaconed, ids.slice(0, beaconed.length));
});

test("a refused beacon is split again", async () => {
  const { beacons } = installBrowser({ beaconLimitBytes: 3000 });
  const client = createClient({ ...fast, flushIntervalMs: 60_000, safelisted: true, maxBatchBytes: 60_000 });
  for (let i = 0; i < 4; i++) client.track(played(i, "z".repeat(500)));
  document.visibilityState = "hidden";
  window.dispatchEvent(new Event("visibilitychange"));
  assert.ok(beacons.length >= 2, `${beacons.length} beacons`);
  assert.ok(beacons.every((b) => b.bytes <= 3000));
  const stats = client.stats();
  assert.equal(stats.handed_off + stats.queued, 4);
});

// issue 13: Chromium fires pagehide and then visibilitychange when a tab closes. The second
// call handed off a second budget's worth; the browser refused it, and the single events of the
// split went to keepalive fetches that the same quota refused after their events had left the
// queue, so a page that closed before the rejection lost them.
test("both page-hide events share one budget; what the browser refuses stays stored", async () => {
  const { beacons, refused, requests } = reset();
  const client = createClient({ ...fast, flushIntervalMs: 60_000, batchSize: 1000, safelisted: true });
  const ids = Array.from({ length: 300 }, (_, i) => client.track(played(i, "y".repeat(700))));
  window.dispatchEvent(new Event("pagehide"));
  document.visibilityState = "hidden";
  window.dispatchEvent(new Event("visibilitychange"));
  const total = beacons.reduce((n, b) => n + b.bytes, 0);
  assert.ok(total <= KEEPALIVE_BUDGET_BYTES - 4096, `${total} bytes of beacons in flight`);
  assert.deepEqual(refused, [], "the second event asked for nothing the budget had not left");
  assert.equal(requests.length, 0, "no keepalive fetch behind a refused beacon");
  const beaconed = beacons.flatMap((b) => b.body.batch.map((e) => e.event_id));
  const stored = [...localStorage.map.keys()]
    .filter((k) => k.startsWith("ec:k:q:"))
    .map((k) => k.slice("ec:k:q:".length));
  assert.deepEqual([...beaconed, ...stored].sort(), [...ids].sort(), "every event beaconed or stored");
  assert.equal(client.stats().handed_off, beaconed.length);
});

test("a beacon refused down to one event ends the hand-off; nothing goes by keepalive fetch", async () => {
  const { beacons, requests } = installBrowser({ beaconLimitBytes: 1500 });
  const client = createClient({ ...fast, flushIntervalMs: 60_000, safelisted: true });
  const ids = Array.from({ length: 4 }, (_, i) => client.track(played(i, "z".repeat(500))));
  document.visibilityState = "hidden";
  window.dispatchEvent(new Event("visibilitychange"));
  assert.equal(beacons.length, 1);
  assert.equal(requests.length, 0);
  const stats = client.stats();
  assert.deepEqual([stats.handed_off, stats.sending, stats.queued], [1, 0, 3]);
  assert.deepEqual(beacons[0].body.batch.map((e) => e.event_id), ids.slice(0, 1));
});

test("storage full falls back to memory, counted, never thrown", async () => {
  const { requests } = reset();
  const storage = new MemoryStorage(400);
  const client = createClient({ ...fast, storage });
  const ids = Array.from({ length: 5 }, (_, i) => client.track(played(i)));
  assert.ok(client.stats().storage_errors > 0);
  assert.equal(await client.flush(), true);
  assert.deepEqual(requests.flatMap((r) => r.body.batch.map((e) => e.event_id)).sort(), [...ids].sort());
});

test("no storage at all still delivers", async () => {
  const { requests } = reset();
  const client = createClient({ ...fast, storage: null });
  const id = client.track(played(1));
  assert.equal(await client.flush(), true);
  assert.equal(requests[0].body.batch[0].event_id, id);
});

test("a full queue and an oversized event are dropped with their reasons", async () => {
  reset([[0], [0], [0], [0], [0], [0]]);
  const reports = [];
  const client = createClient({ ...fast, flushIntervalMs: 60_000, maxQueueEvents: 2, maxEventBytes: 500, onError: (d) => reports.push(...d) });
  client.track(played(1));
  client.track(played(2));
  client.track(played(3));
  client.track(played(4, "w".repeat(600)));
  assert.deepEqual(reports.map((d) => d.reason), ["queue_full", "too_large"]);
  assert.equal(client.stats().queued, 2);
});

test("opt-out is persisted and tracks nothing", () => {
  reset();
  const client = createClient(fast);
  client.optOut();
  assert.equal(createClient(fast).track(played(1)), null);
  client.optIn();
  assert.notEqual(client.track(played(1)), null);
});

test("safelisted requests carry no Authorization; the JSON form does", async () => {
  const { requests } = reset();
  const safe = createClient({ ...fast, writeKey: "pk/1" });
  safe.track(played(1));
  assert.equal(await safe.flush(), true);
  const [plain] = requests.splice(0);
  assert.equal(plain.url, "http://collector/v1/batch?write_key=pk%2F1");
  assert.deepEqual(plain.init.headers, { "Content-Type": "text/plain" });
  assert.equal(plain.init.keepalive, true);
  assert.equal(plain.init.credentials, "omit");

  const withHeaders = createClient({ ...json, writeKey: "pk/2" });
  withHeaders.track(played(2));
  assert.equal(await withHeaders.flush(), true);
  const [typed] = requests;
  assert.equal(typed.url, "http://collector/v1/batch");
  assert.deepEqual(typed.init.headers, { "Content-Type": "application/json", Authorization: "Bearer pk/2" });
});

test("without beacons, page hide hands off by keepalive fetch within the budget", async () => {
  const { requests, beacons } = reset();
  const client = createClient({ ...json, flushIntervalMs: 60_000, batchSize: 1000 });
  for (let i = 0; i < 150; i++) client.track(played(i, "y".repeat(800)));
  window.dispatchEvent(new Event("pagehide"));
  assert.equal(beacons.length, 0);
  const total = requests.reduce((n, r) => n + r.bytes, 0);
  assert.ok(requests.length >= 1 && requests.every((r) => r.init.keepalive));
  assert.ok(total <= KEEPALIVE_BUDGET_BYTES, `${total} bytes in flight`);
  await until(() => client.stats().sending === 0);
  const stats = client.stats();
  assert.equal(stats.sent + stats.queued, 150);
  assert.ok(stats.queued > 0);
});

test("nothing is handed off at page hide while the collector is failing", async () => {
  const { beacons } = reset([[503], [503], [503], [503], [503], [503]]);
  const client = createClient({ ...fast, backoffBaseMs: 10_000, backoffCapMs: 10_000 });
  client.track(played(1));
  await until(() => client.stats().retried === 1);
  window.dispatchEvent(new Event("pagehide"));
  assert.equal(beacons.length, 0);
  assert.equal(client.stats().queued, 1);
});

test("offline pauses sending; the online event resumes it", async () => {
  const { requests } = reset();
  navigator.onLine = false;
  const client = createClient(fast);
  const id = client.track(played(1));
  // only this client's requests: a client of an earlier test may still be retrying
  const mine = () => requests.filter((r) => r.body?.batch?.some((e) => e.event_id === id));
  await new Promise((resolve) => setTimeout(resolve, 50)); // ten flush intervals
  assert.equal(mine().length, 0);
  assert.equal(client.stats().retried, 0);
  navigator.onLine = true;
  window.dispatchEvent(new Event("online"));
  await until(() => client.stats().sent === 1);
  assert.equal(mine().length, 1);
});
