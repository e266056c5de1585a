#!/usr/bin/env bash
# Create .venv and install the project with its dev tools; a no-op when nothing changed.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
stamp=.venv/.installed
want=$(cat pyproject.toml sdk-python/pyproject.toml sdk-python/hatch_build.py scripts/bootstrap.sh | sha256sum | cut -d' ' -f1)
if [[ -x .venv/bin/python && -f $stamp && "$(cat "$stamp")" == "$want" ]]; then
    exit 0
fi
echo "bootstrap: installing event-capture and its dev tools into .venv" >&2
[[ -x .venv/bin/python ]] || "$PYTHON" -m venv .venv
# pip >= 25.1 reads [dependency-groups] (PEP 735)
.venv/bin/python -m pip install --quiet --upgrade "pip>=25.1"
# Both distributions, editable: the collector's pins event-capture-sdk, which is found here (in
# sdk-python/), not on an index. Both put the repo root on sys.path, so every package is live.
.venv/bin/python -m pip install --quiet --editable ./sdk-python --editable . --group dev
echo "$want" > "$stamp"
