#!/usr/bin/env bash
# The main job: the collector on its embedded file sink, plus a short SDK demo against it.
# Keeps serving until Ctrl-C; DEMO_EXIT=1 stops it after the demo.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
port=${CAPTURE_PORT:-8080}
data_dir=${CAPTURE_DATA_DIR:-data}
.venv/bin/capture serve --sink file --port "$port" --data-dir "$data_dir" &
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
echo "collector still serving on http://127.0.0.1:$port (metrics at /metrics); Ctrl-C to stop"
wait $collector
