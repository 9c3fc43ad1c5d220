# thresher: `make demo` runs the main job on the sample corpus; `make test` runs the tests.
# Both create the virtual environment first (CPU torch, then the project).

PYTHON ?= python3
VENV ?= .venv
# What `make venv` installs after torch; the Docker image sets EXTRAS= (no dev tools).
EXTRAS ?= dev
BIN := $(VENV)/bin
COMMA := ,
# With the dev extra: mosaicml-streaming, the reader the tests read exported MDS shards with.
# Installed with --no-deps: its pins would downgrade numpy, xxhash and transformers, and it
# pulls torchvision and every cloud SDK; its import-time dependencies are in the dev extra.
STREAMING_READER := mosaicml-streaming==0.13.0
CORPUS := examples/sample_corpus
# Debian packages the test suite needs (chromium: the run report's browser test).
SYSDEPS ?= chromium
# Debian packages only the benchmarks need (Fashion-MNIST IDX files: benchmarks/eval_fashion_mnist.py).
BENCH_SYSDEPS ?= dataset-fashion-mnist

.PHONY: venv sysdeps sysdeps-bench demo test lint format bench clean

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e ".[$(EXTRAS)]"
	$(if $(filter dev,$(subst $(COMMA), ,$(EXTRAS))),$(BIN)/python -m pip install --quiet --no-deps $(STREAMING_READER))
	touch $@

$(CORPUS)/_truth.parquet: | venv
	$(BIN)/python -m thresher.examples.sample_corpus $(CORPUS)

demo: venv $(CORPUS)/_truth.parquet
	$(BIN)/thresher run examples/curate.yaml

# Installs the missing SYSDEPS with apt-get when run as root; otherwise says how. The update
# keeps the English package descriptions (examples/debian_text_to_lm_corpus.py reads them),
# which images that turn translations off would otherwise drop.
sysdeps:
	@missing="$$(for p in $(SYSDEPS); do dpkg-query -W -f='$${Status}' $$p 2>/dev/null \
		| grep -q 'install ok installed' || echo $$p; done | xargs)"; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing Debian packages: $$missing"; \
		apt-get update -qq -o Acquire::Languages=en && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	else \
		echo "missing Debian packages; install them with: sudo apt-get install -y $$missing" >&2; \
	fi

sysdeps-bench:
	@$(MAKE) --no-print-directory sysdeps SYSDEPS="$(BENCH_SYSDEPS)"

test: venv sysdeps
	$(BIN)/python -m pytest

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy thresher

format: venv
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# The reference implementations some benchmarks compare against (never a run-time dependency).
bench: venv sysdeps-bench
	$(BIN)/python -m pip install --quiet -e ".[bench-filters,bench-lm,bench-dedup,bench-influence,bench-labels]"
	$(BIN)/python -m benchmarks

clean:
	rm -rf runs $(CORPUS) .pytest_cache .ruff_cache .mypy_cache
