// The browser SDK's public names. Importing this module does nothing by itself (no globals, no
// listeners, no storage): only createClient() does, and only in a browser.

export { createClient, KEEPALIVE_BUDGET_BYTES, VERSION } from "./client.js";
export type {
  Client,
  DropReason,
  DroppedEvent,
  EventOptions,
  Options,
  PlanEvent,
  Stats,
  Trackable,
} from "./client.js";
export type * from "./plan.js";
