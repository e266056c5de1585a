// Stage: the persistent queue. One localStorage entry per event (`<prefix>q:<event_id>`), written
// at track() time, so tabs of one origin share the queue without read-modify-write races and a
// reload or crash loses nothing. Storage that is missing, disabled or full falls back to memory
// (counted, never thrown). Must not send anything: the client decides what goes out.

export interface Entry {
  id: string;
  json: string;
  bytes: number;
}

/** UTF-8 length without allocating (browsers count the 64 KiB keepalive budget in bytes). */
export function utf8Bytes(s: string): number {
  let n = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x80) n += 1;
    else if (c < 0x800) n += 2;
    else if (c >= 0xd800 && c <= 0xdbff) {
      n += 4; // a surrogate pair is one 4-byte code point
      i++;
    } else n += 3;
  }
  return n;
}

/** localStorage if it exists and works here; null in Node, sandboxed iframes, storage off. */
export function defaultStorage(): Storage | null {
  try {
    const s = (globalThis as { localStorage?: Storage }).localStorage;
    if (!s) return null;
    const probe = "__ec_probe";
    s.setItem(probe, "1");
    s.removeItem(probe);
    return s;
  } catch {
    return null;
  }
}

export class Queue {
  /** events that could not be stored (quota, storage off): sent from memory by this tab */
  private readonly memory = new Map<string, string>();
  storageErrors = 0;

  constructor(
    private readonly storage: Storage | null,
    private readonly prefix: string,
  ) {}

  /** Store one event; on a storage error it is kept in memory instead (and counted). */
  put(id: string, json: string): void {
    if (this.storage) {
      try {
        this.storage.setItem(this.prefix + id, json);
        return;
      } catch {
        this.storageErrors++; // QuotaExceededError and friends: keep it, in memory
      }
    }
    this.memory.set(id, json);
  }

  /** Every queued event of every tab, oldest first (UUIDv7 ids sort by time). */
  entries(): Entry[] {
    const out = new Map<string, string>(this.memory);
    const s = this.storage;
    if (s) {
      try {
        for (let i = 0; i < s.length; i++) {
          const key = s.key(i);
          if (key === null || !key.startsWith(this.prefix)) continue;
          const json = s.getItem(key);
          if (json !== null) out.set(key.slice(this.prefix.length), json);
        }
      } catch {
        this.storageErrors++;
      }
    }
    return [...out.keys()].sort().map((id) => {
      const json = out.get(id)!;
      return { id, json, bytes: utf8Bytes(json) };
    });
  }

  remove(ids: Iterable<string>): void {
    for (const id of ids) {
      this.memory.delete(id);
      try {
        this.storage?.removeItem(this.prefix + id);
      } catch {
        this.storageErrors++;
      }
    }
  }

  /** How many events are queued, across tabs, without reading them. */
  count(): number {
    let n = this.memory.size;
    try {
      const s = this.storage;
      if (s) for (let i = 0; i < s.length; i++) if (s.key(i)?.startsWith(this.prefix)) n++;
    } catch {
      this.storageErrors++;
    }
    return n;
  }
}
