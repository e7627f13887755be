# The two set-up commands are `make demo` and `make test`; both depend on `make install`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install demo test lint policy-test bench load soak clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

demo: install
	$(BIN)/gateway demo

lint: install
	$(BIN)/ruff check gateway adapters tests load
	$(BIN)/mypy

policy-test: install
	$(BIN)/gateway policy validate policies
	$(BIN)/gateway policy test policies --coverage --threshold 95

test: install lint
	$(BIN)/gateway policy validate policies
	$(BIN)/gateway policy test policies --coverage --threshold 95
	$(BIN)/python -m pytest -n 2 -p no:cacheprovider tests

bench: install
	$(BIN)/python -m pytest -p no:cacheprovider --benchmark-enable --benchmark-only load/bench

load: install
	bash load/run.sh

soak: install
	$(BIN)/python -m tests.hostile.soak --duration 300

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build *.egg-info
