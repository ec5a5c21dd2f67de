# Two commands for a fresh machine (python3, pip, node/npm):
#   make run   - create the environment and run the default federation
#   make test  - create the environment and run the test suite (all but the cases marked
#                slow, in parallel); make test-slow runs those, .ci/run runs both
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
NODE_STAMP := node_modules/.installed-stamp

.PHONY: env run test test-slow lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $@

$(NODE_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

env: $(STAMP) $(NODE_STAMP)

run: env
	$(PY) -m experiments.run $(ARGS)

# One pytest-xdist worker per logical CPU (at most 4); each test file runs on one worker in
# its own order, as in a serial run (module-scoped fixtures stay shared); files are
# independent (their own temporary folders, anvil nodes on free ports).
test: env
	$(PY) -m pytest -m "not slow" -n logical --maxprocesses=4 --dist loadfile $(ARGS)

# The cases marked slow (loopback deployments, the Flower simulation engine, the contract
# recompiled with solc, fuzz campaigns, whole command-line runs), one at a time: several
# of them wait on stage timeouts that a loaded CPU would stretch.
test-slow: env
	$(PY) -m pytest -m slow $(ARGS)

lint: env
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

bench: env
	$(PY) benchmarks/bench_dp.py
	$(PY) benchmarks/bench_ckks.py
	$(PY) benchmarks/bench_masking.py
	$(PY) benchmarks/bench_gas.py

clean:
	rm -rf $(VENV) node_modules outputs multirun .pytest_cache .mypy_cache .ruff_cache
