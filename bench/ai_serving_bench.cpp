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
//     --benchmark_enable_random_interleaving=true    (one command line)
// After the usual output it prints each pair's ratio of median CPU times (one run, so the machine's noise
// moves both sides), with the target where the issue set one (issue 18: one cap <= 3x the floor).

#include <airl/airl.hpp>

#include <benchmark/benchmark.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <map>
#include <optional>
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

// Collects each benchmark's CPU time per iteration (its median aggregate, or its single run without
// repetitions) while the console reporter prints as usual, so main() can print the pairs' ratios.
class RatioReporter : public benchmark::ConsoleReporter {
 public:
  void ReportRuns(const std::vector<Run>& runs) override {
    ConsoleReporter::ReportRuns(runs);
    for (const Run& run : runs) {
      if (run.error_occurred) continue;
      if (run.run_type == Run::RT_Aggregate && run.aggregate_name == "median") {
        medians_[run.run_name.function_name] = run.GetAdjustedCPUTime();
      } else if (run.run_type == Run::RT_Iteration) {
        times_[run.run_name.function_name].push_back(run.GetAdjustedCPUTime());
      }
    }
  }
  std::optional<double> median(const std::string& name) const {
    if (const auto aggregate = medians_.find(name); aggregate != medians_.end()) return aggregate->second;
    const auto found = times_.find(name);
    if (found == times_.end() || found->second.empty()) return std::nullopt;
    std::vector<double> sorted = found->second;
    std::sort(sorted.begin(), sorted.end());
    const std::size_t n = sorted.size();
    return n % 2 == 1 ? sorted[n / 2] : (sorted[n / 2 - 1] + sorted[n / 2]) / 2;
  }

 private:
  std::map<std::string, double> medians_;
  std::map<std::string, std::vector<double>> times_;
};

struct Pair {
  const char* what;
  const char* baseline;
  const char* feature;
  double target;  // 0: none set
};

constexpr std::array<Pair, 4> pairs{{
    {"RPM + TPM: plan and overrides / no rules", "BM_rpm_tpm_no_rules", "BM_rpm_tpm_plan_and_overrides", 0},
    {"allow() with id: then settle() / alone", "BM_allow_with_id", "BM_allow_with_id_then_settle", 0},
    {"ConcurrencyLimiter 1 cap / mutex+map floor", "BM_caps_floor_mutex_map", "BM_caps_one_cap", 3},
    {"ConcurrencyLimiter 2 caps / mutex+map floor", "BM_caps_floor_mutex_map", "BM_caps_user_and_global", 0},
}};

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  RatioReporter reporter;
  benchmark::RunSpecifiedBenchmarks(&reporter);
  benchmark::Shutdown();
  std::printf("\n%-46s %12s %12s %7s %8s  %s\n", "pair (median CPU time per iteration)", "baseline ns", "feature ns",
              "ratio", "target", "status");
  for (const Pair& pair : pairs) {
    const auto base = reporter.median(pair.baseline), feature = reporter.median(pair.feature);
    if (!base || !feature) continue;  // filtered out
    const double ratio = *feature / *base;
    char target[16] = "-";
    if (pair.target > 0) std::snprintf(target, sizeof target, "<= %.1f", pair.target);
    std::printf("%-46s %12.1f %12.1f %7.2f %8s  %s\n", pair.what, *base, *feature, ratio, target,
                pair.target <= 0 ? "" : ratio <= pair.target ? "met" : "NOT MET");
  }
  return 0;
}
