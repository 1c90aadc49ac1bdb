# cpfcte_hf developer commands. Everything runs from the repo-local virtualenv .venv/.
PYTHON ?= python3
VENV ?= .venv
# The CPU build of torch 2.13.0 is a local file here; an unpinned torch pulls GBs of CUDA wheels.
# Override for a GPU machine, e.g. `make install TORCH_SPEC="torch==2.13.0 --index-url ..."`.
TORCH_SPEC ?= torch==2.13.0
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# The suite runs on the machine's cores side by side (pytest-xdist, at most 4 workers: each test may start two
# processes of its own). `make test PYTEST_ARGS="-n 0 -x tests/test_cli.py"` runs one file in this process.
PYTEST_ARGS ?= -n auto --maxprocesses 4
# Extra demo options, any option of `cpfcte-hf run`: e.g. `make demo DEMO_ARGS="--override top_k=4 label.size=128"`.
DEMO_ARGS ?=

.PHONY: install test demo bench clean

# The stamp file is rebuilt when pyproject.toml changes, so `make test` after a dependency
# change re-installs, and a second `make test` reuses the environment.
$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet $(TORCH_SPEC)
	$(PIP) install --quiet -e ".[dev,app,labelstudio]"
	$(PY) -c "import torch, transformers, pydensecrf.densecrf; print('torch', torch.__version__, 'transformers', transformers.__version__)"
	touch $@

install: $(VENV)/.installed

test: $(VENV)/.installed
	$(PY) -m pytest $(PYTEST_ARGS)

# The whole method on the built-in procedural data (cpfcte_hf/presets/demo.yaml): stage 1 -> pseudo-labels of the
# training split + CRF -> stage 2 (DeepLab-v2) -> both stages scored on the held-out split -> outputs/demo/.
demo: $(VENV)/.installed
	$(VENV)/bin/cpfcte-hf demo $(DEMO_ARGS)

# The CPU benchmarks of the README's Performance section, each as JSON in outputs/bench/ (3.5 minutes on 2 cores).
BENCH_DIR ?= outputs/bench
bench: $(VENV)/.installed
	mkdir -p $(BENCH_DIR)
	$(VENV)/bin/cpfcte-hf bench train --batch_size 2 --output $(BENCH_DIR)/train.json
	$(VENV)/bin/cpfcte-hf bench data --workers 0 2 --output $(BENCH_DIR)/data.json
	$(VENV)/bin/cpfcte-hf bench pseudo_label --output $(BENCH_DIR)/pseudo_label.json
	$(VENV)/bin/cpfcte-hf bench deeplab --batch_size 2 --size 321 --output $(BENCH_DIR)/deeplab.json

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache

# The one-call GPU benchmark (cpfcte_hf/benchmarks/gpu.py): one CUDA GPU, random weights, synthetic data, <= 8 minutes,
# JSON in $(BENCH_DIR)/gpu.json and a table on stdout. It runs with the machine's own python3 (a GPU machine has its
# own torch; no .venv, no install); wheels put in .whl/ (datasets, kornia, ...) are installed next to it first.
GPU_PYTHON ?= python3
.PHONY: bench-gpu
bench-gpu:
	mkdir -p $(BENCH_DIR)
	if ls .whl/*.whl >/dev/null 2>&1; then \
		$(GPU_PYTHON) -m pip install -q --no-index --no-deps --no-compile --upgrade --target .whl/site .whl/*.whl; fi
	PYTHONPATH=$(CURDIR):$(CURDIR)/.whl/site \
		$(GPU_PYTHON) scripts/bench_gpu.py --device cuda --output $(BENCH_DIR)/gpu.json
