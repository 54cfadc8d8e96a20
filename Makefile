# The two commands that matter: `make demo` and `make test`. Both install what they need first
# (scripts/bootstrap: cached outside the clone, a second run takes seconds).
SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

CARGO ?= cargo
# The project venv (torch, safetensors, httpx, pytest), where scripts/common.sh puts it.
VENV_DIR := $(shell bash -c 'source scripts/common.sh && printf %s "$$VENV_DIR"')
PYTHON := $(VENV_DIR)/bin/python

.PHONY: help bootstrap build test test-rust test-python test-demo lint fmt crds demo bundle bench bench-operator contract-drift fuzz cluster-up cluster-down

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-13s %s\n", $$1, $$2}'

bootstrap: ## install the venv (torch), kubectl/helm, the control-plane and the real node's binaries and images
	scripts/bootstrap all

build: bootstrap ## build every crate
	$(CARGO) build --workspace --all-targets

test: bootstrap lint test-rust test-python test-demo ## every test: lint, unit, integration, end-to-end, the demo

test-rust:
	$(CARGO) build --workspace --bins
	$(CARGO) test --workspace

# The Python SDK: installed into the venv from ./python (setuptools from the venv when it has
# it, else from PyPI), then its tests run against the coordinator and example worker binaries.
test-python: ## the Python worker SDK's tests, against the real coordinator
	scripts/bootstrap python
	$(CARGO) build --workspace --bins
	if "$(PYTHON)" -c 'import setuptools' 2>/dev/null; then isolation=--no-build-isolation; else isolation=; fi; \
	"$(PYTHON)" -m pip install --quiet --disable-pip-version-check $$isolation ./python
	"$(PYTHON)" -m pytest python/tests -q

# The README's first command must keep working: the demo runs as part of every test run.
test-demo:
	scripts/demo

bench: bootstrap ## coordinator ingest, memory and outer-step benchmark (target/bench/summary.json)
	$(CARGO) bench -p diloco-tests --bench coordinator

bench-operator: bootstrap ## operator at scale: 200 DiLoCoServers (target/bench/operator-scale.json)
	$(CARGO) bench -p diloco-tests --bench operator_scale

contract-drift: ## rename a contract field in a copy: operator, coordinator, client and the Python test must all notice (~5 min)
	scripts/contract-drift

fuzz: ## run each cargo-fuzz target for FUZZ_SECONDS (default 60; needs nightly)
	scripts/fuzz

lint: ## rustfmt, clippy (warnings are errors) and no import circle between sibling modules
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	python3 scripts/module-cycles

fmt: ## format the code
	$(CARGO) fmt --all

crds: ## regenerate crds/dilocoserver.yaml, the chart's copy and docs/api-reference.md from the Rust types
	$(CARGO) run -q -p diloco-crds --bin crdgen > crds/dilocoserver.yaml
	cp crds/dilocoserver.yaml charts/diloco-operator/files/dilocoserver.yaml
	$(CARGO) run -q -p diloco-crds --bin crdgen api-reference > docs/api-reference.md

bundle: ## regenerate deploy/install.yaml (the chart rendered for kubectl apply)
	scripts/bundle

demo: bootstrap ## the main job on the local control plane
	scripts/demo

cluster-up: bootstrap ## start a local control plane (then: eval "$$(scripts/local-cluster env)")
	scripts/local-cluster up

cluster-down: ## stop it
	scripts/local-cluster down

.PHONY: images node-smoke node-up

images: ## the operator and coordinator images from the Dockerfile (buildah, no daemon; cached by input hash)
	scripts/bootstrap node
	scripts/images build all

node-smoke: bootstrap ## a real node: restricted pods, DNS, Services, NetworkPolicies, volumes, images (docs/local-node.md)
	scripts/bootstrap node
	scripts/node-smoke

node-up: bootstrap ## a local control plane with a real node (then: eval "$$(scripts/local-cluster env)")
	scripts/local-cluster up --node
