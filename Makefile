# Sluiceway's command vocabulary: the README, developers and .ci/run all use these targets.
# `make help` lists them.

CARGO ?= cargo
DATA_DIR ?= ./sluiceway-data
LISTEN ?= 127.0.0.1:9292

.PHONY: help run test test-rust test-node check-client-build setup bench build fmt lint

help: ## List the targets.
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-20s %s\n", $$1, $$2}'

run: setup ## The main job: one broker with the embedded registry (release build).
	$(CARGO) run --release -p sluiceway-broker --bin sluiceway -- broker --data-dir $(DATA_DIR) --listen $(LISTEN)

test: setup check-client-build test-rust test-node ## Every test in every language (what .ci/run calls).

test-rust: ## Rust tests for the whole workspace (debug build).
	$(CARGO) test --workspace --locked

test-node: setup ## Node.js package: npm ci (lockfile), debug native build, TypeScript, node --test.
	$(CARGO) build -p sluiceway-broker --bin sluiceway --locked
	cd node && npm ci --ignore-scripts --no-audit --no-fund
	cd node && npm run build
	cd node && npm test

check-client-build: ## The client-only build of sluiceway-core builds and links no server crate.
	CARGO=$(CARGO) bash scripts/check-client-build.sh

setup: ## Install what the project needs (idempotent; safe on a fresh machine).
	@bash scripts/setup.sh

bench: ## Criterion benchmarks of the storage engine; figures go in docs/benchmarks.md.
	$(CARGO) bench -p sluiceway-core --bench log

build: ## Debug build of the workspace.
	$(CARGO) build --workspace

fmt: ## Format the Rust code.
	$(CARGO) fmt --all

lint: ## Clippy over the workspace.
	$(CARGO) clippy --workspace --all-targets -- -D warnings
