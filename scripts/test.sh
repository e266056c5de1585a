#!/usr/bin/env bash
# The whole test suite: install, lint, type-check, then pytest including the real-Kafka tests
# (devtools/kafka.py fetches the broker with Maven and starts it on a free loopback port).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
.venv/bin/ruff format --check .
.venv/bin/ruff check .
.venv/bin/mypy
.venv/bin/capture schemas check > /dev/null
.venv/bin/python -m devtools.kafka fetch > /dev/null
.venv/bin/python -m collector.spark.session fetch > /dev/null
scripts/browser-deps.sh
scripts/ops-deps.sh
# the slowest tests are named at the end, so that a run over its time budget says where it went
.venv/bin/python -m pytest --durations=25 "$@"
