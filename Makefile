# The two set-up commands are `make demo` and `make test`; both depend on `make install`.
# `make install` installs the gateway and its runtime dependencies only; `make test`, `make bench` and
# `make load` add the tools they need (the extras in pyproject.toml), each once, with its own stamp.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP       := $(VENV)/.installed
TEST_STAMP  := $(VENV)/.installed-test
BENCH_STAMP := $(VENV)/.installed-bench
LOAD_STAMP  := $(VENV)/.installed-load
PIP    := $(BIN)/python -m pip install --quiet --disable-pip-version-check
# `make demo DEMO_ARGS="--base-port 9080"` when 8080-8082 are taken
DEMO_ARGS ?=

.PHONY: install install-test install-bench install-load demo test lint policy-test bench load soak clean

install: $(STAMP)
install-test: $(TEST_STAMP)
install-bench: $(BENCH_STAMP)
install-load: $(LOAD_STAMP)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(PIP) -e .
	@touch $@

$(TEST_STAMP): $(STAMP)
	$(PIP) -e '.[test]'
	@touch $@

$(BENCH_STAMP): $(STAMP)
	$(PIP) -e '.[bench]'
	@touch $@

$(LOAD_STAMP): $(STAMP)
	$(PIP) -e '.[load]'
	@touch $@

demo: install
	$(BIN)/gateway demo $(DEMO_ARGS)

lint: install-test
	$(BIN)/ruff check gateway tests load
	$(BIN)/mypy

policy-test: install
	$(BIN)/gateway policy validate policies
	$(BIN)/gateway policy test policies --coverage --threshold 95

test: install-test lint
	$(BIN)/gateway policy validate policies
	$(BIN)/gateway policy test policies --coverage --threshold 95
	$(BIN)/python -m pytest -n 2 -p no:cacheprovider tests

# Every micro-benchmark, then each one against the committed baseline (load/bench/baseline.json) as a
# ratio with the machine's speed removed; steps that grew by more than 30% are listed. Never fails on a
# figure (`python -m load.bench.compare ... --strict` does); after a deliberate change:
# `python -m load.bench.compare load/results/bench.json --write-baseline`.
bench: install-bench
	@mkdir -p load/results
	$(BIN)/python -m pytest -p no:cacheprovider --benchmark-enable --benchmark-only \
	  --benchmark-json=load/results/bench.json load/bench
	$(BIN)/python -m load.bench.compare load/results/bench.json

load: install-load
	bash load/run.sh

soak: install-test install-load
	$(BIN)/python -m tests.hostile.soak --duration 300

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build *.egg-info
