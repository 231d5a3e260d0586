# strata: every step of the pipeline is a target that prints the manifest it made.
#   make test      set up a fresh machine and run every test
#   make example   set up and run the example pipeline end to end
#   make bench     run the benchmarks (ratios against the references, measured in one run)

SHELL := /bin/bash
CARGO ?= cargo
RELEASE := target/release
STRATA_STORE_ROOT ?= $(CURDIR)/.strata-example/root
export STRATA_STORE_ROOT
EX := .strata-example

.PHONY: all build test setup example bench clean

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

# The example, one step at a time (each prints what it made).
$(EX)/app: 
	mkdir -p $(EX)/app/share/doc && echo "strata example" > $(EX)/app/share/doc/README

$(EX)/app.json: build $(EX)/app
	$(RELEASE)/store-add --name example-app $(EX)/app | tee $@

$(EX)/closure.json: $(EX)/app.json
	$(RELEASE)/store-query closure - < $< | tee $@

example: setup $(EX)/closure.json
	$(RELEASE)/store-query verify && echo "example: store verified"

bench: setup build
	bench/run.sh

clean:
	rm -rf $(EX)
