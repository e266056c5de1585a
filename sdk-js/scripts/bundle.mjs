// The script-tag build: one minified IIFE file that sets window.EventCapture. The ESM build and
// the types come from tsc (dist/*.js, dist/*.d.ts); esbuild is used only because tsc neither
// bundles nor minifies.
import { build } from "esbuild";

await build({
  entryPoints: ["src/script.ts"],
  outfile: "dist/capture.iife.js",
  bundle: true,
  minify: true,
  format: "iife",
  globalName: "EventCapture",
  target: "es2020",
  legalComments: "none",
  logLevel: "warning",
});
