// SPDX-License-Identifier: MIT
// First benchmarks: one hot key, against the floor (clock + hash + uncontended lock) in the same binary,
// so the figure that matters is a ratio. The full suite (naive baseline, many keys, threads, Redis) is
// the benchmark issue's work.
#include <airl/airl.hpp>

#include <benchmark/benchmark.h>

#include <chrono>
#include <functional>
#include <mutex>
#include <string_view>

namespace {

using namespace std::chrono_literals;

// The unavoidable work of any limiter: read the clock, hash the key, take and release one lock.
void floor_clock_hash_lock(benchmark::State& state) {
  std::mutex mutex;
  const std::string_view user = "alice", model = "llama";
  for (auto _ : state) {
    const auto now = std::chrono::steady_clock::now();
    const std::size_t hash = std::hash<std::string_view>{}(user) ^ (std::hash<std::string_view>{}(model) << 1);
    std::lock_guard lock(mutex);
    benchmark::DoNotOptimize(now);
    benchmark::DoNotOptimize(hash);
  }
}
BENCHMARK(floor_clock_hash_lock);

// A flood on one key: limit 100 per second, so nearly every decision after the first 100 is a denial.
void rate_limiter_hot_key(benchmark::State& state) {
  airl::RateLimiter limiter({100, 1s});
  for (auto _ : state) benchmark::DoNotOptimize(limiter.allow("alice", "llama"));
}
BENCHMARK(rate_limiter_hot_key);

// Three tiers (user+model, user, global) on one hot user.
void multi_tier_hot_key(benchmark::State& state) {
  airl::MultiTierRateLimiter limiter({{"user_model", airl::Scope::user_model, {100, 1s}},
                                      {"user", airl::Scope::user, {1000, 1s}},
                                      {"global", airl::Scope::global, {100000, 1s}}});
  for (auto _ : state) benchmark::DoNotOptimize(limiter.allow("alice", "llama"));
}
BENCHMARK(multi_tier_hot_key);

}  // namespace
