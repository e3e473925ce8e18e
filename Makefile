# The two commands of the README: `make run` and `make test`. Both set everything up.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test test-floor install lock lint typecheck imports chaos bench soak clean FORCE

# The package is installed in strict editable mode: a tree of links to the source files,
# which mypy and import-linter can follow. Edits show at once; a module added, removed or
# renamed needs a reinstall, so the install also depends on the list of package files.
PACKAGE_DIRS := shell core classifiers consumers sinks
MODULES := $(sort $(shell find $(PACKAGE_DIRS) -name '*.py' -o -name '*.lua' -o -name '*.json' -o -name py.typed))
MODULE_LIST := $(VENV)/.modules

$(MODULE_LIST): FORCE
	@mkdir -p $(VENV)
	@echo '$(MODULES)' | cmp -s - $@ || echo '$(MODULES)' > $@

# What gets installed: the package, the embedded servers and the `test` and `bench` extras
# (tests/bench runs every benchmark variant, Celery included, so the suite needs the
# benchmark tools too). Versions come from constraints/tested.txt, the versions the
# container image ships: `make test` runs on exactly those. `make lock` moves them on.
EXTRAS := embedded,test,bench
TESTED := constraints/tested.txt
FLOOR := constraints/floor.txt

# $(call venv,DIR,CONSTRAINTS): a venv in DIR with the package installed under CONSTRAINTS.
define venv
	test -x $(1)/bin/python || $(PYTHON) -m venv $(1)
	$(1)/bin/python -m pip install --quiet --upgrade pip
	$(1)/bin/python -m pip install --quiet -c $(2) -e '.[$(EXTRAS)]' \
		--config-settings editable_mode=strict
endef

$(STAMP): pyproject.toml $(TESTED) $(MODULE_LIST)
	$(call venv,$(VENV),$(TESTED))
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

## The suite on the lowest versions pyproject.toml allows (constraints/floor.txt), in its
## own venv: a floor that no longer works fails here, not on a user's machine.
VENV_FLOOR := .venv-floor
FLOOR_STAMP := $(VENV_FLOOR)/.installed

$(FLOOR_STAMP): pyproject.toml $(FLOOR) $(MODULE_LIST)
	$(call venv,$(VENV_FLOOR),$(FLOOR))
	touch $(FLOOR_STAMP)

# ruff and import-linter check the code the same on any library version; mypy does not (it
# reads the libraries' type hints), so it runs on the tested versions only, in `make test`.
test-floor: $(FLOOR_STAMP)
	$(VENV_FLOOR)/bin/python -m pytest -q
	$(VENV_FLOOR)/bin/ruff check .
	$(VENV_FLOOR)/bin/lint-imports

## Move constraints/tested.txt to the newest versions pyproject.toml allows (a fresh venv,
## no constraints); then `make test` installs and tests them.
lock:
	rm -rf .venv-lock
	$(PYTHON) -m venv .venv-lock
	.venv-lock/bin/python -m pip install --quiet --upgrade pip
	.venv-lock/bin/python -m pip install --quiet '.[$(EXTRAS)]'
	{ echo '# pip freeze of the venv `make test` runs in (written by `make lock`): the container'; \
	  echo '# image and `make install` install with these. Not the package itself.'; \
	  .venv-lock/bin/python -m pip freeze --all --exclude pomocore --exclude pip; } > $(TESTED)
	rm -rf .venv-lock

## The layering (core → classifiers | sinks → consumers → shell), as import-linter contracts.
imports: $(STAMP)
	$(BIN)/lint-imports

lint: $(STAMP)
	$(BIN)/ruff check .

typecheck: $(STAMP)
	$(BIN)/mypy

## The long fault-injection runs, one Valkey and 6 shards on a 3-node cluster (docs/guarantees.md).
chaos: $(STAMP)
	POMOCORE_CHAOS_LONG=1 $(BIN)/python -m pytest -q tests/chaos

## The benchmark harness (benchmarks/README.md); options: make bench ARGS="--quick".
bench: $(STAMP)
	$(BIN)/python -m benchmarks $(ARGS)

## Half the measured maximum rate for 10 minutes under 50 HTTP readers; fails on growth
## (RSS, lag, latency). SOAK_ARGS="--duration-s 60" for a shorter one.
soak: $(STAMP)
	$(BIN)/python -m benchmarks.soak $(SOAK_ARGS)

clean:
	rm -rf $(VENV) $(VENV_FLOOR) .venv-lock .data .pytest_cache .mypy_cache .ruff_cache build
