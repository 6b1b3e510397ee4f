# One command to set up and run the main job, one to set up and run the tests.
#   make demo   - create .venv, install repdiag, run the BN vs no-BN demo on the bundled digits data
#   make test   - create .venv, install repdiag with test extras, run the test suite and mypy
# torch: a CPU build where no GPU is present. On this project's machines `pip install torch==X`
# takes the CPU wheel that lies on local disk; elsewhere set TORCH_PIP_ARGS to point pip at a CPU
# wheel index, or install torch yourself first (a satisfied pin installs nothing more).

PYTHON ?= python3
VENV ?= .venv
TORCH_VERSION ?= 2.13.0
TORCH_PIP_ARGS ?=
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.repdiag-installed

.PHONY: setup demo test lint bench docs clean

$(STAMP): pyproject.toml setup.py repdiag/capture/_mapstats.c Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	@if $(PY) -c "import torch" 2>/dev/null; then \
		echo "torch already installed: $$($(PY) -c 'import torch; print(torch.__version__)')"; \
	elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then \
		echo "GPU found: installing torch==$(TORCH_VERSION) (CUDA build)"; \
		$(PIP) install -q "torch==$(TORCH_VERSION)"; \
	else \
		echo "no GPU: installing torch==$(TORCH_VERSION) (CPU build)"; \
		$(PIP) install -q "torch==$(TORCH_VERSION)" $(TORCH_PIP_ARGS); \
	fi
	$(PIP) install -q -e ".[test]"
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/repdiag demo --out repdiag-out

test: $(STAMP)
	$(PY) -m pytest -q
	$(PY) -m mypy

bench: $(STAMP)
	for f in benchmarks/*.py; do $(PY) $$f || exit 1; done

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .mypy_cache repdiag-out repdiag/capture/_mapstats.*.so
