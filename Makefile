# Sluiceway's command vocabulary: the README, developers and .ci/run all use these targets.
# `make help` lists them.

CARGO ?= cargo
DATA_DIR ?= ./sluiceway-data
LISTEN ?= 127.0.0.1:9292

.PHONY: help run test test-rust test-python bench-python test-node bench-node test-kotlin test-swift uniffi check-client-build setup bench build fmt lint

help: ## List the targets.
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-20s %s\n", $$1, $$2}'

run: setup ## The main job: one broker with the embedded registry (release build).
	$(CARGO) run --release -p sluiceway-broker --bin sluiceway -- broker --data-dir $(DATA_DIR) --listen $(LISTEN)

test: setup check-client-build test-rust test-python test-node test-kotlin test-swift ## Every test in every language (what .ci/run calls).

test-rust: ## Rust tests for the whole workspace (debug build).
	$(CARGO) test --workspace --locked

# The Python client: a virtualenv under the repo with pinned tools from PyPI, a debug build of
# the package (maturin develop, the client-only features), mypy --strict over the package, its
# tests and the example, stubtest of the hand-written _native.pyi, and pytest against a real
# broker (target/debug/sluiceway). pytest also checks the packaging (tests/test_packaging.py):
# `maturin build --release` makes a cp39-abi3 wheel, then `pip install ./python` in a fresh
# virtualenv (maturin fetched from PyPI by pip) reuses that release build in target/.
VENV ?= .venv
PYTHON ?= python3
PY_TOOLS = maturin==1.16.0 pytest==8.4.2 pytest-timeout==2.4.0 mypy==1.18.2

test-python: ## Python client tests (venv in .venv, debug build, mypy --strict, stubtest, pytest).
	$(CARGO) build -p sluiceway-broker --bin sluiceway
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --disable-pip-version-check $(PY_TOOLS)
	cd python && VIRTUAL_ENV=$(abspath $(VENV)) $(abspath $(VENV))/bin/maturin develop -q
	cd python && $(abspath $(VENV))/bin/mypy
	cd python && $(abspath $(VENV))/bin/python -m mypy.stubtest sluiceway._native
	cd python && $(abspath $(VENV))/bin/python -m pytest -q

# Python throughput beside the Rust client and confluent-kafka against Apache Kafka (never part
# of `make test`): release broker; the package (`pip install ./python`: a release build,
# installed as a copy, since `maturin develop` would put its .so into python/sluiceway/, which
# the debug .venv shares) and confluent-kafka from PyPI in their own virtualenv; Kafka from
# bench/kafka.sh. Prints JSON lines (python/bench/compare.sh).
BENCH_VENV ?= .venv-bench
KAFKA_SH ?= bench/kafka.sh

bench-python: ## Python client throughput vs the Rust client and confluent-kafka→Kafka (release builds).
	$(CARGO) build --release -p sluiceway-broker --bin sluiceway
	test -x $(BENCH_VENV)/bin/python || $(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/pip install -q --disable-pip-version-check confluent-kafka==2.16.1
	$(BENCH_VENV)/bin/pip install -q --disable-pip-version-check --force-reinstall ./python
	PYTHON=$(BENCH_VENV)/bin/python KAFKA_SH=$(abspath $(KAFKA_SH)) bash python/bench/compare.sh

test-node: setup ## Node.js package: npm ci (lockfile), debug native build, TypeScript, node --test.
	$(CARGO) build -p sluiceway-broker --bin sluiceway --locked
	cd node && npm ci --ignore-scripts --no-audit --no-fund
	cd node && npm run build
	cd node && npm test

# The Node package's throughput (node/bench/): a release broker and native module, kafkajs from
# npm into node/bench/node_modules (for the Kafka side only), then node/bench/compare.sh.
bench-node: setup ## Node package msgs/s beside `sluiceway bench` and kafkajs→Kafka (release builds; docs/benchmarks.md).
	$(CARGO) build --release -p sluiceway-broker --bin sluiceway --locked
	cd node && npm ci --ignore-scripts --no-audit --no-fund
	cd node && npm run build:native:release && npm run build:ts
	cd node/bench && npm ci --no-audit --no-fund
	bash node/bench/compare.sh

# The Kotlin and Swift clients (UniFFI): one debug build of the broker, the cdylib and the
# bindgen (one cargo call, so features unify once), then the bindgen reads the library.
# Kotlin: generated into bindings/kotlin/target (not committed), Maven fetches Kotlin, JNA,
# coroutines and JUnit from Maven Central. Swift: bindings/swift/check.sh.
BINDGEN = target/debug/uniffi-bindgen
UNIFFI_LIB = target/debug/libsluiceway_uniffi.so

uniffi: ## Debug build of the broker, the UniFFI library and uniffi-bindgen.
	$(CARGO) build -p sluiceway-broker -p sluiceway-uniffi -p sluiceway-uniffi-bindgen

test-kotlin: uniffi ## Kotlin client tests (generated Kotlin + JUnit 5 via Maven against a real broker).
	rm -rf bindings/kotlin/target/generated-sources/uniffi
	$(BINDGEN) generate --library $(UNIFFI_LIB) --language kotlin --no-format --out-dir bindings/kotlin/target/generated-sources/uniffi
	rm -rf bindings/kotlin/target/surefire-reports
	cd bindings/kotlin && mvn -q -B test
	@bash scripts/surefire-summary.sh bindings/kotlin/target/surefire-reports

test-swift: uniffi ## Swift checks: committed generated sources current, header parses, swift test if present.
	BINDGEN=$(BINDGEN) UNIFFI_LIB=$(UNIFFI_LIB) bash bindings/swift/check.sh

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
