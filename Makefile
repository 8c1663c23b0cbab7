# Thin wrapper over CMake: the README's two commands (`make demo`, `make test`) and a few more.
# Every target configures its own build directory, so they can run in any order.

JOBS ?= $(shell nproc 2>/dev/null || echo 2)
BUILD_PACKAGES := cmake g++ make
GATEWAY_PACKAGES := $(BUILD_PACKAGES) pkg-config libhiredis-dev libcpp-httplib-dev nlohmann-json3-dev
# The gateway's integration tests also run redis-server, nginx (auth_request) and wrk; yamllint and
# python3-yaml check the Kubernetes manifests.
TEST_PACKAGES := $(GATEWAY_PACKAGES) catch2 redis-server prometheus nginx wrk yamllint python3 python3-yaml
BENCH_PACKAGES := $(BUILD_PACKAGES) libbenchmark-dev python3

.PHONY: demo gateway bench-gateway test test-asan test-tsan bench bench-redis clean

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

# Installs missing packages (as root), builds everything, runs every test.
test:
	@.ci/ensure-packages $(TEST_PACKAGES)
	cmake -S . -B build/test -DCMAKE_BUILD_TYPE=RelWithDebInfo -DAIRL_BUILD_TESTS=ON -DAIRL_BUILD_EXAMPLES=ON
	cmake --build build/test -j$(JOBS)
	ctest --test-dir build/test --output-on-failure -j$(JOBS)

# The whole suite under AddressSanitizer + UndefinedBehaviorSanitizer, and under ThreadSanitizer
# (benchmarks are built by `make test` already; the sanitizer builds skip them).
test-asan:
	@.ci/ensure-packages $(TEST_PACKAGES)
	cmake -S . -B build/asan -DCMAKE_BUILD_TYPE=Debug -DAIRL_SANITIZER=address,undefined -DAIRL_BUILD_BENCH=OFF
	cmake --build build/asan -j$(JOBS)
	ctest --test-dir build/asan --output-on-failure -j$(JOBS)

test-tsan:
	@.ci/ensure-packages $(TEST_PACKAGES)
	cmake -S . -B build/tsan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DAIRL_SANITIZER=thread -DAIRL_BUILD_BENCH=OFF
	cmake --build build/tsan -j$(JOBS)
	ctest --test-dir build/tsan --output-on-failure -j$(JOBS)

# Builds the benchmarks in Release, runs them (5 repetitions, medians) and prints the ratio table.
bench:
	@.ci/ensure-packages $(BENCH_PACKAGES)
	cmake -S . -B build/bench -DCMAKE_BUILD_TYPE=Release -DAIRL_BUILD_TESTS=OFF -DAIRL_BUILD_EXAMPLES=OFF -DAIRL_BUILD_BENCH=ON
	cmake --build build/bench -j$(JOBS) --target airl_bench airl_bench_memory airl_bench_ai_serving
	python3 bench/summary.py --build build/bench/bench --repetitions 5
	./build/bench/bench/airl_bench_ai_serving --benchmark_repetitions=5 --benchmark_report_aggregates_only=true \
	  --benchmark_enable_random_interleaving=true

# The Redis backend against a private redis-server, next to plain hiredis: sequential allow() vs raw PING and
# EVALSHA, allow_many(64) vs 64 pipelined EVALSHA, 1 vs 4 threads, memory per bucket; ends with a ratio table.
bench-redis:
	@.ci/ensure-packages $(BUILD_PACKAGES) pkg-config libhiredis-dev redis-server
	cmake -S . -B build/bench -DCMAKE_BUILD_TYPE=Release -DAIRL_BUILD_TESTS=OFF -DAIRL_BUILD_EXAMPLES=OFF
	cmake --build build/bench -j$(JOBS) --target airl_redis_latency
	./build/bench/bench/airl_redis_latency --memory

# The gateway under wrk for 3 x 10 s: no limiter (the same binary, --unlimited), all admitted, mostly 429s.
bench-gateway:
	@.ci/ensure-packages $(GATEWAY_PACKAGES) wrk curl
	cmake -S . -B build/gateway -DCMAKE_BUILD_TYPE=Release -DAIRL_BUILD_TESTS=OFF -DAIRL_BUILD_EXAMPLES=ON
	cmake --build build/gateway -j$(JOBS) --target airl_gateway
	bench/gateway_wrk.sh build/gateway

clean:
	rm -rf build
