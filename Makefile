# Two commands a fresh machine needs: `make run` and `make test` (see README.md).
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEBIAN_PACKAGES := espeak-ng flite festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts sox libsox-fmt-all
# The browser test of the enrollment page (tests/web): Debian's Chromium and its ChromeDriver; never for `make run`.
BROWSER_PACKAGES := chromium chromium-driver
# The README's examples, which tests/docs runs, use curl and jq (sox comes with DEBIAN_PACKAGES).
DOCS_TEST_PACKAGES := curl jq
AXE := tests/web/node_modules/axe-core/axe.min.js
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: run test deps debian-deps web-test-deps bench-foundation bench-foundation-headline bench-serving bench-embedded-memory corpus reliability clean

run: deps ## set up and run the service on the embedded default (SQLite, local object store, SQLite broker)
	$(BIN)/hra run

test: deps web-test-deps ## set up and run the whole test suite
	$(BIN)/python -m pytest -q

deps: debian-deps $(STAMP)

# Text-to-speech engines build the corpora and test fixtures; install them only when one is missing.
debian-deps:
	@missing=""; for p in $(DEBIAN_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:$$missing"; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi

# Only `make test` needs these: Chromium and ChromeDriver from Debian (no browser download), and axe-core, pinned in
# tests/web/package-lock.json, for the accessibility check the browser test runs in the page.
web-test-deps: $(AXE)
	@missing=""; for p in $(BROWSER_PACKAGES) $(DOCS_TEST_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:$$missing"; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi

$(AXE): tests/web/package.json tests/web/package-lock.json
	cd tests/web && npm ci --no-audit --no-fund --silent
	@touch $@

$(STAMP): pyproject.toml
	@[ -x $(BIN)/python ] || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first and alone, pinned, so that no other package can pull a different build.
	$(BIN)/python -m pip install -q torch==2.14.1 torchaudio==2.11.0
	$(BIN)/python -m pip install -q -e '.[dev]'
	@touch $(STAMP)

# The full grid is hours of CPU; `make bench-foundation BENCH_ARGS=--quick` runs 4 voices (about an hour).
bench-foundation: deps ## the foundation benchmark: table, JSON under benchmarks/results/, one JSON line last
	$(BIN)/python -m hra.bench.foundation $(BENCH_ARGS)

# The headline grid over all 19 new-speaker voices on two cores (about 75 minutes); see the script's header.
bench-foundation-headline: deps ## headline grid in two lanes -> benchmarks/results/foundation.json
	PY=$(BIN)/python sh benchmarks/foundation_headline.sh

# Serving side by side with faster-whisper in one run (benchmarks/serving.py): the API over HTTP (base; K = 1, 8, 64
# synthetic heads) vs faster-whisper int8 at 1, 4, 16 clients, a 10-min long-form file, peak RSS. About 11 minutes;
# `make bench-serving BENCH_ARGS=--quick` (real recordings only, K = 1, 64, 3-min long-form) about 5.
bench-serving: deps ## serving vs faster-whisper: table, benchmarks/results/serving.json, one JSON line last
	OMP_NUM_THREADS=1 $(BIN)/python benchmarks/serving.py $(BENCH_ARGS)

# Memory of `hra run` through a speaker's whole life (benchmarks/embedded_memory.py): the process tree's peak PSS and
# summed RSS, each process's peak RSS. About 1 minute.
bench-embedded-memory: deps ## embedded mode's memory: benchmarks/results/embedded_memory.json, one JSON line last
	OMP_NUM_THREADS=1 $(BIN)/python benchmarks/embedded_memory.py

# Fault injection and load (benchmarks/reliability.py; not part of `make test`, whose tests/reliability runs one trial
# of each): kill -9 of each process TRIALS times (default 20), 50 clients for 60 s; needs the test services (PostgreSQL,
# Redis). A table, benchmarks/results/reliability.json, one JSON line last. About 17 minutes on two busy cores.
TRIALS ?= 20
reliability: deps ## fault-injection report: kill -9 trials and a bounded load -> benchmarks/results/reliability.json
	TRIALS=$(TRIALS) $(BIN)/python -m benchmarks.reliability $(RELIABILITY_ARGS)

clean:
	rm -rf var .pytest_cache
