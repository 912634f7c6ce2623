# flowmark — thin wrapper over CMake presets. `make run` and `make test` work on a fresh
# Debian 12 machine as root: they install what they need first (scripts/install-deps.sh).
SHELL := /bin/bash
JOBS ?= $(shell nproc)

.PHONY: all deps build build-asan build-fuzz run demo-mcast demo-collector test test-unit test-asan test-integration \
        package fuzz bench lint format clean

all: build

deps:
	@./scripts/install-deps.sh

build: deps
	@cmake --preset release >/dev/null
	@cmake --build --preset release -j $(JOBS)

build-asan: deps
	@cmake --preset asan >/dev/null
	@cmake --build --preset asan -j $(JOBS)

build-fuzz: deps
	@cmake --preset fuzz >/dev/null
	@cmake --build --preset fuzz -j $(JOBS)

# The main job on a built-in default: flowmarkd marking this host's TCP connections
# (sockets source → fireflies to a local collector, Prometheus on 127.0.0.1:9000).
run: build
	@./scripts/run-service.sh build/release

# The multicast demonstration between two network namespaces.
demo-mcast: build
	@./scripts/demo.sh build/release

# The collector of fireflies: flowmarkd with a store, the dashboard and aggregate metrics,
# fed by four simulated sites; the dashboard's URL is printed.
demo-collector: build
	@./scripts/demo-collector.sh build/release

# Everything: unit, integration and package tests (release), unit tests under ASan+UBSan,
# and a short run of every fuzz target. As root no test may skip unless
# tests/skip-allowlist.txt says why (scripts/check-skips.py reads CTest's JUnit report and
# names the skipped tests).
test: build build-asan build-fuzz
	@ctest --test-dir build/release --output-on-failure -j 1 \
	  --output-junit $(CURDIR)/build/release/ctest-junit.xml
	@./scripts/check-skips.py build/release/ctest-junit.xml
	@ctest --test-dir build/asan --output-on-failure -L unit -j $(JOBS) \
	  --output-junit $(CURDIR)/build/asan/ctest-junit.xml
	@./scripts/check-skips.py build/asan/ctest-junit.xml
	@./scripts/fuzz.sh build/fuzz 20

test-unit: build
	@ctest --test-dir build/release --output-on-failure -L unit -j $(JOBS)

test-integration: build
	@ctest --test-dir build/release --output-on-failure -L integration

# The Debian package, build/release/flowmark_<version>-<release>_<arch>.deb
# (cmake/Packaging.cmake); tests/package/test_package.sh installs, checks and purges it.
package: build
	@cd build/release && cpack -G DEB

fuzz: build-fuzz
	@./scripts/fuzz.sh build/fuzz $${FUZZ_SECONDS:-300}

bench: build
	@./bench/run.sh build/release

lint: build
	@./scripts/lint.sh build/release

format:
	@clang-format -i $$(git ls-files '*.cpp' '*.hpp' '*.h')

clean:
	rm -rf build
