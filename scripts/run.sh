#!/usr/bin/env bash
# The main job: the collector on its embedded file sink, a short SDK demo against it, and the
# browser SDK's demo page at /demo. Keeps serving until Ctrl-C; DEMO_EXIT=1 stops it after the
# Python demo, and then builds and serves no page (nobody would have time to click it).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
port=${CAPTURE_PORT:-8080}
data_dir=${CAPTURE_DATA_DIR:-data}
# the collector's default CAPTURE_DEMO_BUNDLE, relative to the repo root where it runs
bundle=sdk-js/dist/capture.iife.js
demo_page=0
# Each step's failure is returned by hand: this runs as an `if` condition, where set -e is off,
# so that an npm that cannot install or build (offline, an old Node.js) costs the demo page
# only, never the collector and the Python demo.
build_demo_page() {
    scripts/js-deps.sh || return 1
    # build only when the bundle is missing or older than something it is built from
    if [[ ! -f $bundle || -n $(find sdk-js/src sdk-js/scripts sdk-js/package.json \
        sdk-js/package-lock.json sdk-js/tsconfig.json -newer "$bundle" -print -quit) ]]; then
        echo "run: building the browser SDK (npm run build in sdk-js)" >&2
        (cd sdk-js && npm run build --silent) >&2 || return 1
    fi
}
if [[ "${DEMO_EXIT:-0}" != 1 ]]; then
    if command -v npm > /dev/null; then
        if build_demo_page; then
            demo_page=1
        else
            echo "run: the browser SDK did not build (see above), so no demo page" >&2
        fi
    else
        echo "run: npm not found, so no demo page (Node.js 20+ builds the browser SDK)" >&2
    fi
fi
.venv/bin/capture serve --sink file --port "$port" --data-dir "$data_dir" --demo "$demo_page" &
collector=$!
trap 'kill -TERM $collector 2>/dev/null || true; wait $collector 2>/dev/null || true' EXIT
trap 'exit 130' INT TERM
.venv/bin/python - "$port" <<'PY'
import sys, time, urllib.request
url = f"http://127.0.0.1:{sys.argv[1]}/readyz"
deadline = time.monotonic() + 30
while True:
    try:
        urllib.request.urlopen(url, timeout=1)
        break
    except OSError:
        if time.monotonic() > deadline:
            sys.exit(f"collector not ready at {url}")
        time.sleep(0.2)
PY
.venv/bin/python examples/quickstart.py --endpoint "http://127.0.0.1:$port" --data-dir "$data_dir"
if [[ "${DEMO_EXIT:-0}" == 1 ]]; then
    exit 0
fi
if [[ $demo_page == 1 ]]; then
    echo "demo page: http://127.0.0.1:$port/demo (its buttons track events through the browser SDK into $data_dir)"
fi
echo "collector still serving on http://127.0.0.1:$port (metrics at /metrics); Ctrl-C to stop"
wait $collector
