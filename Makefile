# Two commands do the main jobs on a fresh machine with python3 and make:
#   make report   re-derives every gradient and writes derivations/REPORT.md
#   make test     runs the test suite (notebooks included) on two workers,
#                 in a few minutes; `make test-full` runs every test and
#                 every combination of each sweep, CI runs both
# Each sets up .venv on first use and installs only what it needs:
# `report` the library itself (jax, sympy), `test` the test and notebook
# extras too. `make docs` builds the documentation site into docs/_build/html,
# `make docs-check` also opens it in headless Chromium, `make lint` runs ruff
# and pyright.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip install --progress-bar on
CORE := $(VENV)/.stamp-core

.PHONY: report mutate test test-full bench bench-quick lint docs docs-check clean

$(CORE): pyproject.toml
	@echo "== setting up $(VENV): jaxsmx with jax and sympy (the first time takes a minute or two)"
	$(PYTHON) -m venv $(VENV)
	$(PIP) -e .
	touch $@

$(VENV)/.stamp-%: $(CORE)
	@echo "== installing the '$*' extra into $(VENV)"
	$(PIP) -e '.[$*]'
	touch $@

report: $(CORE)
	$(BIN)/python -u -m derivations

# applies each plausible one-line bug to a copy of jaxsmx's backward rules and
# runs the derivation checks on it; writes the table the report includes
mutate: $(CORE)
	$(BIN)/python -m derivations.mutate --out derivations/MUTATIONS.md

# --dist loadfile: a worker takes whole files, so a file's expensive fixture
# (the derivation report, the wheel) is built once (tests/conftest.py).
# make test: every test but the `full` tier (the rest of each parameter sweep,
# the three long notebooks, the installed wheel's whole derivation run), with
# XLA:CPU's quick compile settings (LLVM at -O0, the classic fusion emitters):
# most of the suite's time is compiling small programs, and these settings
# halve it. make test-full: every test, at XLA's default settings, as users
# run it. CI runs both.
QUICK_XLA := --xla_backend_optimization_level=0 --xla_cpu_use_fusion_emitters=false
PYTEST := $(BIN)/python -m pytest -n 2 --dist loadfile --no-loadscope-reorder --durations=10

test: $(VENV)/.stamp-test $(VENV)/.stamp-notebooks
	XLA_FLAGS="$(QUICK_XLA) $$XLA_FLAGS" $(PYTEST) -m "not full"

test-full: $(VENV)/.stamp-test $(VENV)/.stamp-notebooks
	$(PYTEST)

bench: $(VENV)/.stamp-test
	$(BIN)/python -m benchmarks

bench-quick: $(VENV)/.stamp-test
	$(BIN)/python -m benchmarks --quick

lint: $(VENV)/.stamp-lint
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/pyright jaxsmx

docs: $(VENV)/.stamp-docs
	rm -rf docs/_build docs/_autosummary
	$(BIN)/python -m sphinx -W --keep-going -b html docs docs/_build/html
	@echo "== the site is at docs/_build/html/index.html"

docs-check: docs
	$(BIN)/python docs/check_browser.py docs/_build/html

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis docs/_build
