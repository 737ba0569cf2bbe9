# The README's two commands: `make demo` (set up + train) and `make test` (set up + run the tests).
# Each creates .venv when it is missing. On a machine without nvidia-smi the CPU build of torch is
# pinned (torch==2.13.0); override with `make TORCH_SPEC='torch>=2.11' ...`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_SPEC ?= $(shell command -v nvidia-smi >/dev/null 2>&1 && echo 'torch>=2.11' || echo 'torch==2.13.0')
HAS_GPU := $(shell command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && echo 1)
GPUS := $(if $(HAS_GPU),$(shell nvidia-smi -L | wc -l),0)
# Without a GPU the demo trains GPT-2 tiny in two CPU pipeline stages (a few minutes on 2 cores); on
# one GPU, GPT-2 small in one stage.
DEMO_ARGS ?= $(if $(HAS_GPU),$(if $(filter 1,$(GPUS)),parallel.pp=1),model=gpt2-tiny topology.device=cpu train.steps=300)

.PHONY: demo test lint clean

$(BIN)/mpcli: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)" numpy
	$(BIN)/python -m pip install -q -e ".[dev,report]"
	touch $(BIN)/mpcli

demo: $(BIN)/mpcli
	$(BIN)/mpcli train conf=gpt2-pipeline $(DEMO_ARGS)

test: $(BIN)/mpcli
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q tests

lint: $(BIN)/mpcli
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) runs .pytest_cache
