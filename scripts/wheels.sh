#!/usr/bin/env bash
# `make wheels`: build the project's two Python distributions as wheels into dist/ (or into the
# directory given): event-capture-sdk (sdk-python/pyproject.toml) and event-capture, the
# collector (./pyproject.toml). Wheels only: the SDK's packages sit outside sdk-python/, where
# an sdist built there could not reach them. Touches no venv; pip fetches hatchling into an
# isolated build environment, as any installer building from this repo would.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-dist}
PYTHON=${PYTHON:-.venv/bin/python}
mkdir -p "$out"
rm -f "$out"/event_capture-*.whl "$out"/event_capture_sdk-*.whl
"$PYTHON" -m pip wheel --quiet --no-deps --wheel-dir "$out" ./sdk-python .
ls "$out"/event_capture-*.whl "$out"/event_capture_sdk-*.whl
