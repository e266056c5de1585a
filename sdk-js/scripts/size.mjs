// The size budget: the script-tag build, minified and gzipped, must stay under BUDGET_BYTES.
// Exits 1 (failing `npm run size` and the pytest that runs it) when it grows past.
import { readFileSync } from "node:fs";
import { gzipSync } from "node:zlib";

const BUDGET_BYTES = 5 * 1024;
const file = new URL("../dist/capture.iife.js", import.meta.url);
const raw = readFileSync(file);
const gzipped = gzipSync(raw, { level: 9 }).length;
console.log(`dist/capture.iife.js: ${raw.length} B minified, ${gzipped} B gzipped (budget ${BUDGET_BYTES} B)`);
if (gzipped > BUDGET_BYTES) {
  console.error(`size budget exceeded by ${gzipped - BUDGET_BYTES} B`);
  process.exit(1);
}
