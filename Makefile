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
# uv must use the machine's Python, never download one. The interpreter's real path, not a shim
# (pyenv's): uv replaces an environment whose interpreter is not the requested path, and did so
# on every make call, under running components.
export UV_PYTHON := $(shell $(PYTHON) -c 'import sys; print(sys.executable)' 2>/dev/null)
export UV_PYTHON_DOWNLOADS := never
export UV_PROJECT_ENVIRONMENT := $(VENV)
PYTEST_ARGS ?=

.PHONY: help setup setup-python setup-binaries setup-browser setup-prometheus lint test test-unit bench-outage \
        local-up local-down local-status demo bench clean

help: ## Show the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-16s %s\n", $$1, $$2}'

$(UV):
	@echo "setup: installing uv $(UV_VERSION) into $(UV_DIR)"
	@$(PYTHON) -m venv $(UV_DIR) || { echo "setup: step 'python venv' failed: $(PYTHON) needs the venv module (apt-get install python3-venv)"; exit 1; }
	@$(UV_DIR)/bin/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION) || { echo "setup: step 'install uv' failed"; exit 1; }

setup-python: $(UV) ## Create .venv from uv.lock (exact, reproducible)
	@$(UV) sync --frozen --quiet || { echo "setup: step 'uv sync' failed"; exit 1; }

setup-binaries: setup-python ## Build or reuse kube-apiserver, kube-controller-manager, kubectl, etcd, CoreDNS
	@$(DNSRACE) setup

setup-browser: setup-python ## Install headless Chromium and chromedriver with apt if missing (the report's browser test)
	@$(DNSRACE) setup browser

setup-prometheus: setup-python ## Install Debian's Prometheus with apt if missing (the lab scrapes its components)
	@$(DNSRACE) setup prometheus

setup: setup-binaries setup-prometheus ## Everything: Python env, pinned binaries (cached outside the clone), Prometheus

lint: setup-python ## ruff, mypy (strict) and the import layering contracts
	$(VENV)/bin/ruff check operator tests
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

test-unit: setup-python ## Unit tests only (no cluster)
	$(VENV)/bin/pytest tests/unit $(PYTEST_ARGS)

test: setup setup-browser lint ## Lint, then every test against the local control plane (started if needed)
	$(VENV)/bin/pytest $(PYTEST_ARGS)

local-up: setup ## Start the local control plane and install the CRDs
	@$(DNSRACE) local up

local-down: ## Stop every process local-up started
	@if [ -x $(DNSRACE) ]; then $(DNSRACE) local down; else echo "nothing to stop (no .venv)"; fi

local-status: setup-python ## Show processes, health, kubeconfig path and addresses
	@$(DNSRACE) local status

demo: setup ## The main job: the outage scenario on the local control plane, with its report
	@$(DNSRACE) demo

bench: local-up ## Benchmarks on the local control plane (copy the table into docs/benchmarks.md)
	@$(DNSRACE) bench

OUTAGE_REPEAT ?= 5
OUTAGE_RUNS ?= runs/bench-outage

bench-outage: local-up ## outage-2025 off, on, and on with DynamoDB paused, OUTAGE_REPEAT times each (about 70 min at 5); then the series
	-@$(DNSRACE) scenario run outage-2025 --safeguards off --repeat $(OUTAGE_REPEAT) --runs-dir $(OUTAGE_RUNS)
	-@$(DNSRACE) scenario run outage-2025 --safeguards on --repeat $(OUTAGE_REPEAT) --runs-dir $(OUTAGE_RUNS)
	-@$(DNSRACE) scenario run outage-2025 --safeguards on --outside-fault --repeat $(OUTAGE_REPEAT) --runs-dir $(OUTAGE_RUNS)
	@$(DNSRACE) scenario judge $(OUTAGE_RUNS)/*

clean: local-down ## Remove the run state (.run) and .venv; the binaries cache is kept
	rm -rf .run $(VENV)

# ==== kind path and packaging (issue 4): image, manifests, chart, kind cluster, chaos ==========
# Tools come from `make setup-tools` (built from their Go modules into the binaries cache) unless
# given on the command line, e.g. `make kind-up HELM=/usr/local/bin/helm`. See docs/kind.md.
TOOLS := $(VENV)/bin/python -m dnsrace.localplane.tools
tool = $(or $(shell command -v $(1) 2>/dev/null),$(shell $(TOOLS) --path $(1) 2>/dev/null))
KIND ?= $(call tool,kind)
HELM ?= $(call tool,helm)
DOCKER ?= docker
# The pinned kubectl first: a PATH one may be outside the supported version skew.
KUBECTL ?= $(or $(firstword $(wildcard $(DNSRACE_CACHE_DIR)/bin/kubernetes-*/kubectl)),$(shell command -v kubectl 2>/dev/null),kubectl)
KIND_KUBECONFIG := .run/kind/kubeconfig
NAMESPACE ?= dnsrace
RELEASE ?= dnsrace
IMAGE_TAG ?= $(shell git rev-parse --short=12 HEAD 2>/dev/null || echo dev)
IMAGE ?= dnsrace:$(IMAGE_TAG)
# Chaos goes to the cluster the suite would use: DNSRACE_KUBECONFIG, else kind's, else local.
CHAOS_KUBECONFIG ?= $(or $(DNSRACE_KUBECONFIG),$(wildcard $(KIND_KUBECONFIG)),.run/local/kubeconfig)
TARGET ?= enactor-a
DELAY ?= 2
STEP ?= endpoint-write
DURATION ?= 30

.PHONY: setup-tools manifests kind-up kind-down kind-port-forward chaos-delay chaos-pause

setup-tools: setup-python ## Build or reuse helm, kind, kubeconform, actionlint; install hadolint
	@$(TOOLS)

manifests: setup-python ## Render manifests/base and copy the CRDs into the chart, from the chart
	@$(VENV)/bin/python -m dnsrace.localplane.packaging

kind-up: setup-python ## kind cluster + image + Helm release + stub domain (needs Docker)
	@KIND="$(KIND)" HELM="$(HELM)" KUBECTL="$(KUBECTL)" DOCKER="$(DOCKER)" IMAGE="$(IMAGE)" \
	  KCFG="$(KIND_KUBECONFIG)" NS="$(NAMESPACE)" RELEASE="$(RELEASE)" kind/up.sh

kind-down: ## Delete the kind cluster kind-up created
	@if [ -x "$(KIND)" ]; then "$(KIND)" delete cluster --name dnsrace; \
	 else echo "kind-down: no kind binary (run make setup-tools)"; exit 1; fi
	@rm -rf .run/kind

kind-port-forward: ## Forward 127.0.0.1:32379 to the DNS etcd in kind (foreground; Ctrl-C stops)
	$(KUBECTL) --kubeconfig $(KIND_KUBECONFIG) -n $(NAMESPACE) port-forward svc/dns-etcd 32379:2379

chaos-delay: ## Fault: delay TARGET's STEP by DELAY s (make chaos-delay TARGET=enactor-a DELAY=2)
	@printf '%s\n' 'apiVersion: dnsrace.io/v1alpha1' 'kind: Fault' 'metadata:' \
	  '  generateName: chaos-$(TARGET)-delay-' 'spec:' '  target: $(TARGET)' '  action: delay' \
	  '  step: $(STEP)' '  delaySeconds: $(DELAY)' \
	  | $(KUBECTL) --kubeconfig $(CHAOS_KUBECONFIG) -n $(NAMESPACE) create -f -

chaos-pause: ## Fault: SIGSTOP TARGET for DURATION s, then SIGCONT (make chaos-pause TARGET=enactor-a)
	@printf '%s\n' 'apiVersion: dnsrace.io/v1alpha1' 'kind: Fault' 'metadata:' \
	  '  generateName: chaos-$(TARGET)-pause-' 'spec:' '  target: $(TARGET)' '  action: pause' \
	  '  durationSeconds: $(DURATION)' \
	  | $(KUBECTL) --kubeconfig $(CHAOS_KUBECONFIG) -n $(NAMESPACE) create -f -
# ==== end of the kind path block ================================================================
