# Each target that needs the virtual environment builds it first, so on a fresh machine
# `make test` alone and `make demo` alone both work.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_CACHE := .aotcache/demo

.PHONY: install test test-gpu lint demo bench clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

test: $(STAMP) lint
	$(PY) -m pytest

# The GPU suite: precompile on cuda, load in a fresh process, CUDA graphs, latency. Every
# test says why it skips where no CUDA device is present.
test-gpu: $(STAMP)
	$(PY) -m pytest -m gpu -v -rs -s

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

demo: $(STAMP)
	$(VENV)/bin/aotcache precompile examples/tiny_llama.py:spec --cache-dir $(DEMO_CACHE)
	$(PY) examples/serve.py --cache-dir $(DEMO_CACHE)

bench: $(STAMP)
	$(PY) benchmarks/bench_load.py

clean:
	rm -rf $(VENV) .aotcache .pytest_cache
