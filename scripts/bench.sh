#!/usr/bin/env bash
# The benchmark suite (benchmarks/README.md): install the project, its dev tools and the bench
# group into .venv, fetch the Kafka broker's jars, then run every benchmark in one go.
# Arguments go to `python -m benchmarks.run` (--quick, --soak-s 600, --stages ..., --profile).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
stamp=.venv/.installed-bench
want=$(cat pyproject.toml scripts/bootstrap.sh scripts/bench.sh | sha256sum | cut -d' ' -f1)
if [[ ! -f $stamp || "$(cat "$stamp")" != "$want" ]]; then
    echo "bench: installing the bench dependency group into .venv" >&2
    .venv/bin/python -m pip install --quiet --editable . --group bench
    echo "$want" > "$stamp"
fi
.venv/bin/python -m devtools.kafka fetch > /dev/null
exec .venv/bin/python -m benchmarks.run "$@"
