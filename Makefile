# acns-operator — `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: help
help: ## Show this help
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-14s\033[0m %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

.PHONY: venv
venv: $(STAMP) ## Create the virtualenv with the package and its dev tools

.PHONY: deps
deps: ## Install the Debian packages the tests need (dnsmasq, dig, nftables, dnsperf, ...)
	@bash hack/install-deps.sh

.PHONY: envtest
envtest: ## Build or find kube-apiserver, etcd, kubectl, helm; prints the assets folder last
	@bash hack/envtest-assets.sh

# Run $(1) with KUBEBUILDER_ASSETS set to the control-plane binaries (built on first use);
# stop, rather than run the tests without them, if they cannot be provided.
with_envtest = set -o pipefail; \
	assets="$$(bash hack/envtest-assets.sh | tail -1)" || { echo "hack/envtest-assets.sh failed (see above)" >&2; exit 1; }; \
	echo "KUBEBUILDER_ASSETS=$$assets"; \
	KUBEBUILDER_ASSETS="$$assets" $(1)

.PHONY: test
test: venv deps ## Run the whole suite: unit, real control plane, network namespaces
	@$(call with_envtest,$(BIN)/pytest $(PYTEST_ARGS))

.PHONY: test-controlplane
test-controlplane: venv ## Run only the tests against the real kube-apiserver (no root needed)
	@$(call with_envtest,$(BIN)/pytest -m controlplane $(PYTEST_ARGS))

.PHONY: test-unit
test-unit: venv ## Run the fast unit tests only (no root, no control plane; < 1 min)
	$(BIN)/pytest tests/unit $(PYTEST_ARGS)

.PHONY: lint
lint: venv ## ruff, mypy --strict and import-linter
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy
	$(BIN)/mypy benchmarks
	$(BIN)/lint-imports

.PHONY: fmt
fmt: venv ## Format the code
	$(BIN)/ruff format src tests
	$(BIN)/ruff check --fix src tests

.PHONY: crds
crds: venv ## Regenerate crds/*.yaml from the pydantic models
	$(BIN)/acns crds --output-dir crds

.PHONY: bench
bench: venv ## Run the benchmarks; results in docs/benchmarks.md and docs/benchmarks.json
	$(BIN)/python -m benchmarks

.PHONY: demo
demo: venv deps ## Run the end-to-end demo
	$(BIN)/acns demo

.PHONY: clean
clean: ## Remove the virtualenv and caches (not the control-plane build cache)
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

.PHONY: proto
proto: venv ## Regenerate the gRPC stubs from src/acns_operator/proto/fqdndata.proto
	$(BIN)/python -m grpc_tools.protoc -I src --python_out=src --grpc_python_out=src --pyi_out=src src/acns_operator/proto/fqdndata.proto
