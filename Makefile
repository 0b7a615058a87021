# Two commands do everything on a fresh machine: `make demo` and `make test`.
SHELL := /bin/bash
CARGO ?= cargo
export PATH := $(HOME)/.cargo/bin:$(PATH)

.PHONY: setup build demo test bench fuzz soak flood lint clean

setup:
	@./scripts/setup.sh

build: setup
	$(CARGO) build --release

demo: build
	./target/release/fulcrum-demo

# Every layer: unit and property tests (fulcrum --lib), packet fixtures through the
# verified program (fulcrum-lab --test fixtures), packet fuzzing through it (--test fuzz),
# netns labs (fulcrum-lab --test lab),
# the command line as a user runs it (fulcrum-cli --test balance), and doc examples.
test: build lint
	$(CARGO) test --release

# Every figure against a baseline measured in the same run; writes target/bench/results.json.
bench: build
	./target/release/fulcrum-bench

# The soak test for longer: SOAK_CYCLES cycles of its 40-second script (10 by default).
SOAK_CYCLES ?= 10
soak: build
	SOAK_CYCLES=$(SOAK_CYCLES) $(CARGO) test --release -p fulcrum-cli --test soak -- --nocapture

# The packet fuzzer for a long run: ten million frames (FUZZ_FRAMES, FUZZ_SECONDS and
# FUZZ_SEED override); `make test` runs a million.
fuzz: build
	FUZZ_FRAMES=$${FUZZ_FRAMES:-10000000} $(CARGO) test --release -p fulcrum-lab --test fuzz -- --nocapture

# The flood lab in its full form: a 10-second spoofed flood (FLOOD_SECONDS overrides);
# `make test` runs 3 seconds.
FLOOD_SECONDS ?= 10
flood: build
	FLOOD_SECONDS=$(FLOOD_SECONDS) $(CARGO) test --release -p fulcrum-bench --test flood -- --nocapture

lint: setup
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --release --all-targets -- -D warnings
	$(CARGO) +nightly clippy -p fulcrum-ebpf --release --target bpfel-unknown-none \
		-Z build-std=core -- -D warnings

clean:
	$(CARGO) clean
