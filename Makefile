# Two entry points, each self-contained on a fresh machine:
#   make quick   set up .venv and run the main job (the `quick` study)
#   make test    set up .venv and run the test suite
# TORCH pins the PyTorch wheel installed before the package; override it for your CUDA build,
# e.g. `make quick TORCH="torch --index-url https://download.pytorch.org/whl/cu124"`.

PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
OUT ?= runs/quick
# Two cooperating workers (docs/SCALING.md): on a 2-core CPU two workers of one thread each beat
# one worker of two threads (26.7-34.2 against 35.1-36.5 min, an earlier preset: git show 676faae:docs/results/quick-cpu.md).
WORKERS ?= 2
BIN := $(VENV)/bin

.PHONY: setup quick test lint

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet $(TORCH)
	$(BIN)/pip install --quiet -e ".[dev,postgres,tensorboard]"
	touch $@

quick: setup
	$(BIN)/shallowmimic run --preset quick --out $(OUT) --workers $(WORKERS)

test: setup
	$(BIN)/python -m pytest

lint: setup
	$(BIN)/ruff check src tests bench
