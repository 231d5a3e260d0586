# strata: every step of the pipeline is a target that prints the manifest it made.
#   make test      set up a fresh machine and run every test
#   make example   set up and run the example pipeline end to end
#   make bench     run the benchmarks (strata, the reference and the hardware anchors, run alike;
#                  figures in bench/results/summary.json, see docs/bench.md)

SHELL := /bin/bash
CARGO ?= cargo
RELEASE := target/release

.PHONY: all build test setup example example-pyhello bench clean

all: build

setup:
	scripts/setup.sh

build:
	$(CARGO) build --release

test: setup
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets --quiet -- -D warnings
	if command -v cargo-nextest >/dev/null; then \
	  $(CARGO) nextest run --workspace --no-fail-fast; \
	else \
	  $(CARGO) test --workspace --no-fail-fast; \
	fi

# The example: the agatha backend as a layered image, built from source, loaded into Docker
# and run with its configs mounted (examples/agatha/Makefile has one target per step).
example: setup build
	scripts/services.sh docker
	$(MAKE) -C examples/agatha run STRATA_BIN=$(CURDIR)/$(RELEASE)

# The second example: a Python HTTP service with users, a CA bundle and /tmp (docs/rootfs.md).
example-pyhello: setup build
	scripts/services.sh docker
	$(MAKE) -C examples/pyhello run STRATA_BIN=$(CURDIR)/$(RELEASE)

bench: setup build
	bench/run.sh

clean:
	$(MAKE) -C examples/agatha clean
	$(MAKE) -C examples/pyhello clean
