# medcf — developer commands. `make demo` runs the main job, `make test` the suite.
PYTHON  ?= python3
VENV    ?= .venv
PY      := $(VENV)/bin/python
# These two wheels are served from local disk on the project machines; override
# (e.g. TORCH_SPEC="torch torchvision") elsewhere.
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
DEMO_DIR ?= runs/demo
export OMP_NUM_THREADS ?= 2

.PHONY: install demo test lint clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q $(TORCH_SPEC)
	$(PY) -m pip install -q -e ".[test,dicom]"
	touch $@

demo: install
	$(PY) -m medcf.demo --out $(DEMO_DIR)

test: install
	$(PY) -m pytest -q tests

lint: install
	$(VENV)/bin/ruff check src tests benchmarks

clean:
	rm -rf $(VENV) runs .pytest_cache
