# Two entry points for a fresh clone: `make demo` (set-up + main job) and `make test` (set-up + tests).
# TORCH_SPEC picks the PyTorch build: the default is the CPU-friendly pin this project is tested with;
# GPU users may set e.g. TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128".
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin
STAMP := $(VENV)/.bertscope-installed

.PHONY: setup demo test lint bench clean api-types

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH_SPEC)
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

# The demo's fitted head (the embedded model ships none) trains on GLUE training texts when a local GLUE folder is at
# hand: $BERTSCOPE_GLUE_DIR, else ../shared/data/glue beside the clone; without one, on the built-in sample's fit
# half, with a warning (docs/reconstruct.md, "The fit corpus"). It is measured on the built-in measure half.
DEMO_GLUE_DIR ?= $(or $(BERTSCOPE_GLUE_DIR),$(wildcard ../shared/data/glue))

demo: setup
	HF_HUB_OFFLINE=1 $(if $(DEMO_GLUE_DIR),BERTSCOPE_GLUE_DIR=$(abspath $(DEMO_GLUE_DIR))) \
		$(BIN)/bertscope reconstruct --out runs/recon-default

test: setup
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q -n 2

lint: setup
	$(BIN)/ruff check src tests benchmarks tools
	$(BIN)/mypy
	$(BIN)/python tools/api_types.py --check

# Regenerate src/bertscope/api_types.py (the API's typed keywords) after changing a config's options.
api-types: setup
	$(BIN)/python tools/api_types.py

bench: setup
	HF_HUB_OFFLINE=1 $(BIN)/python -m benchmarks.run_all

clean:
	rm -rf $(VENV) runs .pytest_cache
