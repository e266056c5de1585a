// Stage: the client. track() stamps an event (UUIDv7 id, time, identity), stores it in the shared
// queue and returns; a timer drains the queue in batches to POST /v1/batch, one tab at a time
// (Web Locks), and page hide hands what is left to the browser within the keepalive budget.
// Must never throw after enqueue or block the page: every event ends sent, handed off, queued
// or dropped with a reason (stats(), onError).

import type { TrackedEvent } from "./plan.js";
import { sampledIn, uuid4, uuid7 } from "./ids.js";
import { type Entry, Queue, defaultStorage, utf8Bytes } from "./queue.js";

export const VERSION = "0.1.0";
const LIBRARY = { name: "capture-sdk-browser", version: VERSION };
// Browsers give a page one budget of 64 KiB of request bodies (UTF-8 bytes) for all of its
// keepalive fetches and beacons in flight together; a request past it is refused.
export const KEEPALIVE_BUDGET_BYTES = 65536;
// Page hide aims this much under the budget: the URL and headers of each request may be
// counted against it too, and a request over it can be accepted and then fail unseen.
const UNLOAD_HEADROOM_BYTES = 4096;
// `{"sent_at":"2026-11-26T12:00:01.000Z","batch":[` ... `]}` around the events
const ENVELOPE_BYTES = 64;

/** Any event of a tracking plan, as `capture schemas codegen` generates them. */
export interface PlanEvent {
  event: string;
  version: number;
  properties: object;
}

export interface EventOptions {
  user_id?: string | null;
  anonymous_id?: string;
  occurred_at?: Date | string;
  context?: Record<string, unknown>;
}

/**
 * What track() takes: event `N` version `V` of the plan with that version's properties, and
 * the identity and time fields beside them. Generic in N and V so that tsc checks the
 * properties against the one version named (a misspelt field gets a "did you mean").
 */
export type Trackable<E extends PlanEvent, N extends E["event"] = E["event"], V = E["version"]> = {
  event: N;
  version: V;
  properties: Extract<E, { event: N; version: V }>["properties"];
} & EventOptions;

export type DropReason =
  | "rejected" // the collector's schema check refused it (it is in the dead-letter topic)
  | "collector_refused" // a 4xx other than 408/429 for its whole batch
  | "too_large" // over maxEventBytes once encoded
  | "queue_full" // maxQueueEvents already queued
  | "expired" // older than maxEventAgeMs and still not delivered
  | "closed" // tracked after shutdown()
  | "opted_out"; // queued before optOut() and not yet sent: it never will be

export interface DroppedEvent {
  event_id: string;
  event: string;
  reason: DropReason;
  detail: string;
  errors?: Array<{ path: string; message: string }>;
}

export interface Stats {
  tracked: number;
  /** acknowledged by the collector (by this tab, for any tab's events) */
  sent: number;
  /** handed to the browser by sendBeacon at page hide; the outcome is never known */
  handed_off: number;
  /** failed attempts that will be tried again (not drops) */
  retried: number;
  /** handed to a keepalive fetch at page hide, answer not in yet */
  sending: number;
  /** waiting in the shared queue, every tab's */
  queued: number;
  /** storage writes that failed (quota, storage off) and fell back to memory */
  storage_errors: number;
  /** left out by sampleRates in track(): by design, so not in `tracked` and not a drop */
  sampled_out: number;
  dropped: Partial<Record<DropReason, number>>;
}

export interface Options {
  /** the collector's base URL, e.g. https://collect.example.com */
  endpoint: string;
  /** a browser write key (public; the collector checks the page's origin) */
  writeKey: string;
  batchSize?: number;
  /** a batch closes before its body passes this; keep it under the 64 KiB keepalive budget */
  maxBatchBytes?: number;
  maxEventBytes?: number;
  flushIntervalMs?: number;
  maxQueueEvents?: number;
  maxEventAgeMs?: number;
  backoffBaseMs?: number;
  backoffCapMs?: number;
  retryAfterCapMs?: number;
  /**
   * true (default): CORS-safelisted requests, `text/plain` bodies with the key in the query
   * string (no preflight to lose when the page closes), and navigator.sendBeacon at page
   * hide. false: `application/json` with `Authorization` (a preflight each time the browser's
   * cache of it expires), and keepalive fetch at page hide.
   */
  safelisted?: boolean;
  /** where the queue and ids live; default localStorage when usable, else memory */
  storage?: Storage | null;
  /** track nothing at all (no storage, no network) */
  disabled?: boolean;
  /**
   * true: while the browser sends Global Privacy Control (`navigator.globalPrivacyControl`)
   * or Do Not Track (`navigator.doNotTrack` or `window.doNotTrack` "1"), track() does what it
   * does after optOut(): returns null and counts nothing. Default false: whether a signal
   * binds first-party analytics is the site's legal call, and turning it on drops every
   * such visitor's events, so the SDK does not decide it silently.
   */
  respectPrivacySignals?: boolean;
  /**
   * Per event name, the share of events kept (0..1; names not listed: all). The verdict is
   * deterministic by event_id and the same as the Python SDK's `sample_rates`; a left-out
   * event still gets its event_id from track() and is counted in stats().sampled_out.
   */
  sampleRates?: Record<string, number>;
  onError?: (dropped: DroppedEvent[]) => void;
}

export interface Client<E extends PlanEvent = TrackedEvent> {
  /**
   * Queue an event; returns its event_id (also when sampling leaves it out), or null when
   * disabled, opted out, or silenced by a privacy signal the options honour.
   */
  track<N extends E["event"], V extends Extract<E, { event: N }>["version"]>(
    event: Trackable<E, N, V>,
  ): string | null;
  identify(userId: string, traits?: Record<string, unknown>): string | null;
  page(props?: Record<string, unknown>): string | null;
  /** Forget the user: a new anonymous_id, no user_id. */
  reset(): void;
  /** Resolves true once the queue is empty, false if `timeoutMs` passed first. */
  flush(timeoutMs?: number): Promise<boolean>;
  shutdown(timeoutMs?: number): Promise<boolean>;
  stats(): Stats;
  optOut(): void;
  optIn(): void;
  readonly anonymousId: string;
}

interface Batch {
  entries: Entry[];
  body: string;
  bytes: number;
}

type Result = "done" | "retry";

function noopClient<E extends PlanEvent>(): Client<E> {
  const none = async (): Promise<boolean> => true;
  return {
    track: () => null,
    identify: () => null,
    page: () => null,
    reset() {},
    flush: none,
    shutdown: none,
    stats: () => ({
      tracked: 0,
      sent: 0,
      handed_off: 0,
      retried: 0,
      sending: 0,
      queued: 0,
      storage_errors: 0,
      sampled_out: 0,
      dropped: {},
    }),
    optOut() {},
    optIn() {},
    anonymousId: "",
  };
}

/** Milliseconds since the epoch from a UUIDv7's first 48 bits. */
function idTimeMs(id: string): number {
  return parseInt(id.slice(0, 8) + id.slice(9, 13), 16);
}

export function createClient<E extends PlanEvent = TrackedEvent>(options: Options): Client<E> {
  // SSR (Node, a Next.js server render): no window, so nothing to do and nothing to throw
  if (typeof window === "undefined" || typeof fetch !== "function" || options.disabled) {
    return noopClient<E>();
  }
  const o = {
    batchSize: 100,
    maxBatchBytes: 60_000,
    maxEventBytes: 32_000,
    flushIntervalMs: 1000,
    maxQueueEvents: 1000,
    maxEventAgeMs: 7 * 24 * 3600_000,
    backoffBaseMs: 500,
    backoffCapMs: 30_000,
    retryAfterCapMs: 60_000,
    safelisted: true,
    ...options,
  };
  for (const [name, rate] of Object.entries(o.sampleRates ?? {})) {
    // a programmer error, like a bad sample_rates in the Python SDK: said once, here
    if (typeof rate !== "number" || !(rate >= 0 && rate <= 1)) {
      throw new RangeError(`sampleRates[${JSON.stringify(name)}] must be in [0, 1], got ${String(rate)}`);
    }
  }
  const storage = o.storage === undefined ? defaultStorage() : o.storage;
  const prefix = `ec:${o.writeKey}:`;
  const queue = new Queue(storage, prefix + "q:");
  const base = o.endpoint.replace(/\/+$/, "") + "/v1/batch";
  const url = o.safelisted ? `${base}?write_key=${encodeURIComponent(o.writeKey)}` : base;
  const headers: Record<string, string> = o.safelisted
    ? { "Content-Type": "text/plain" }
    : { "Content-Type": "application/json", Authorization: `Bearer ${o.writeKey}` };
  const nav = (typeof navigator === "undefined" ? {} : navigator) as Partial<Navigator>;

  const memo = new Map<string, string>(); // ids when storage is off
  const read = (k: string): string | null => {
    try {
      return storage?.getItem(prefix + k) ?? memo.get(k) ?? null;
    } catch {
      return memo.get(k) ?? null;
    }
  };
  const write = (k: string, v: string | null): void => {
    if (v === null) memo.delete(k);
    else memo.set(k, v);
    try {
      if (v === null) storage?.removeItem(prefix + k);
      else storage?.setItem(prefix + k, v);
    } catch {
      queue.storageErrors++;
    }
  };

  // made at the first event tracked (or when the page asks for it), so that an opted-out or
  // privacy-signalling visitor gets no identifier stored at all
  let anonymousId = "";
  const aid = (): string => {
    if (!anonymousId) write("aid", (anonymousId = read("aid") ?? uuid4()));
    return anonymousId;
  };
  let userId = read("uid");
  // the one check of every event-making call (track, identify, page): opted out, or a
  // privacy signal the application chose to honour
  const silenced = (): boolean => {
    if (read("optout") === "1") return true;
    if (!o.respectPrivacySignals) return false;
    const n = nav as { globalPrivacyControl?: unknown; doNotTrack?: unknown };
    return (
      n.globalPrivacyControl === true ||
      n.doNotTrack === "1" ||
      (window as { doNotTrack?: unknown }).doNotTrack === "1"
    );
  };

  const counts = { tracked: 0, sent: 0, handed_off: 0, retried: 0, sampled_out: 0 };
  const dropped: Partial<Record<DropReason, number>> = {};
  let timer: ReturnType<typeof setTimeout> | undefined;
  let timerAt = Infinity;
  let retryAt = 0;
  let attempt = 0;
  let sending = false;
  let closed = false;
  // navigator.onLine is read each time: it is right even before its `offline` event arrives
  const online = (): boolean => nav.onLine !== false;
  let keepaliveBytes = 0; // this page's share of the keepalive budget in flight
  // Bytes of the beacons handed to the browser since the page was last visible. A beacon's end
  // is never seen, so they count as holding the budget until the page is visible again; both
  // page-hide events (pagehide and visibilitychange, in either order) share this count, so the
  // second one cannot hand off a second budget's worth (issue 13).
  let beaconBytes = 0;
  const inFlight = new Set<string>(); // being sent by this tab: not to be sent again meanwhile
  const unloading = new Set<string>(); // of those, the ones already out of the queue

  function drop(items: DroppedEvent[]): void {
    if (!items.length) return;
    for (const d of items) dropped[d.reason] = (dropped[d.reason] ?? 0) + 1;
    try {
      o.onError?.(items);
    } catch {
      // the application's callback failing must not break delivery
    }
  }

  const eventName = (e: Entry): string => {
    try {
      return String((JSON.parse(e.json) as { event?: unknown }).event);
    } catch {
      return "";
    }
  };
  const dropEntries = (entries: Entry[], reason: DropReason, detail: string): void => {
    queue.remove(entries.map((e) => e.id));
    drop(entries.map((e) => ({ event_id: e.id, event: eventName(e), reason, detail })));
  };

  function schedule(delayMs: number): void {
    if (closed && delayMs > 0) return;
    const at = Math.max(Date.now() + delayMs, retryAt);
    if (timer !== undefined && timerAt <= at) return;
    clearTimeout(timer);
    timerAt = at;
    timer = setTimeout(
      () => {
        timer = undefined;
        timerAt = Infinity;
        void pump();
      },
      Math.max(0, at - Date.now()),
    );
  }

  /** Oldest events first, closed by count and bytes; expired ones are dropped here. */
  function nextBatch(limitBytes: number, skip: Set<string>): Batch | null {
    const now = Date.now();
    const entries: Entry[] = [];
    const expired: Entry[] = [];
    let bytes = ENVELOPE_BYTES;
    for (const e of queue.entries()) {
      if (skip.has(e.id)) continue;
      if (now - idTimeMs(e.id) > o.maxEventAgeMs) {
        expired.push(e);
        continue;
      }
      if (entries.length >= o.batchSize) break;
      if (entries.length && bytes + e.bytes + 1 > limitBytes) break;
      entries.push(e);
      bytes += e.bytes + 1;
    }
    dropEntries(expired, "expired", `not delivered within ${o.maxEventAgeMs} ms`);
    if (!entries.length) return null;
    const sentAt = new Date().toISOString();
    const body = `{"sent_at":"${sentAt}","batch":[${entries.map((e) => e.json).join(",")}]}`;
    return { entries, body, bytes: utf8Bytes(body) };
  }

  /** One POST; reports rejections and refusals, and says whether the batch must be retried. */
  async function post(batch: Batch, handedOff: boolean): Promise<Result> {
    const keepalive = keepaliveBytes + beaconBytes + batch.bytes <= KEEPALIVE_BUDGET_BYTES;
    if (keepalive) keepaliveBytes += batch.bytes;
    let status = 0;
    let retryAfter: string | null = null;
    let text = "";
    try {
      const response = await fetch(url, {
        method: "POST",
        body: batch.body,
        headers,
        keepalive,
        credentials: "omit",
      });
      status = response.status;
      retryAfter = response.headers.get("Retry-After");
      text = await response.text(); // an unread body keeps holding the keepalive budget
    } catch {
      status = 0; // network error, CORS refusal, offline
    } finally {
      if (keepalive) keepaliveBytes -= batch.bytes;
    }
    const ids = batch.entries.map((e) => e.id);
    if (status === 0 || status === 408 || status === 429 || status >= 500) {
      if (handedOff) for (const e of batch.entries) queue.put(e.id, e.json);
      counts.retried++;
      attempt++;
      const ceiling = Math.min(o.backoffCapMs, o.backoffBaseMs * 2 ** (attempt - 1));
      let delay = Math.random() * ceiling; // full jitter
      const floor = Number(retryAfter);
      if (retryAfter !== null && floor >= 0) delay = Math.max(delay, Math.min(floor * 1000, o.retryAfterCapMs));
      retryAt = Date.now() + delay;
      schedule(delay);
      return "retry";
    }
    attempt = 0;
    let answer: { error?: string; rejected?: Array<{ index: number; errors?: DroppedEvent["errors"] }> } = {};
    try {
      answer = JSON.parse(text) as typeof answer;
    } catch {
      // a body that is not JSON leaves only the status to report
    }
    if (status < 200 || status > 299) {
      dropEntries(batch.entries, "collector_refused", `${status} ${answer.error ?? ""}`.trim());
      return "done";
    }
    queue.remove(ids);
    const rejected = new Set<number>();
    const reports: DroppedEvent[] = [];
    for (const r of answer.rejected ?? []) {
      const e = batch.entries[r.index];
      if (!e || rejected.has(r.index)) continue;
      rejected.add(r.index);
      reports.push({
        event_id: e.id,
        event: eventName(e),
        reason: "rejected",
        detail: (r.errors ?? []).map((x) => `${x.path}: ${x.message}`).join("; "),
        errors: r.errors ?? [],
      });
    }
    counts.sent += batch.entries.length - rejected.size;
    drop(reports);
    return "done";
  }

  // Opted out (here or in another tab of the origin): what is still queued is not sent. A
  // batch the browser already has cannot be recalled; if it fails, it is dropped here next.
  function purgeOptedOut(): boolean {
    if (read("optout") !== "1") return false;
    const left = queue.entries().filter((e) => !inFlight.has(e.id));
    dropEntries(left, "opted_out", "queued before optOut()");
    return true;
  }

  async function drain(): Promise<void> {
    for (;;) {
      if (purgeOptedOut() || !online() || Date.now() < retryAt) return;
      const batch = nextBatch(o.maxBatchBytes, inFlight);
      if (!batch) return;
      for (const e of batch.entries) inFlight.add(e.id);
      try {
        if ((await post(batch, false)) === "retry") return;
      } finally {
        for (const e of batch.entries) inFlight.delete(e.id);
      }
    }
  }

  async function pump(): Promise<void> {
    if (sending) return;
    sending = true;
    try {
      // one tab of the origin sends at a time, so no two tabs send the same stored event;
      // a tab that closes mid-send releases the lock and its unacknowledged events stay stored
      const locks = nav.locks;
      if (locks) {
        await locks.request(prefix + "send", { ifAvailable: true }, async (lock) => {
          if (lock) await drain();
        });
      } else {
        await drain();
      }
    } catch {
      // a lock manager that throws (sandboxed frames) must not stop the queue
    } finally {
      sending = false;
    }
    // offline, the `online` event restarts the timer: no polling while there is no network
    if (queue.count() && online()) schedule(o.flushIntervalMs);
  }

  /** Page hide: hand what is queued to the browser, split within the keepalive budget. */
  function unload(): void {
    // a collector that failed the last attempt (or no network) would lose what is handed to
    // it now: leave the events stored, and the next page of this origin sends them
    if (purgeOptedOut() || attempt > 0 || !online()) return;
    for (;;) {
      const budget = KEEPALIVE_BUDGET_BYTES - UNLOAD_HEADROOM_BYTES;
      const room = Math.min(o.maxBatchBytes, budget - keepaliveBytes - beaconBytes);
      if (room <= ENVELOPE_BYTES) return; // the rest stays stored for the next page
      const batch = nextBatch(room, inFlight);
      if (!batch || batch.bytes > room || !handOff(batch)) return;
    }
  }

  /** One chunk to the browser; false when it would not take it (the chunk stays stored). */
  function handOff(batch: Batch): boolean {
    const ids = batch.entries.map((e) => e.id);
    if (o.safelisted && nav.sendBeacon) {
      let ok = false;
      try {
        ok = nav.sendBeacon(url, batch.body);
      } catch {
        ok = false;
      }
      if (ok) {
        beaconBytes += batch.bytes;
        queue.remove(ids);
        counts.handed_off += ids.length;
        return true;
      }
      // refused (budget, size): split in two and try each half, oldest first
      if (batch.entries.length > 1) {
        const half = Math.ceil(batch.entries.length / 2);
        const [a, b] = [batch.entries.slice(0, half), batch.entries.slice(half)];
        return handOff(rebatch(a)) && handOff(rebatch(b));
      }
      // One event refused: the page's budget is spent (Chromium counts beacons and keepalive
      // fetches against one quota per document). A keepalive fetch now would be refused too,
      // and only asynchronously: the page is gone before the rejection could put the events
      // back, so they would be lost. They stay stored for the next page instead.
      return false;
    }
    if (keepaliveBytes + beaconBytes + batch.bytes > KEEPALIVE_BUDGET_BYTES) return false;
    // removed now so that the next page does not send them again; put back if the page lives
    // long enough to see a retriable answer
    queue.remove(ids);
    for (const id of ids) {
      inFlight.add(id);
      unloading.add(id);
    }
    void post(batch, true).finally(() => {
      for (const id of ids) {
        inFlight.delete(id);
        unloading.delete(id);
      }
    });
    return true;
  }

  function rebatch(entries: Entry[]): Batch {
    const body = `{"sent_at":"${new Date().toISOString()}","batch":[${entries.map((e) => e.json).join(",")}]}`;
    return { entries, body, bytes: utf8Bytes(body) };
  }

  const onHide = (): void => {
    if (document.visibilityState === "hidden") unload();
    // Visible again: a live page sees every answer, so a fetch that the beacons still in flight
    // make the browser refuse is only retried later, never lost.
    else beaconBytes = 0;
  };
  const onOnline = (): void => {
    retryAt = 0;
    schedule(0);
  };
  // on window: a pagehide listener on document never fires
  window.addEventListener("pagehide", unload);
  window.addEventListener("visibilitychange", onHide);
  window.addEventListener("online", onOnline);

  function track(event: Trackable<E, E["event"], number>): string | null {
    if (!event || typeof event.event !== "string" || typeof event.version !== "number") {
      throw new TypeError("track() needs {event: string, version: number, properties}");
    }
    if (silenced()) return null;
    const id = uuid7();
    const rate = o.sampleRates?.[event.event];
    if (rate !== undefined && !sampledIn(id, rate)) {
      counts.sampled_out++; // by design: not tracked, not a drop, no onError (as in Python)
      return id;
    }
    counts.tracked++;
    const at = event.occurred_at ?? new Date();
    const wire = {
      event: event.event,
      version: event.version,
      event_id: id,
      occurred_at: typeof at === "string" ? at : at.toISOString(),
      user_id: event.user_id === undefined ? userId : event.user_id,
      anonymous_id: event.anonymous_id ?? aid(),
      properties: event.properties,
      context: {
        library: LIBRARY,
        page: { path: location.pathname, url: location.href, referrer: document.referrer },
        ...event.context,
      },
    };
    const json = JSON.stringify(wire);
    const one = { event_id: id, event: event.event };
    if (closed) {
      drop([{ ...one, reason: "closed", detail: "tracked after shutdown()" }]);
    } else if (utf8Bytes(json) > o.maxEventBytes) {
      drop([{ ...one, reason: "too_large", detail: `more than ${o.maxEventBytes} bytes` }]);
    } else if (queue.count() >= o.maxQueueEvents) {
      drop([{ ...one, reason: "queue_full", detail: `${o.maxQueueEvents} events queued` }]);
    } else {
      queue.put(id, json);
      schedule(queue.count() >= o.batchSize ? 0 : o.flushIntervalMs);
    }
    return id;
  }

  async function flush(timeoutMs = 10_000): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      await pump();
      if (!queue.count()) return true;
      if (Date.now() >= deadline) return false;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }

  return {
    track,
    identify(id, traits = {}) {
      if (silenced()) return null; // not even the user id is kept for an opted-out visitor
      write("uid", (userId = id));
      return track({ event: "identify", version: 1, properties: { traits } } as Trackable<E, E["event"], number>);
    },
    page(props = {}) {
      const properties = { path: location.pathname, url: location.href, title: document.title, ...props };
      return track({ event: "page", version: 1, properties: { properties } } as Trackable<E, E["event"], number>);
    },
    reset() {
      write("uid", (userId = null));
      anonymousId = "";
      write("aid", null); // the next event makes a new one
    },
    flush,
    async shutdown(timeoutMs = 10_000) {
      const ok = await flush(timeoutMs);
      closed = true;
      clearTimeout(timer);
      window.removeEventListener("pagehide", unload);
      window.removeEventListener("visibilitychange", onHide);
      window.removeEventListener("online", onOnline);
      return ok;
    },
    stats: () => ({
      ...counts,
      sending: unloading.size,
      queued: queue.count(),
      storage_errors: queue.storageErrors,
      dropped: { ...dropped },
    }),
    optOut: () => {
      write("optout", "1");
      purgeOptedOut();
    },
    optIn: () => write("optout", null),
    get anonymousId() {
      return aid();
    },
  };
}
