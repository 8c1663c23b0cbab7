// SPDX-License-Identifier: MIT
// What the AI-serving features cost, each next to the baseline it extends, in one binary and one run:
//   - plans: an RPM + TPM limiter deciding with a plan and overrides in force, against the same limiter
//     with no rules set (which reads none of them);
//   - settle: allow() with a request id followed by settle(), against allow() with a request id alone;
//   - concurrency caps: ConcurrencyLimiter try_acquire + release (1 and 2 caps), against a bare
//     mutex-protected map of in-flight counts (the floor of any exact in-process cap).
// Keys rotate over 1000 users. The rate limiters run on a ManualClock moved 1 us per iteration, so with 1 s
// windows every bucket holds the same 1000 live entries in both subjects of a pair, however fast each runs
// (on the real clock a slower subject would keep smaller logs and look cheaper). Run:
//   build/bench/bench/airl_bench_ai_serving --benchmark_repetitions=5 --benchmark_report_aggregates_only=true

#include <airl/airl.hpp>

#include <benchmark/benchmark.h>

#include <array>
#include <chrono>
#include <cstdint>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

namespace {

using namespace std::chrono_literals;

constexpr std::size_t user_count = 1000;

const std::vector<std::string>& users() {
  static const std::vector<std::string> names = [] {
    std::vector<std::string> out;
    for (std::size_t i = 0; i < user_count; ++i) out.push_back("user-" + std::to_string(i));
    return out;
  }();
  return names;
}

std::vector<airl::Tier> rpm_and_tpm() {
  return {{"rpm", airl::Scope::user_model, {1'000'000'000, 1s}, airl::Unit::requests},
          {"tpm", airl::Scope::user_model, {1'000'000'000'000, 1s}}};
}

void decide(benchmark::State& state, bool with_rules) {
  airl::ManualClock clock;
  airl::MultiTierLimiter<airl::InMemoryStorage<airl::ManualClock>> limiter(
      rpm_and_tpm(), airl::InMemoryStorage<airl::ManualClock>({}, clock));
  std::string_view plan;
  if (with_rules) {
    limiter.set_plan("pro", {{"rpm", 2'000'000'000}, {"tpm", 2'000'000'000'000}});
    limiter.set_override({.tier = "tpm", .user = "user-7"}, 3'000'000'000'000);
    limiter.set_override({.tier = "rpm", .model = "other-model"}, 5);
    plan = "pro";
  }
  std::size_t i = 0;
  for (auto _ : state) {
    const std::string& user = users()[i++ % user_count];
    benchmark::DoNotOptimize(limiter.allow({.user = user, .model = "llama", .cost = 700, .plan = plan}));
    clock.advance(1us);
  }
}

void BM_rpm_tpm_no_rules(benchmark::State& state) { decide(state, false); }
void BM_rpm_tpm_plan_and_overrides(benchmark::State& state) { decide(state, true); }
BENCHMARK(BM_rpm_tpm_no_rules);
BENCHMARK(BM_rpm_tpm_plan_and_overrides);

using ManualLimiter = airl::MultiTierLimiter<airl::InMemoryStorage<airl::ManualClock>>;

void reserve(benchmark::State& state, bool then_settle) {
  airl::ManualClock clock;
  ManualLimiter limiter(rpm_and_tpm(), airl::InMemoryStorage<airl::ManualClock>({}, clock));
  std::uint64_t n = 0;
  std::string id;
  for (auto _ : state) {
    const std::string& user = users()[n % user_count];
    id = "req-" + std::to_string(n++);
    benchmark::DoNotOptimize(limiter.allow({.user = user, .model = "llama", .cost = 5'000, .request_id = id}));
    if (then_settle) benchmark::DoNotOptimize(limiter.settle(user, "llama", id, 1'234));
    clock.advance(1us);
  }
}

void BM_allow_with_id(benchmark::State& state) { reserve(state, false); }
void BM_allow_with_id_then_settle(benchmark::State& state) { reserve(state, true); }
BENCHMARK(BM_allow_with_id);
BENCHMARK(BM_allow_with_id_then_settle);

// The floor of an exact in-process cap: one mutex, one map from scope to in-flight count.
class MutexCounts {
 public:
  bool try_acquire(const std::string& scope, std::uint64_t cap) {
    std::lock_guard lock(mutex_);
    std::uint64_t& held = counts_[scope];
    if (held >= cap) return false;
    ++held;
    return true;
  }
  void release(const std::string& scope) {
    std::lock_guard lock(mutex_);
    --counts_[scope];
  }

 private:
  std::mutex mutex_;
  std::unordered_map<std::string, std::uint64_t> counts_;
};

void BM_caps_floor_mutex_map(benchmark::State& state) {
  MutexCounts counts;
  std::size_t i = 0;
  for (auto _ : state) {
    const std::string& user = users()[i++ % user_count];
    if (counts.try_acquire(user, 4)) counts.release(user);
  }
}
BENCHMARK(BM_caps_floor_mutex_map);

void BM_caps_one_cap(benchmark::State& state) {
  airl::ConcurrencyLimiter limiter({{"user", airl::Scope::user, 4, 60s}});
  std::size_t i = 0;
  for (auto _ : state) {
    airl::Permit permit = limiter.try_acquire(users()[i++ % user_count], "llama");
    benchmark::DoNotOptimize(permit.acquired());
  }
}
BENCHMARK(BM_caps_one_cap);

void BM_caps_user_and_global(benchmark::State& state) {
  airl::ConcurrencyLimiter limiter({{"user", airl::Scope::user, 4, 60s}, {"gpu", airl::Scope::global, 64, 60s}});
  std::size_t i = 0;
  for (auto _ : state) {
    airl::Permit permit = limiter.try_acquire(users()[i++ % user_count], "llama");
    benchmark::DoNotOptimize(permit.acquired());
  }
}
BENCHMARK(BM_caps_user_and_global);

}  // namespace
