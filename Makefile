# modelsvc — `make help` lists the targets. README and .ci/run call these targets, nothing else.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON     ?= $(shell command -v python3.11 || command -v python3)
VENV       ?= .venv
BIN        := $(VENV)/bin
MODELSVC   := $(BIN)/modelsvc
# torch FIRST and pinned: a CPU wheel lies on the build machines' disk; an unpinned torch would pull a multi-GB CUDA
# build. For a CUDA build: make venv TORCH_SPEC=torch==2.13.0 TORCH_INDEX=https://download.pytorch.org/whl/cu128
TORCH_SPEC  ?= torch==2.13.0
TORCH_INDEX ?=
EXTRAS      ?= hive,redis,s3,serve,prefect,dev,bench
PYTEST_ARGS ?=

# The demo: the embedded defaults (DuckDB + Parquet, SQLite Feast, local MLflow, local Ray) on generated data.
DEMO_START         ?= 2025-01-01
DEMO_END           ?= 2025-01-28

.PHONY: help venv demo test test-fast test-integration lint docs docs-check doctor mlflow-ui wheel docker clean \
	clean-all redis-server

help: ## Show this help
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  %-18s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(MODELSVC):
	$(MAKE) venv

venv: ## Create .venv (python3.11 or python3), install torch (CPU) first, then the package with [hive,redis,s3,serve,prefect,dev,bench]
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install "$(TORCH_SPEC)" $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(BIN)/python -m pip install -e '.[$(EXTRAS)]'
	$(MODELSVC) --version

demo: $(MODELSVC) ## Run the whole local pipeline on generated demo data (creates the venv if missing)
	$(MODELSVC) demo-data --start-date $(DEMO_START)
	$(MODELSVC) run --start-date $(DEMO_START) --end-date $(DEMO_END)
	@echo "demo done: state under ./data (make mlflow-ui to browse runs)"

redis-server: ## Install redis-server with apt-get when it is missing (the Redis tests need the binary)
	@if command -v redis-server >/dev/null; then exit 0; fi; \
	if command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
		echo "installing redis-server"; apt-get update -qq && apt-get install -y -qq redis-server >/dev/null; \
	else \
		echo "warning: redis-server is missing and cannot be installed here: Redis tests will be skipped"; \
	fi

test: $(MODELSVC) redis-server ## Run the whole test suite (unit, cli, integration with real services, model)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: $(MODELSVC) ## Run the fast tests only (no slow, no integration)
	$(BIN)/python -m pytest -m "not slow and not integration" $(PYTEST_ARGS)

test-integration: $(MODELSVC) redis-server ## Run the integration tests (Redis, MLflow server, Ray cluster, Hive)
	$(BIN)/python -m pytest tests/integration $(PYTEST_ARGS)

lint: $(MODELSVC) ## ruff (style, imports, no print) and mypy on src/
	$(BIN)/ruff check .
	$(BIN)/mypy

docs: $(MODELSVC) ## Regenerate docs/cli.md, .env.template and the settings reference in docs/configuration.md
	$(BIN)/python scripts/gen_docs.py

docs-check: $(MODELSVC) ## Fail when a generated doc is out of date
	$(BIN)/python scripts/gen_docs.py --check

doctor: $(MODELSVC) ## Check the backends of the current config (add ARGS="--profile production")
	$(MODELSVC) doctor $(ARGS)

mlflow-ui: $(MODELSVC) ## Browse the local MLflow store on http://127.0.0.1:5000
	$(BIN)/mlflow ui --backend-store-uri sqlite:///data/mlflow/mlflow.db --host 127.0.0.1 --port 5000

wheel: $(MODELSVC) ## Build the wheel into dist/
	$(BIN)/python -m pip wheel --no-deps --no-build-isolation -w dist .

docker: ## Build the image (CPU torch; TORCH_SPEC/TORCH_INDEX pass through as build args)
	docker build --build-arg TORCH_SPEC="$(TORCH_SPEC)" $(if $(TORCH_INDEX),--build-arg TORCH_INDEX=$(TORCH_INDEX)) \
		-t modelsvc:latest .

clean: ## Remove local state (./data), caches and build outputs; keeps .venv
	rm -rf data build dist .pytest_cache .mypy_cache .ruff_cache mlruns mlartifacts
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +
	find . -path ./$(VENV) -prune -o -name '*.egg-info' -type d -prune -exec rm -rf {} +

clean-all: clean ## clean, and remove .venv too
	rm -rf $(VENV)
