#!/usr/bin/env bash
# sdk-js's dev tools (TypeScript, esbuild), pinned by its package-lock.json: `npm ci` when
# node_modules is missing or older than the lock file, else a no-op. Installs no browser
# (scripts/browser-deps.sh adds Chromium for the tests; `make run` needs only this).
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ ! -f sdk-js/node_modules/.package-lock.json ||
    sdk-js/package-lock.json -nt sdk-js/node_modules/.package-lock.json ]]; then
    echo "js-deps: npm ci in sdk-js" >&2
    (cd sdk-js && npm ci --no-audit --no-fund --loglevel=error)
fi
