# Each target that needs the virtual environment builds it first, so on a fresh machine
# `make test` alone and `make demo` alone both work.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_CACHE := .aotcache/demo

.PHONY: install test test-gpu test-matrix gpu-check gpu-bench gpu-wheelhouse lint docs sabotage demo bench bench-scale clean test-servers

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

test: $(STAMP) lint test-servers
	$(PY) -m pytest -n auto --maxprocesses 4 --dist loadfile

# The OCI registry the fleet tests start on loopback (Debian's docker-registry; its own
# service is never enabled or started): see the script.
test-servers:
	@sh scripts/install_test_servers.sh

# The GPU suite: precompile on cuda, load in a fresh process, CUDA graphs, latency. Every
# test says why it skips where no CUDA device is present.
test-gpu: $(STAMP)
	$(PY) -m pytest -m gpu -v -rs -s

# The whole suite and the demo on torch 2.11, 2.12, 2.13, 2.14 and 2.15, a cross-version
# load, and gpu-check offline; writes benchmarks/results/torch-matrix.md and the README's
# table. ~80 min and ~25 GB on 2 cores (CUDA wheels of torch); run before every release.
test-matrix: $(STAMP) test-servers
	$(VENV)/bin/nox

# On a machine that already has torch (the GPU image: torch 2.11, no network): install
# aotcache with that torch and run the GPU suite; the report goes to $(GPU_REPORT).
GPU_PYTHON ?= python3
GPU_REPORT ?= $(or $(OUT),gpu-report)
gpu-check:
	$(GPU_PYTHON) scripts/gpu_check.py --report $(GPU_REPORT)

# The same machine, installed the same way: cold precompile, load with CUDA graphs and
# per-call latency against eager and torch.compile (benchmarks/bench_gpu.py, < 8 min on
# one H200); gpu-bench.md and gpu-bench.json go to $(GPU_REPORT).
gpu-bench:
	$(GPU_PYTHON) benchmarks/bench_gpu.py --install --report $(GPU_REPORT)

# Beforehand, on a networked machine: the wheels gpu-check may need besides torch, pytest
# included (Python 3.12, <16 MiB).
gpu-wheelhouse: $(STAMP)
	$(PY) scripts/gpu_check.py wheelhouse

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mkdocs build --strict --quiet --site-dir $$(mktemp -d)

# Break each guarantee's guard on purpose and check that its tests fail (then restore
# the code); writes benchmarks/results/sabotage.md. ~25 min on 2 cores.
sabotage: $(STAMP)
	$(PY) scripts/sabotage.py

# The reference pages under docs/ as a site, in site/ (a broken link fails the build).
docs: $(STAMP)
	$(VENV)/bin/mkdocs build --strict --site-dir site

demo: $(STAMP)
	$(VENV)/bin/aotcache precompile examples/tiny_llama.py:spec --cache-dir $(DEMO_CACHE)
	$(PY) examples/serve.py --cache-dir $(DEMO_CACHE)

# CI cost (precompile vs torch.compile, rebuilds, --jobs), serve-time start-up, and FX
# splitting vs Inductor graph partition, side by side; each writes its section of
# benchmarks/results/latest.json (~45 min on 2 cores).
# Real scale (Qwen2-0.5B's and Llama-3.1-8B's shapes, weights never built to precompile):
# precompile wall time and peak RSS, torch.compile cold and warm, load and per-call latency;
# writes the "scale" section of benchmarks/results/latest.json and scale.md (~15 min).
bench-scale: $(STAMP)
	$(PY) benchmarks/bench_scale.py

bench: $(STAMP)
	$(PY) benchmarks/bench_precompile.py
	$(PY) benchmarks/bench_ci.py
	$(PY) benchmarks/bench_load.py
	$(PY) benchmarks/bench_partition.py

clean:
	rm -rf $(VENV) .aotcache .pytest_cache .nox .matrix .wheelhouse gpu-report
