// SSR: in Node without a window (a Next.js server render), import and calls do nothing, throw nothing.
import assert from "node:assert/strict";
import { test } from "node:test";

test("createClient in Node returns a client that does nothing", async () => {
  const { createClient } = await import("../dist/index.js");
  const client = createClient({ endpoint: "http://127.0.0.1:1", writeKey: "k" });
  assert.equal(client.track({ event: "page_viewed", version: 1, properties: { path: "/" } }), null);
  assert.equal(client.page(), null);
  assert.equal(await client.flush(), true);
  assert.equal(client.stats().tracked, 0);
  assert.equal(typeof globalThis.localStorage, "undefined");
});
