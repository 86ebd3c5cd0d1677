# Quick start: `make demo` then `make test`. Both create .venv when it is absent.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-dev

.PHONY: demo test test-fast lint typecheck unit bench fixtures clean

# setup.py and the C file too: an edited decloud/_kernels.c is rebuilt by the install.
$(STAMP): setup.cfg pyproject.toml setup.py decloud/_kernels.c
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	PATH="$(abspath $(BIN)):$$PATH" bash pipelines/demo.sh

test: lint typecheck unit

lint: $(STAMP)
	$(BIN)/ruff check decloud tests benchmarks

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest

# The unit tests but those marked slow (@pytest.mark.slow: over about 3 s each).
test-fast: $(STAMP)
	$(BIN)/pytest -m "not slow"

bench: $(STAMP)
	cd benchmarks && ../$(BIN)/python bench_read_tile.py
	cd benchmarks && ../$(BIN)/python bench_stats.py
	cd benchmarks && ../$(BIN)/python bench_index.py
	cd benchmarks && ../$(BIN)/python bench_dataset.py
	cd benchmarks && ../$(BIN)/python bench_train.py
	cd benchmarks && ../$(BIN)/python train_real.py
	cd benchmarks && ../$(BIN)/python bench_engine.py

# Rebuild tests/data/archive from ../shared/data (needs the shared data folder).
fixtures: $(STAMP)
	$(BIN)/python tests/data/make_fixtures.py --force

clean:
	rm -rf demo_output .pytest_cache .mypy_cache .ruff_cache build dist
