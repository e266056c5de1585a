// Unit tests of the controls that make the client track less or nothing: disabled, optOut()
// and optIn() (persisted), the privacy signals (GPC, Do Not Track) and sampling by event_id
// (issue 13), against the built ESM (dist/) in a fake browser (env.mjs).
import assert from "node:assert/strict";
import { after, test } from "node:test";
import { MemoryStorage, installBrowser, played, until } from "./env.mjs";

installBrowser();
const sdk = await import("../dist/index.js");
const clients = [];
const createClient = (options) => {
  const client = sdk.createClient(options);
  clients.push(client);
  return client;
};
after(async () => {
  for (const client of clients) await client.shutdown(0);
});

const fast = { endpoint: "http://collector", writeKey: "k", flushIntervalMs: 5 };
const keys = () => [...localStorage.map.keys()];
const nothingCounted = (stats) =>
  assert.deepEqual(stats, { tracked: 0, sent: 0, handed_off: 0, retried: 0, sending: 0, queued: 0, storage_errors: 0, sampled_out: 0, dropped: {} });
// what the Python SDK keeps (capture_sdk/_intake.py), in exact integers: the last 48 bits of
// the id below int(rate * 2^48)
const keptByPython = (id, rate) => BigInt("0x" + id.slice(-12)) < BigInt(Math.floor(rate * 2 ** 48));

test("disabled: nothing is made, stored, counted or sent, page hide included", async () => {
  const { requests, beacons } = installBrowser();
  const client = createClient({ ...fast, disabled: true });
  assert.equal(client.track(played(1)), null);
  assert.equal(client.identify("u-1"), null);
  assert.equal(client.page(), null);
  window.dispatchEvent(new Event("pagehide"));
  assert.equal(await client.flush(100), true);
  nothingCounted(client.stats());
  assert.deepEqual(keys(), []);
  assert.deepEqual([requests.length, beacons.length], [0, 0]);
});

test("optOut() is persisted for the next page; optIn() tracks again", async () => {
  const { requests } = installBrowser();
  createClient(fast).optOut();
  // the next page of the origin: same storage, a new client
  const next = createClient(fast);
  assert.equal(next.track(played(1)), null);
  assert.equal(next.identify("u-1"), null);
  assert.equal(next.page(), null);
  nothingCounted(next.stats());
  assert.deepEqual(keys(), ["ec:k:optout"], "no queued event, no anonymous or user id stored");
  next.optIn();
  const id = next.track(played(2));
  assert.notEqual(id, null);
  assert.equal(await next.flush(), true);
  assert.deepEqual(requests.flatMap((r) => r.body.batch.map((e) => e.event_id)), [id]);
  assert.notEqual(createClient(fast).track(played(3)), null, "opt-in is persisted too");
});

for (const [where, name, value] of [
  ["navigator", "globalPrivacyControl", true],
  ["navigator", "doNotTrack", "1"],
  ["window", "doNotTrack", "1"],
]) {
  test(`respectPrivacySignals: ${where}.${name} = ${JSON.stringify(value)} tracks nothing, as opted out`, async () => {
    const { requests, beacons } = installBrowser();
    (where === "window" ? window : navigator)[name] = value;
    const honouring = createClient({ ...fast, respectPrivacySignals: true });
    assert.equal(honouring.track(played(1)), null);
    assert.equal(honouring.identify("u-1"), null);
    assert.equal(honouring.page(), null);
    window.dispatchEvent(new Event("pagehide"));
    assert.equal(await honouring.flush(100), true);
    nothingCounted(honouring.stats());
    assert.deepEqual(keys(), [], "nothing queued, no anonymous or user id stored");
    assert.deepEqual([requests.length, beacons.length], [0, 0]);
    // the default leaves the choice to the application: the same browser is tracked
    const id = createClient(fast).track(played(2));
    assert.notEqual(id, null);
  });
}

test("respectPrivacySignals with no signal (or DNT \"0\") tracks as usual", async () => {
  const { requests } = installBrowser();
  navigator.doNotTrack = "0";
  navigator.globalPrivacyControl = false;
  const client = createClient({ ...fast, respectPrivacySignals: true });
  const id = client.track(played(1));
  assert.notEqual(id, null);
  assert.equal(await client.flush(), true);
  assert.equal(requests[0].body.batch[0].event_id, id);
});

test("sampling keeps the events the Python rule keeps; the rest are counted, not dropped", async () => {
  const { requests } = installBrowser();
  const reports = [];
  const rate = 0.3;
  const client = createClient({ ...fast, batchSize: 1000, sampleRates: { track_played: rate }, onError: (d) => reports.push(...d) });
  const ids = Array.from({ length: 300 }, (_, i) => client.track(played(i)));
  const pages = Array.from({ length: 5 }, () => client.page()); // not listed: all kept
  assert.ok(ids.every((id) => typeof id === "string"), "a left-out event still gets its event_id");
  const kept = ids.filter((id) => keptByPython(id, rate));
  assert.ok(kept.length > 30 && kept.length < 150, `${kept.length} of 300 kept at ${rate}`);
  assert.equal(await client.flush(), true);
  const sent = requests.flatMap((r) => r.body.batch.map((e) => e.event_id));
  assert.deepEqual(sent.sort(), [...kept, ...pages].sort());
  const stats = client.stats();
  assert.deepEqual([stats.tracked, stats.sent, stats.sampled_out], [kept.length + 5, kept.length + 5, 300 - kept.length]);
  assert.deepEqual([stats.dropped, reports], [{}, []]);
});

test("sample rate 0 keeps nothing and 1 keeps everything", async () => {
  const { requests } = installBrowser();
  const client = createClient({ ...fast, sampleRates: { track_played: 0, page: 1 } });
  for (let i = 0; i < 20; i++) client.track(played(i));
  const page = client.page();
  assert.equal(await client.flush(), true);
  assert.deepEqual(requests.flatMap((r) => r.body.batch.map((e) => e.event_id)), [page]);
  assert.equal(client.stats().sampled_out, 20);
});

test("a sample rate outside [0, 1] is a programmer error, said at createClient", () => {
  installBrowser();
  for (const bad of [1.5, -0.1, Number.NaN, "0.5"]) {
    assert.throws(() => createClient({ ...fast, sampleRates: { page: bad } }), RangeError);
  }
});

test("storage off: the controls still hold (opt-out lives in memory for the page)", () => {
  installBrowser();
  const client = createClient({ ...fast, storage: new MemoryStorage(0) });
  client.optOut();
  assert.equal(client.track(played(1)), null);
});

test("optOut() drops what was queued before it, counted with a reason, and sends none of it", async () => {
  const { requests, beacons } = installBrowser();
  const reports = [];
  const client = createClient({ ...fast, flushIntervalMs: 60_000, onError: (d) => reports.push(...d) });
  const ids = [client.track(played(1)), client.track(played(2)), client.page()];
  client.optOut();
  window.dispatchEvent(new Event("pagehide")); // nor at page hide
  assert.equal(await client.flush(100), true);
  assert.deepEqual([requests.length, beacons.length], [0, 0]);
  assert.deepEqual(keys().filter((k) => k !== "ec:k:optout" && k !== "ec:k:aid"), [], "nothing queued");
  assert.deepEqual(client.stats().dropped, { opted_out: 3 });
  assert.deepEqual(reports.map((r) => [r.event_id, r.reason]), ids.map((id) => [id, "opted_out"]));
  assert.equal(client.stats().tracked, 3, "they were accepted by track(): counted, then dropped");
});

test("a batch that failed while in flight is dropped, not sent again, once opted out", async () => {
  installBrowser();
  // clients of earlier tests still send through the global fetch: this one has its own
  // endpoint, answered here (a 503 held until the test says so)
  const endpoint = "http://held-collector";
  const mine = [];
  let answer;
  const held = new Promise((resolve) => (answer = resolve));
  const send = globalThis.fetch;
  globalThis.fetch = async (url, init) => {
    if (!url.startsWith(endpoint)) return send(url, init);
    mine.push(JSON.parse(init.body));
    await held;
    return new Response('{"error":"unavailable"}', { status: 503, headers: { "Retry-After": "0" } });
  };
  const reports = [];
  const client = createClient({ ...fast, endpoint, onError: (d) => reports.push(...d) });
  const id = client.track(played(1));
  await until(() => mine.length === 1); // in the browser's hands
  client.optOut();
  assert.deepEqual(reports, [], "a batch in flight cannot be recalled: not dropped yet");
  answer(); // back in the queue, where the next attempt finds the opt-out
  await until(() => reports.length === 1);
  await new Promise((r) => setTimeout(r, 50)); // room for a retry that must not come
  assert.deepEqual(mine.map((body) => body.batch.map((e) => e.event_id)), [[id]]);
  assert.deepEqual([reports[0].event_id, reports[0].reason], [id, "opted_out"]);
});
