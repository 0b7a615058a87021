# Two commands do everything on a fresh machine: `make demo` and `make test`.
SHELL := /bin/bash
CARGO ?= cargo
export PATH := $(HOME)/.cargo/bin:$(PATH)

.PHONY: setup build demo test test-unit test-fixtures test-lab lint clean

setup:
	@./scripts/setup.sh

build: setup
	$(CARGO) build --release

demo: build
	./target/release/fulcrum-demo

# Layers: unit/property tests, packet fixtures through the verified program, netns labs.
test: build lint
	$(CARGO) test --release --lib --bins
	$(CARGO) test --release --doc -p fulcrum
	$(CARGO) test --release -p fulcrum-lab --test fixtures
	$(CARGO) test --release -p fulcrum-lab --test lab -- --test-threads=1
	./scripts/cli-test.sh

lint: setup
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --release --all-targets -- -D warnings

clean:
	$(CARGO) clean
