# The two commands that matter: `make demo` and `make test`. Both install what they need first
# (scripts/bootstrap: cached outside the clone, a second run takes seconds).
SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

CARGO ?= cargo

.PHONY: help bootstrap build test test-rust lint fmt crds demo bundle bench bench-operator fuzz cluster-up cluster-down

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-13s %s\n", $$1, $$2}'

bootstrap: ## install the venv (torch), kubectl/helm and the control-plane binaries
	scripts/bootstrap all

build: bootstrap ## build every crate
	$(CARGO) build --workspace --all-targets

test: bootstrap lint test-rust ## every test: lint, unit, integration, end-to-end

test-rust:
	$(CARGO) build --workspace --bins
	$(CARGO) test --workspace

bench: bootstrap ## coordinator ingest, memory and outer-step benchmark (target/bench/summary.json)
	$(CARGO) bench -p diloco-tests --bench coordinator

bench-operator: bootstrap ## operator at scale: 200 DiLoCoServers (target/bench/operator-scale.json)
	$(CARGO) bench -p diloco-tests --bench operator_scale

fuzz: ## run each cargo-fuzz target for FUZZ_SECONDS (default 60; needs nightly)
	scripts/fuzz

lint: ## rustfmt and clippy, warnings are errors
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt: ## format the code
	$(CARGO) fmt --all

crds: ## regenerate crds/dilocoserver.yaml (and the chart's copy) from the Rust types
	$(CARGO) run -q -p diloco-crds --bin crdgen > crds/dilocoserver.yaml
	cp crds/dilocoserver.yaml charts/diloco-operator/files/dilocoserver.yaml

bundle: ## regenerate deploy/install.yaml (the chart rendered for kubectl apply)
	scripts/bundle

demo: bootstrap ## the main job on the local control plane
	scripts/demo

cluster-up: bootstrap ## start a local control plane (then: eval "$$(scripts/local-cluster env)")
	scripts/local-cluster up

cluster-down: ## stop it
	scripts/local-cluster down
