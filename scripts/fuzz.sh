#!/usr/bin/env bash
# A longer, randomised run of the HTTP fuzzer (tests/unit/test_fuzz.py; CI runs it derandomised).
# FUZZ_SEED (default: a fresh random one) and FUZZ_MAX_EXAMPLES (default 5000 per test) pick
# the search; on a failure the seed is printed, and the same command with it replays the search.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
seed=${FUZZ_SEED:-$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')}
examples=${FUZZ_MAX_EXAMPLES:-5000}
echo "fuzz: seed $seed, $examples examples per test" >&2
status=0
FUZZ_SEED=$seed FUZZ_MAX_EXAMPLES=$examples \
    .venv/bin/python -m pytest tests/unit/test_fuzz.py -p no:cacheprovider -q "$@" || status=$?
if [[ $status -ne 0 ]]; then
    echo "fuzz: FAILED with seed $seed; replay: make fuzz FUZZ_SEED=$seed FUZZ_MAX_EXAMPLES=$examples" >&2
    exit "$status"
fi
echo "fuzz: no failure with seed $seed" >&2
