# The two commands of the README:
#   make demo   set up everything, then run the pipeline live until Ctrl-C (`convmetrics demo --once`:
#               the bounded run, which prints the table and exits)
#   make test   set up everything, then lint, type-check, check the schemas and run all tests
# Everything installs from the project's own files: Python packages into .venv, the
# Apache Kafka jars (Maven Central) into ~/.cache/convmetrics on first broker start.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
TEST_WORKERS ?= 2  # pytest-xdist workers of make test (0: one process)
STAMP  := $(VENV)/.installed
NATIVE := producer/encoder.native-sha256

.PHONY: setup demo test lint typecheck rust-test schemas-check unit integration bench clean engine engine-stop image images container-test

$(STAMP): pyproject.toml .ci/system-deps.sh
	bash .ci/system-deps.sh
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	@touch $(STAMP)

# the gateway's Avro writer (mypyc) and the consumer's fold (Rust), built in place through
# the build backend (setup.py), as a wheel is; .ci/native.py drives it and stamps each part
$(NATIVE): $(STAMP) producer/encoder.py setup.py .ci/native.py consumer/native/Cargo.toml \
		consumer/native/Cargo.lock $(wildcard consumer/native/src/*.rs)
	$(BIN)/python .ci/native.py
	@touch $(NATIVE)

setup: $(STAMP) $(NATIVE)

demo: setup
	$(BIN)/convmetrics demo

# where cargo is missing the Rust steps say so and pass (the Python fold runs, as in setup);
# with CONVMETRICS_REQUIRE_NATIVE=1 (CI) a missing cargo is an error
NO_CARGO = if ! command -v cargo >/dev/null; then \
	if [ "$$CONVMETRICS_REQUIRE_NATIVE" = 1 ]; then echo "$@: cargo is required (CONVMETRICS_REQUIRE_NATIVE=1)" >&2; exit 1; fi; \
	echo "$@: no cargo here: the Rust crate is skipped" >&2; exit 0; fi; set -x;

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	@# the Rust fold: formatted, and clippy-clean with warnings as errors
	@$(NO_CARGO) cd consumer/native && cargo fmt --check && \
		CARGO_TARGET_DIR=$(CURDIR)/build/cargo-target PYO3_PYTHON=$(CURDIR)/$(BIN)/python \
		cargo clippy --release --locked --quiet -- -D warnings

typecheck: setup
	$(BIN)/mypy

test: setup
	@# the checks before pytest, two at a time (mypy keeps one core, the cargo builds of
	@# clippy and the crate's tests have their own target dirs); each one's output in one piece
	$(MAKE) --no-print-directory --output-sync=target -j2 lint typecheck rust-test schemas-check
	@# pytest exits 5 when it collected no test: that is a failure, never a pass. Two workers
	@# (pytest-xdist; TEST_WORKERS=0: one process): the integration tests mostly wait on Kafka,
	@# processes and timeouts, so two overlap well on two cores; each has its own broker,
	@# PostgreSQL and registry. --dist worksteal: an idle worker takes tests queued for the
	@# other (the default refills a worker with up to a quarter of the tests left, in file
	@# order, and never takes them back: 1,195 s of tests took 1,056 s on two workers)
	$(BIN)/pytest -n $(TEST_WORKERS) --dist worksteal; rc=$$?; if [ $$rc -eq 5 ]; then echo "pytest ran no test" >&2; exit 1; fi; exit $$rc

# the Rust fold's own unit tests (a test binary linked against this Python's libpython)
rust-test: setup
	@$(NO_CARGO) cd consumer/native && LD_LIBRARY_PATH=$$($(CURDIR)/$(BIN)/python -c 'import sysconfig; print(sysconfig.get_config_var("LIBDIR"))') \
		PYO3_PYTHON=$(CURDIR)/$(BIN)/python CARGO_TARGET_DIR=$(CURDIR)/build/cargo-test \
		cargo test --no-default-features --locked --quiet

schemas-check: setup
	$(BIN)/convmetrics schemas check

unit: setup
	$(BIN)/pytest tests/unit

integration: setup
	$(BIN)/pytest tests/integration

bench: setup
	$(BIN)/python bench/consumer.py

# Containers (docs/containers.md). The project's own Docker engine (Debian's docker.io, on
# its own socket; stopped by its PID), and images built offline on it: `make image` the
# convmetrics image, `make images` also Kafka and PostgreSQL. `make container-test` starts
# the engine, builds the images, runs the container suite (the compose stack, and the
# end-to-end and one fault test through testcontainers) and stops everything it started.
engine:
	bash deploy/engine.sh start

engine-stop:
	bash deploy/engine.sh stop

image: setup
	bash deploy/images.sh convmetrics

images: setup
	bash deploy/images.sh all

container-test: setup
	bash deploy/container-test.sh

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info build
	rm -f producer/*.so producer/*.native-sha256 consumer/fold/*.so consumer/fold/*.native-sha256
