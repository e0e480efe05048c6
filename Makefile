# The few commands people type. `make demo` sets up and runs the main job;
# `make test` installs what the tests need and runs them (what CI runs).
#
# Everything goes into a virtual environment: the active one when there is
# one ($VIRTUAL_ENV), else ./.venv, created on first use. Run the CLI from it
# (`. .venv/bin/activate`, then `speechvq --help`).
ifdef VIRTUAL_ENV
PYTHON ?= $(VIRTUAL_ENV)/bin/python
VENV_PYTHON :=
else
PYTHON ?= .venv/bin/python
VENV_PYTHON := .venv/bin/python
endif
PIP = $(PYTHON) -m pip
# The exact versions CI tested (pyproject.toml holds the ranges).
CONSTRAINTS = -c constraints.txt

.PHONY: install install-test demo test test-all test-slow lock lint format bench

.venv/bin/python:
	python3 -m venv .venv

# torch first, pinned to the CPU build that 2.13.0 resolves to here: installing
# the package first would pull the newest CUDA build (gigabytes).
install: $(VENV_PYTHON)
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e ".[dev]" $(CONSTRAINTS)

# The package with the extras the test suite exercises (scorers, readers, plots, numba).
install-test: install
	$(PIP) install -q -e ".[test]" $(CONSTRAINTS)

demo: install
	$(PYTHON) -m speechvq.demo

# The suite without the tests marked slow (a few minutes on 2 cores).
test: install-test
	$(PYTHON) -m pytest tests -m "not slow"

# Only the slow tests (subprocesses, real training runs, whole evaluations).
test-slow: install-test
	$(PYTHON) -m pytest tests -m slow

test-all: install-test
	$(PYTHON) -m pytest tests

# Rewrite constraints.txt from a fresh environment with every extra installed.
lock:
	rm -rf .venv-lock
	python3 -m venv .venv-lock
	.venv-lock/bin/pip install -q torch==2.13.0
	.venv-lock/bin/pip install -q -e ".[test]"
	{ sed -n '1,3p' constraints.txt; .venv-lock/bin/pip freeze --all --exclude-editable \
	  | grep -v '^pip==' | sed 's/^torch==\(.*\)+cpu$$/torch==\1/'; } > constraints.txt.new
	mv constraints.txt.new constraints.txt
	rm -rf .venv-lock

lint:
	$(PYTHON) -m ruff check speechvq tests benchmarks
	$(PYTHON) -m ruff format --check speechvq tests benchmarks

format:
	$(PYTHON) -m ruff format speechvq tests benchmarks
	$(PYTHON) -m ruff check --fix speechvq tests benchmarks

bench:
	$(PYTHON) benchmarks/train_throughput.py
