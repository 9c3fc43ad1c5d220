# thresher: `make demo` runs the main job on the sample corpus; `make test` runs the tests.
# Both create the virtual environment first (CPU torch, then the project).

PYTHON ?= python3
VENV ?= .venv
# What `make venv` installs after torch; the Docker image sets EXTRAS= (no dev tools).
EXTRAS ?= dev
BIN := $(VENV)/bin
CORPUS := examples/sample_corpus

.PHONY: venv demo test lint format bench clean

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e ".[$(EXTRAS)]"
	touch $@

$(CORPUS)/_truth.parquet: | venv
	$(BIN)/python -m thresher.sample_corpus $(CORPUS)

demo: venv $(CORPUS)/_truth.parquet
	$(BIN)/thresher run examples/curate.yaml

test: venv
	$(BIN)/python -m pytest

lint: venv
	$(BIN)/ruff check thresher tests benchmarks examples
	$(BIN)/ruff format --check thresher tests benchmarks examples
	$(BIN)/mypy thresher

format: venv
	$(BIN)/ruff format thresher tests benchmarks examples
	$(BIN)/ruff check --fix thresher tests benchmarks examples

bench: venv
	$(BIN)/python -m benchmarks

clean:
	rm -rf runs $(CORPUS) .pytest_cache .ruff_cache .mypy_cache
