# The two commands of the README, plus `make bench`. All install what they need into .venv first.
.PHONY: run test bench faults fuzz wheels

run:
	scripts/run.sh

test:
	scripts/test.sh

# Benchmarks of the ingest path (benchmarks/README.md); `make bench ARGS=--quick` for a smoke run.
bench:
	scripts/bench.sh $(ARGS)

# The whole fault catalogue on a three-broker cluster (docs/reliability.md); `make test` runs
# its shorter tier. `make faults ARGS="-k rolling"` for one scenario.
faults:
	scripts/faults.sh $(ARGS)

# The HTTP fuzzer, randomised and longer than CI's fixed-seed run; prints the seed of a failure.
# `make fuzz FUZZ_SEED=123 FUZZ_MAX_EXAMPLES=20000` replays or extends a search.
fuzz:
	FUZZ_SEED=$(FUZZ_SEED) FUZZ_MAX_EXAMPLES=$(FUZZ_MAX_EXAMPLES) scripts/fuzz.sh $(ARGS)

# The SDK's and the collector's wheels (event-capture-sdk, event-capture) into dist/.
wheels:
	scripts/bootstrap.sh
	scripts/wheels.sh
