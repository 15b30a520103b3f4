# The commands of the README: `make demo`, `make test` and `make lab`. Each creates .venv
# and installs the project (with its extras) when missing or when pyproject.toml changed.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.tripkit-installed

#: Everything ruff reads: the package, the tests, the benchmarks and the notebooks.
SOURCES := tripkit tests bench notebooks

.PHONY: demo test lab bench lint format typecheck check clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "tripkit needs Python >= 3.11 (set PYTHON=python3.x)")'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/tripkit demo

test: $(STAMP)
	$(BIN)/python -m pytest

#: JupyterLab on notebooks/ with a stack (tripkit/jupyter/lab.py says which);
#: e.g. `make lab LAB_ARGS="--environment local --port 8888"`.
lab: $(STAMP)
	$(BIN)/python -m tripkit.jupyter.lab $(LAB_ARGS)

BENCH_STAMP := $(VENV)/.tripkit-bench-installed

$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[bench]'
	@touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(BIN)/python bench/endpoints.py
	$(BIN)/python bench/pipeline.py
	$(BIN)/python bench/push.py
	$(BIN)/python bench/burst.py

lint: $(STAMP)
	$(BIN)/ruff check $(SOURCES)
	$(BIN)/ruff format --check $(SOURCES)
	$(BIN)/lint-imports

format: $(STAMP)
	$(BIN)/ruff check --fix $(SOURCES)
	$(BIN)/ruff format $(SOURCES)

typecheck: $(BENCH_STAMP)  # mypy reads bench/ too, whose bare app imports rq
	$(BIN)/mypy

check: lint typecheck test

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache test-artifacts
