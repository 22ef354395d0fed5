# The two commands a fresh machine needs: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
BENCH_STAMP := $(VENV)/.bench-installed
# The saga library: a distribution of its own, with its own tests; the product depends on it.
SAGA := packages/temporal-saga
SAGA_VENV ?= /tmp/temporal-saga-venv

.PHONY: demo test test-fast test-saga saga-standalone saga-docs bench bench-peers check lint typecheck format clean

$(STAMP): pyproject.toml $(SAGA)/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -qq --upgrade pip
	$(BIN)/python -m pip install -qq -e '.[dev]'
	@# The product's requirement installs a copy of the library; make it editable, after.
	$(BIN)/python -m pip install -qq -e '$(SAGA)[test]'
	touch $(STAMP)

demo: $(STAMP)  ## The seed's scenario on an embedded Temporal dev server.
	$(BIN)/pizza demo

$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install -qq -e '.[dev,bench]'
	$(BIN)/python -m pip install -qq -e '$(SAGA)[test]'
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)  ## The order saga's speed against the engine's limit, on SQLite and on PostgreSQL (results in bench/).
	$(BIN)/pizza bench --out bench/results.json
	$(BIN)/pizza bench --store postgres --out bench/results-postgres.json

# DBOS Transact comes with the dev extra (the peers extra alone: pip install -e '.[peers]').
bench-peers: $(STAMP)  ## The orders (regular and local mode) beside the same saga on DBOS Transact, on SQLite (bench/results-peers.json).
	$(BIN)/pizza bench --peers --out bench/results-peers.json

# Both suites on pytest-xdist, each worker with its own time-skipping server and PostgreSQL
# cluster; each module runs whole on one worker (its servers start once). One worker more than
# the cores: the suites wait (timers, processes starting) a good part of the time. Measured on
# 2 cores: 2 workers 411-449 s, 3 workers 346 s, 4 workers 346 s with more CPU.
# Not loadgroup: on pytest 9.2 it no longer groups anything (pytest-xdist issue #1386).
XDIST_WORKERS ?= $(shell $(PYTHON) -c 'import os; print((os.cpu_count() or 1) + 1)')
XDIST ?= -n $(XDIST_WORKERS) --dist loadscope

test: check  ## Lint, type-check, then both test suites: the saga library's and the product's (xdist).
	cd $(SAGA) && $(abspath $(BIN))/pytest $(XDIST)
	$(BIN)/pytest $(XDIST)

test-fast: $(STAMP)  ## The fast tier only: unit and time-skipping workflow tests on SQLite (no processes).
	$(BIN)/pytest -m fast $(XDIST)

test-saga: $(STAMP)  ## The saga library's own suite (no product import).
	cd $(SAGA) && $(abspath $(BIN))/pytest

saga-standalone:  ## The saga library alone in a fresh venv (nothing of the product): its tests and examples.
	rm -rf $(SAGA_VENV)
	$(PYTHON) -m venv $(SAGA_VENV)
	$(SAGA_VENV)/bin/python -m pip install -qq --upgrade pip
	$(SAGA_VENV)/bin/python -m pip install -qq '$(SAGA)[test]'
	@! $(SAGA_VENV)/bin/python -m pip list 2>/dev/null | grep -Ei '^(pizza-saga|fastapi|typer|alembic) '
	cd $(SAGA) && $(abspath $(SAGA_VENV))/bin/pytest -p no:cacheprovider

saga-docs: $(STAMP)  ## The saga library's API reference, from its docstrings, in $(SAGA)/docs/api.
	$(BIN)/pdoc temporal_saga temporal_saga.effects temporal_saga.testing -o $(SAGA)/docs/api

check: lint typecheck

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy
	cd $(SAGA) && $(abspath $(BIN))/mypy

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
