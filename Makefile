# The two commands of the README:
#   make demo   a working tunnel on loopback, with throwaway keys
#   make test   lint, type checks and the whole test suite (OpenSSH tests need ssh and sshd)
# Both create .venv on first use and install this checkout into it.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test check install bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.deps: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q ".[dev]"
	touch $@

# A regular (not editable) install, so twistd finds the plugins from any directory; redone on
# every run so the installed copy is the code in front of you.
install: $(VENV)/.deps
	$(BIN)/python -m pip install -q --no-deps --force-reinstall .

demo: install
	$(BIN)/python examples/demo.py

check: $(VENV)/.deps
	$(BIN)/ruff check --no-cache .
	$(BIN)/ruff format --check --no-cache .
	$(BIN)/mypy

test: install check
	RFWD_REQUIRE_INSTALLED=1 $(BIN)/python -m twisted.trial --jobs=2 tests

# Throughput, connection rate and memory against OpenSSH, on loopback (see benchmarks/README.md).
bench: install
	$(BIN)/python benchmarks/run.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info _trial_temp* .mypy_cache .ruff_cache
