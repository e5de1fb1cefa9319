# Troupe: two commands on a fresh machine — `make run` and `make test`.
SHELL := /bin/bash
CARGO_TARGET_DIR ?= $(CURDIR)/target
export CARGO_TARGET_DIR
TROUPE := $(CARGO_TARGET_DIR)/release/troupe
DATA_DIR ?= .troupe
LISTEN ?= 127.0.0.1:8080
# The functions workspace builds for wasm32-wasip2; its pure libraries test natively.
HOST_TRIPLE := $(shell rustc -vV | sed -n 's/^host: //p')

.PHONY: setup functions model scale-out-tools api-tools browser-tools build run worker test bench soak fuzz package-lambda image image-cuda cuda-check fmt lint clean

## setup: toolchain target, function components, embedding model (idempotent)
setup: functions model

functions:
	@./scripts/build-functions.sh

model:
	@./scripts/fetch-model.sh

# One cargo invocation for everything, so `run`, `test` and `bench` share one build
# (a narrower selection would resolve features differently and rebuild wasmtime).
build: setup
	cargo build --release --locked --workspace --all-targets

## run: the main job on the embedded default
run: build
	$(TROUPE) up --data-dir $(DATA_DIR) --listen $(LISTEN) --manifest spin.toml

## worker: the embedding worker alone (POST /v1/embeddings on 127.0.0.1:8081)
worker: build
	$(TROUPE) worker

## scale-out-tools: moto's S3/SQS server, Postgres + pgvector (pgserver), cfn-lint and a
## Kubernetes schema checker, in a virtual environment (the scale-out tests start the servers)
scale-out-tools:
	@./scripts/setup-scale-out.sh

## api-tools: Schemathesis and an OpenAPI validator in a virtual environment (the API
## description's tests run them)
api-tools:
	@./scripts/setup-api-tools.sh

## browser-tools: Debian's chromium and a virtual environment with Playwright and axe-core,
## for the console's browser test and benchmark (scripts/setup-browser.sh)
browser-tools:
	@./scripts/setup-browser.sh

## test: every test (builds what it needs first)
test: build scale-out-tools api-tools browser-tools
	cargo test --release --locked --workspace --no-fail-fast
	cd functions && CARGO_TARGET_DIR=$${FUNCTIONS_TARGET_DIR:-$(CURDIR)/functions/target} \
	  cargo test --release --locked -p troupe-text --target $(HOST_TRIPLE)

## bench: every benchmark (BENCHMARKS.md); each script installs or names the tools it
## runs (the embedding reference: scripts/setup-bench-python.sh)
bench: build browser-tools
	cargo bench --locked --workspace --bench queue
	cargo bench --locked --workspace --bench dispatch
	cargo bench --locked --workspace --bench vectors
	./scripts/bench-http.sh
	./scripts/bench-auth.sh
	./scripts/bench-embeddings.sh
	./scripts/bench-pipeline.sh
	./scripts/bench-tracing.sh
	./scripts/bench-idle.sh
	./scripts/bench-events.sh
	./scripts/bench-console.sh
	./scripts/bench-vectors-1m.sh

## soak: SIGKILLs at random moments while 200 documents are indexed, on both backends
## (TROUPE_SOAK_DOCS, TROUPE_SOAK_KILLS, TROUPE_SOAK_BACKENDS …: scripts/soak.sh)
soak: build scale-out-tools
	./scripts/soak.sh

## fuzz: every cargo-fuzz target (nightly) for FUZZ_RUNS runs or FUZZ_SECONDS each; the
## crashes they found are replayed by `make test` on stable (FUZZING.md)
fuzz:
	./scripts/fuzz.sh

## package-lambda: dist/troupe-lambda.zip, the bundle infra/aws deploys (cargo-lambda + zig)
package-lambda:
	@./scripts/package-lambda.sh

## cuda-check: `troupe` built with CUDA for CUDA_COMPUTE_CAP (default 90), no GPU needed:
## the toolkit comes from PyPI, the build goes to ~/.cache/troupe-cuda-target (scripts/cuda-check.sh)
CUDA_COMPUTE_CAP ?= 90
cuda-check:
	CUDA_COMPUTE_CAP=$(CUDA_COMPUTE_CAP) ./scripts/cuda-check.sh

## image, image-cuda: the container images infra/k8s and infra/aws run (needs Docker);
## image-cuda builds with the same PyPI toolkit as cuda-check
image:
	docker build -t troupe:latest .

image-cuda:
	docker build -t troupe:cuda --target cuda --build-arg FEATURES=cuda \
	  --build-arg CUDA_COMPUTE_CAP=$(CUDA_COMPUTE_CAP) .

fmt:
	cargo fmt --all
	cd functions && cargo fmt --all

lint:
	cargo fmt --all --check
	cd functions && cargo fmt --all --check
	cargo clippy --release --locked --workspace --all-targets -- -D warnings
	cd functions && cargo clippy --release --locked -- -D warnings

clean:
	rm -rf target functions/target functions/dist models dist
