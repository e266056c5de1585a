// Stage: identifiers. UUIDv7 event ids (RFC 9562: 48-bit Unix ms, a counter, random bits), so
// that ids sort by creation time and the shared queue reads back oldest first, and sampling by
// event_id. No storage here.

function randomBytes(n: number): Uint8Array {
  const bytes = new Uint8Array(n);
  const c = (globalThis as { crypto?: Crypto }).crypto;
  if (c && c.getRandomValues) c.getRandomValues(bytes);
  // without Web Crypto (very old runtimes) ids stay unique enough for dedup, not unguessable
  else for (let i = 0; i < n; i++) bytes[i] = (Math.random() * 256) | 0;
  return bytes;
}

function format(b: Uint8Array): string {
  let s = "";
  for (let i = 0; i < 16; i++) {
    s += (b[i]! + 256).toString(16).slice(1);
    if (i === 3 || i === 5 || i === 7 || i === 9) s += "-";
  }
  return s;
}

let lastMs = -1;
let seq = 0;

/**
 * A UUIDv7, monotonic within this page: ids of one millisecond count up in the 12-bit rand_a
 * field (RFC 9562 6.2, method 1), so the queue's sort by id is the order of track() calls.
 */
export function uuid7(nowMs: number = Date.now()): string {
  const b = randomBytes(16);
  let ms = Math.max(nowMs, lastMs);
  if (ms === lastMs) {
    seq++;
    if (seq > 0xfff) {
      ms = ++lastMs; // the counter ran out: borrow the next millisecond
      seq = 0;
    }
  } else {
    lastMs = ms;
    seq = b[7]! & 0x3ff; // a random start with room to count up
  }
  for (let i = 5; i >= 0; i--) {
    b[i] = ms % 256;
    ms = Math.floor(ms / 256);
  }
  b[6] = 0x70 | (seq >> 8); // version 7 and the counter's high bits
  b[7] = seq & 0xff;
  b[8] = 0x80 | (b[8]! & 0x3f); // variant 10
  return format(b);
}

/** A random UUIDv4, for anonymous ids (no creation time in them). */
export function uuid4(): string {
  const b = randomBytes(16);
  b[6] = 0x40 | (b[6]! & 0x0f);
  b[8] = 0x80 | (b[8]! & 0x3f);
  return format(b);
}

// Sampling reads the last 12 hex digits of a UUIDv7 event_id (48 random bits) and keeps the
// event when they are below rate * 2^48, exactly as the Python SDK's sample_rates do
// (capture_sdk/_intake.py), so one event_id gets one verdict in both SDKs and on every retry.
// Both numbers stay below 2^53, so the arithmetic is exact in a double.
const SAMPLE_SPACE = 2 ** 48;

/** Whether an event with this id is kept at `rate` (0..1); deterministic by id. */
export function sampledIn(eventId: string, rate: number): boolean {
  return parseInt(eventId.slice(-12), 16) < Math.floor(rate * SAMPLE_SPACE);
}
