#!/usr/bin/env bash
# The full fault catalogue (docs/reliability.md): the fault tier that `make test` runs plus the
# longer scenarios, on a real three-broker cluster behind fault proxies. The table of verdicts
# is printed at the end and written to $EVENT_CAPTURE_FAULTS_TABLE (a temporary file by default).
# Arguments go to pytest (e.g. -k rolling).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
.venv/bin/python -m devtools.kafka fetch > /dev/null
export EVENT_CAPTURE_FAULTS=all
export EVENT_CAPTURE_FAULTS_TABLE="${EVENT_CAPTURE_FAULTS_TABLE:-${TMPDIR:-/tmp}/event-capture-faults.md}"
echo "faults: verdict table -> $EVENT_CAPTURE_FAULTS_TABLE" >&2
exec .venv/bin/python -m pytest tests/integration/faults -p no:cacheprovider "$@"
