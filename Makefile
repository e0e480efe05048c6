# The few commands people type. `make demo` sets up and runs the main job;
# `make test` runs the test suite (what CI runs).
PYTHON ?= python3
PIP ?= $(PYTHON) -m pip

.PHONY: install demo test lint format bench

# torch first, pinned to the CPU build that 2.13.0 resolves to here: installing
# the package first would pull the newest CUDA build (gigabytes).
install:
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e ".[dev]"

demo: install
	$(PYTHON) -m speechvq.demo

test:
	$(PYTHON) -m pytest tests

lint:
	ruff check speechvq tests benchmarks
	ruff format --check speechvq tests benchmarks

format:
	ruff format speechvq tests benchmarks
	ruff check --fix speechvq tests benchmarks

bench:
	$(PYTHON) benchmarks/train_throughput.py
