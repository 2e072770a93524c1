# dnsrace: every entry point. `make setup` is idempotent and called by the other targets;
# it reuses the Python env and the binaries cache when they are already there.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
UV_VERSION := 0.13.8
DNSRACE_CACHE_DIR ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/dnsrace
export DNSRACE_CACHE_DIR
UV_DIR := $(DNSRACE_CACHE_DIR)/uv-$(UV_VERSION)
UV := $(UV_DIR)/bin/uv
VENV := .venv
DNSRACE := $(VENV)/bin/dnsrace
# uv must use the machine's Python, never download one.
export UV_PYTHON := $(shell command -v $(PYTHON))
export UV_PYTHON_DOWNLOADS := never
export UV_PROJECT_ENVIRONMENT := $(VENV)
PYTEST_ARGS ?=

.PHONY: help setup setup-python setup-binaries lint test test-unit local-up local-down \
        local-status demo bench clean

help: ## Show the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

$(UV):
	@echo "setup: installing uv $(UV_VERSION) into $(UV_DIR)"
	@$(PYTHON) -m venv $(UV_DIR) || { echo "setup: step 'python venv' failed: $(PYTHON) needs the venv module (apt-get install python3-venv)"; exit 1; }
	@$(UV_DIR)/bin/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION) || { echo "setup: step 'install uv' failed"; exit 1; }

setup-python: $(UV) ## Create .venv from uv.lock (exact, reproducible)
	@$(UV) sync --frozen --quiet || { echo "setup: step 'uv sync' failed"; exit 1; }

setup-binaries: setup-python ## Build or reuse kube-apiserver, kube-controller-manager, kubectl, etcd, CoreDNS
	@$(DNSRACE) setup

setup: setup-binaries ## Everything: Python env and pinned binaries (cached outside the clone)

lint: setup-python ## ruff, mypy (strict) and the import layering contracts
	$(VENV)/bin/ruff check operator tests
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

test-unit: setup-python ## Unit tests only (no cluster)
	$(VENV)/bin/pytest tests/unit $(PYTEST_ARGS)

test: setup lint ## Lint, then every test against the local control plane (started if needed)
	$(VENV)/bin/pytest $(PYTEST_ARGS)

local-up: setup ## Start the local control plane and install the CRDs
	@$(DNSRACE) local up

local-down: ## Stop every process local-up started
	@if [ -x $(DNSRACE) ]; then $(DNSRACE) local down; else echo "nothing to stop (no .venv)"; fi

local-status: setup-python ## Show processes, health, kubeconfig path and addresses
	@$(DNSRACE) local status

demo: setup ## The main job: the outage scenario on the local control plane, with its report
	@$(DNSRACE) demo

bench: setup ## Benchmarks; results go to docs/benchmarks.md
	$(VENV)/bin/python -m dnsrace.bench

clean: local-down ## Remove the run state (.run) and .venv; the binaries cache is kept
	rm -rf .run $(VENV)
