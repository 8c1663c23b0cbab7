# Thin wrapper over CMake: the README's two commands (`make demo`, `make test`) and a few more.
# Every target configures its own build directory, so they can run in any order.

JOBS ?= $(shell nproc 2>/dev/null || echo 2)
BUILD_PACKAGES := cmake g++ make
GATEWAY_PACKAGES := $(BUILD_PACKAGES) pkg-config libhiredis-dev libcpp-httplib-dev nlohmann-json3-dev
# The gateway's integration tests also run redis-server, nginx (auth_request) and wrk; yamllint and
# python3-yaml check the Kubernetes manifests.
TEST_PACKAGES := $(GATEWAY_PACKAGES) catch2 redis-server prometheus nginx wrk yamllint python3 python3-yaml
BENCH_PACKAGES := $(BUILD_PACKAGES) libbenchmark-dev python3
# libFuzzer comes with clang's runtime libraries (libclang-rt-dev; clang only recommends it).
FUZZ_PACKAGES := $(BUILD_PACKAGES) clang libclang-rt-dev pkg-config libhiredis-dev nlohmann-json3-dev

.PHONY: demo gateway bench-gateway soak test test-asan test-tsan test-clang test-core fuzz bench bench-redis bench-compile \
  bench-instructions sdk-packages clean

# Builds and runs the simulated serving binary on the in-memory backend.
demo:
	@.ci/ensure-packages $(BUILD_PACKAGES)
	cmake -S . -B build/demo -DCMAKE_BUILD_TYPE=Release -DAIRL_BUILD_TESTS=OFF -DAIRL_BUILD_EXAMPLES=ON \
	  -DAIRL_BUILD_GATEWAY=OFF
	cmake --build build/demo -j$(JOBS) --target demo
	./build/demo/examples/demo

# Builds and runs the HTTP gateway (examples/gateway) on 127.0.0.1:8080, in memory, with the sample config.
# Extra flags: make gateway GATEWAY_FLAGS="--redis 127.0.0.1:6379 --failure-policy local"
GATEWAY_FLAGS ?=
gateway:
	@.ci/ensure-packages $(GATEWAY_PACKAGES)
	cmake -S . -B build/gateway -DCMAKE_BUILD_TYPE=Release -DAIRL_BUILD_TESTS=OFF -DAIRL_BUILD_EXAMPLES=ON
	cmake --build build/gateway -j$(JOBS) --target airl_gateway
	./build/gateway/examples/gateway/airl_gateway --config examples/gateway/gateway.conf $(GATEWAY_FLAGS)

# The official OpenAI Node SDK for tests/gateway/gateway_sdk_test.cpp, at the version its lock file pins
# (node and npm from Debian when missing; the package from the npm registry).
sdk-packages:
	@command -v npm >/dev/null 2>&1 || .ci/ensure-packages nodejs npm
	npm ci --prefix tests/gateway/sdk --no-audit --no-fund --loglevel=error

# The soak (docs/RELIABILITY.md): the gateway on a private redis-server for SOAK_SECONDS under a mixed load
# while Redis is restarted and SIGSTOPped at seeded random moments (SOAK_SEED=N replays a run); fails on
# resource growth after the warm-up, an over-admitted bucket or a settled cost Redis does not hold.
# Builds only the gateway and the driver, in Release. CI: make soak SOAK_SECONDS=60
SOAK_SECONDS ?= 600
SOAK_SEED ?=
soak:
	@.ci/ensure-packages $(GATEWAY_PACKAGES) catch2 redis-server python3
	cmake -S . -B build/soak -DCMAKE_BUILD_TYPE=Release -DAIRL_BUILD_TESTS=ON -DAIRL_BUILD_EXAMPLES=ON \
	  -DAIRL_BUILD_BENCH=OFF
	cmake --build build/soak -j$(JOBS) --target airl_soak
	SOAK_SECONDS=$(SOAK_SECONDS) SOAK_SEED=$(SOAK_SEED) ./build/soak/tests/soak/airl_soak

# Installs missing packages (as root), builds everything, runs every test.
test: sdk-packages
	@.ci/ensure-packages $(TEST_PACKAGES)
	cmake -S . -B build/test -DCMAKE_BUILD_TYPE=RelWithDebInfo -DAIRL_BUILD_TESTS=ON -DAIRL_BUILD_EXAMPLES=ON
	cmake --build build/test -j$(JOBS)
	ctest --test-dir build/test --output-on-failure -j$(JOBS)

# The whole suite under AddressSanitizer + UndefinedBehaviorSanitizer, and under ThreadSanitizer
# (benchmarks are built by `make test` already; the sanitizer builds skip them).
test-asan: sdk-packages
	@.ci/ensure-packages $(TEST_PACKAGES)
	cmake -S . -B build/asan -DCMAKE_BUILD_TYPE=Debug -DAIRL_SANITIZER=address,undefined -DAIRL_BUILD_BENCH=OFF
	cmake --build build/asan -j$(JOBS)
	ctest --test-dir build/asan --output-on-failure -j$(JOBS)

test-tsan: sdk-packages
	@.ci/ensure-packages $(TEST_PACKAGES)
	cmake -S . -B build/tsan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DAIRL_SANITIZER=thread -DAIRL_BUILD_BENCH=OFF
	cmake --build build/tsan -j$(JOBS)
	ctest --test-dir build/tsan --output-on-failure -j$(JOBS)

# The whole suite built with clang, warnings as errors: clang also checks the locking rules the headers state
# (-Wthread-safety, detail/thread_annotations.hpp). Runs it too.
test-clang: sdk-packages
	@.ci/ensure-packages $(TEST_PACKAGES) clang
	CXX=clang++ cmake -S . -B build/clang -DCMAKE_BUILD_TYPE=Debug -DAIRL_WARNINGS_AS_ERRORS=ON -DAIRL_BUILD_BENCH=OFF
	cmake --build build/clang -j$(JOBS)
	ctest --test-dir build/clang --output-on-failure -j$(JOBS)

# The core and AI-serving tests without the Redis backend (AIRL_REDIS=OFF: nothing links hiredis).
test-core:
	@.ci/ensure-packages $(BUILD_PACKAGES) catch2 python3 python3-yaml yamllint prometheus
	cmake -S . -B build/core -DCMAKE_BUILD_TYPE=Debug -DAIRL_REDIS=OFF -DAIRL_BUILD_GATEWAY=OFF -DAIRL_BUILD_BENCH=OFF
	cmake --build build/core -j$(JOBS)
	ctest --test-dir build/core --output-on-failure -j$(JOBS)

# The libFuzzer targets of tests/fuzz (clang, ASan + UBSan), each run for FUZZ_SECONDS on a scratch copy of its
# committed corpus; fails on any finding (reproducers in build/fuzz/fuzz-work/<target>/artifacts/).
# FUZZ_TARGETS="http_text gateway" runs some; FUZZ_MERGE=1 merges new coverage into the committed corpus.
FUZZ_SECONDS ?= 600
FUZZ_TARGETS ?=
FUZZ_MERGE ?= 0
fuzz:
	@.ci/ensure-packages $(FUZZ_PACKAGES)
	CXX=clang++ cmake -S . -B build/fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo -DAIRL_BUILD_FUZZ=ON -DAIRL_REDIS=ON \
	  -DAIRL_BUILD_TESTS=OFF -DAIRL_BUILD_EXAMPLES=OFF -DAIRL_BUILD_BENCH=OFF -DAIRL_INSTALL=OFF
	cmake --build build/fuzz -j$(JOBS) --target airl_fuzzers
	FUZZ_MERGE=$(FUZZ_MERGE) tests/fuzz/run_fuzzers.sh build/fuzz $(FUZZ_SECONDS) $(FUZZ_TARGETS)

# Builds the benchmarks in Release, runs them (5 repetitions, medians) and prints the ratio table.
bench:
	@.ci/ensure-packages $(BENCH_PACKAGES)
	cmake -S . -B build/bench -DCMAKE_BUILD_TYPE=Release -DAIRL_BUILD_TESTS=OFF -DAIRL_BUILD_EXAMPLES=OFF -DAIRL_BUILD_BENCH=ON
	cmake --build build/bench -j$(JOBS) --target airl_bench airl_bench_memory airl_bench_ai_serving
	python3 bench/summary.py --build build/bench/bench --repetitions 5
	./build/bench/bench/airl_bench_ai_serving --benchmark_repetitions=5 --benchmark_report_aggregates_only=true \
	  --benchmark_enable_random_interleaving=true

# The Redis backend against a private redis-server, next to plain hiredis: sequential allow() vs raw PING and
# EVALSHA, allow_many(64) vs 64 pipelined EVALSHA, 1 vs 4 threads, Redis server time per decision against a
# minimal sliding-log script (--server-time runs only that), memory per bucket; ends with a ratio table.
bench-redis:
	@.ci/ensure-packages $(BUILD_PACKAGES) pkg-config libhiredis-dev redis-server
	cmake -S . -B build/bench -DCMAKE_BUILD_TYPE=Release -DAIRL_BUILD_TESTS=OFF -DAIRL_BUILD_EXAMPLES=OFF
	cmake --build build/bench -j$(JOBS) --target airl_redis_latency
	./build/bench/bench/airl_redis_latency --memory

# What including airl costs a user's build: compile time and peak memory of translation units that use it.
bench-compile:
	@.ci/ensure-packages $(BUILD_PACKAGES) python3
	python3 bench/compile_time.py --runs 3

# Instructions per decision on the hot paths (callgrind: the same count on a busy machine), medians of 5 runs.
bench-instructions:
	@.ci/ensure-packages $(BUILD_PACKAGES) valgrind
	cmake -S . -B build/bench -DCMAKE_BUILD_TYPE=Release -DAIRL_BUILD_TESTS=OFF -DAIRL_BUILD_EXAMPLES=OFF
	cmake --build build/bench -j$(JOBS) --target airl_instruction_counts
	bench/instruction_counts.sh build/bench/bench/airl_instruction_counts 20000 5

# The gateway under wrk, about a minute: no limiter (the same binary, --unlimited) and all admitted, alternating
# for ROUNDS x SECONDS_PER_RUN s, then mostly 429s; prints the limiter's share of admitted throughput.
bench-gateway:
	@.ci/ensure-packages $(GATEWAY_PACKAGES) wrk curl
	cmake -S . -B build/gateway -DCMAKE_BUILD_TYPE=Release -DAIRL_BUILD_TESTS=OFF -DAIRL_BUILD_EXAMPLES=ON
	cmake --build build/gateway -j$(JOBS) --target airl_gateway
	bench/gateway_wrk.sh build/gateway

clean:
	rm -rf build
