# The two commands of the README, plus `make bench`. All install what they need into .venv first.
.PHONY: run test bench

run:
	scripts/run.sh

test:
	scripts/test.sh

# Benchmarks of the ingest path (benchmarks/README.md); `make bench ARGS=--quick` for a smoke run.
bench:
	scripts/bench.sh $(ARGS)
