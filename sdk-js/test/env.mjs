// A fake browser for the unit tests: window events, localStorage, fetch and sendBeacon that
// record what they were given. Node's test runner gives each test file its own process.

export class MemoryStorage {
  constructor(quotaBytes = Infinity) {
    this.map = new Map();
    this.quotaBytes = quotaBytes;
  }
  get length() {
    return this.map.size;
  }
  key(i) {
    return [...this.map.keys()][i] ?? null;
  }
  getItem(k) {
    return this.map.has(k) ? this.map.get(k) : null;
  }
  setItem(k, v) {
    let used = 0;
    for (const [key, value] of this.map) if (key !== k) used += key.length + value.length;
    if (used + k.length + String(v).length > this.quotaBytes) {
      const error = new Error("quota");
      error.name = "QuotaExceededError";
      throw error;
    }
    this.map.set(k, String(v));
  }
  removeItem(k) {
    this.map.delete(k);
  }
}

/** Installs the fake globals; `answers` are [status, headers?, body?] used in order, then 200. */
export function installBrowser({ answers = [], beaconLimitBytes = 65536 } = {}) {
  const requests = [];
  const beacons = [];
  const refused = [];
  let beaconBytes = 0;
  globalThis.window = new EventTarget();
  globalThis.document = { visibilityState: "visible", referrer: "", title: "t" };
  globalThis.location = { pathname: "/p", href: "http://127.0.0.1/p" };
  const navigatorFake = {
    onLine: true,
    sendBeacon(url, body) {
      const bytes = Buffer.byteLength(body);
      if (beaconBytes + bytes > beaconLimitBytes) {
        refused.push(bytes);
        return false;
      }
      beaconBytes += bytes;
      beacons.push({ url, body: JSON.parse(body), bytes });
      return true;
    },
  };
  Object.defineProperty(globalThis, "navigator", { value: navigatorFake, configurable: true });
  globalThis.localStorage = new MemoryStorage();
  globalThis.fetch = async (url, init) => {
    const body = JSON.parse(init.body);
    requests.push({ url, init, body, bytes: Buffer.byteLength(init.body), at: Date.now() });
    const [status, headers = {}, answer] = answers.shift() ?? [200];
    if (status === 0) throw new TypeError("network error");
    const fallback = status === 200 ? { accepted: body.batch.length, rejected: [] } : { error: "bad_request" };
    return new Response(JSON.stringify(answer ?? fallback), { status, headers });
  };
  return { requests, beacons, refused };
}

export const until = async (predicate, timeoutMs = 5000) => {
  const deadline = Date.now() + timeoutMs;
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error("timed out");
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
};

export const played = (i, pad = "") => ({
  event: "track_played",
  version: 2,
  properties: { track_id: `t-${i}${pad}`, artist_id: "a", position_ms: i },
});
