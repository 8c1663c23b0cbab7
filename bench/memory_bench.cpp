// SPDX-License-Identifier: MIT
// Memory, measured with the exact allocation counter (allocation_counter.cpp replaces operator new/delete in
// this binary only, so the timing binary is untouched). Each case runs once and reports counters:
//   memory/<ids>/<subject>           bytes_per_key: live bytes requested for 100k keys x 10 unit-cost entries
//                                    (limit 100 per 60 s), limiter included, divided by 100k; allocs_per_key
//   memory_spread/<ids>/airl         the same, with the 10 entries spread over the 60 s window (ManualClock)
//   decision_allocs/<ids>/<subject>  allocs_per_decision: operator new calls per decision on existing keys
//                                    (10k keys holding 50 entries, then 10 more rounds, all admitted)
//   decision_allocs/request_ids/airl the same with a unique request id per decision, in steady state

#include <benchmark/benchmark.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "allocation_counter.hpp"
#include "scenarios.hpp"
#include "subjects.hpp"

namespace {

using namespace std::chrono_literals;
using namespace airl_bench;

constexpr airl::Quota quota{100, 60s};

// One throwaway decision with ids of this style, so per-thread scratch buffers are not charged to the store.
template <class Subject>
void warm_up(const KeySet& keys) {
  Subject warm(quota);
  warm.allow(keys.users.front(), keys.model, 1);
}

template <class Subject>
void bytes_per_key(benchmark::State& state, IdStyle ids) {
  constexpr std::size_t key_count = 100'000;
  constexpr int entries = 10;
  const KeySet& keys = key_set(key_count, ids);
  warm_up<Subject>(keys);
  for (auto _ : state) {
    const std::int64_t bytes_before = live_bytes();
    const std::int64_t allocs_before = allocation_count();
    auto subject = std::make_unique<Subject>(quota);
    for (int round = 0; round < entries; ++round) {
      for (std::size_t i = 0; i < key_count; ++i) benchmark::DoNotOptimize(subject->allow(keys.users[i], keys.model, 1));
    }
    const auto bytes = static_cast<double>(live_bytes() - bytes_before);
    const auto allocs = static_cast<double>(allocation_count() - allocs_before);
    state.counters["bytes_per_key"] = bytes / key_count;
    state.counters["allocs_per_key"] = allocs / key_count;
  }
}

// The same 100k keys x 10 entries, but with the entries spread over the 60 s window (one round every 6 s on
// a ManualClock), as steady traffic leaves them: their offsets then need 5 bytes instead of 4.
void bytes_per_key_spread(benchmark::State& state, IdStyle ids) {
  constexpr std::size_t key_count = 100'000;
  constexpr int entries = 10;
  const KeySet& keys = key_set(key_count, ids);
  using Limiter = airl::SlidingWindowLimiter<airl::InMemoryStorage<airl::ManualClock>>;
  {
    airl::ManualClock clock;
    Limiter warm(quota, airl::InMemoryStorage<airl::ManualClock>({}, clock));
    warm.allow(keys.users.front(), keys.model);
  }
  for (auto _ : state) {
    const std::int64_t bytes_before = live_bytes();
    airl::ManualClock clock;
    auto limiter = std::make_unique<Limiter>(quota, airl::InMemoryStorage<airl::ManualClock>({}, clock));
    for (int round = 0; round < entries; ++round) {
      for (std::size_t i = 0; i < key_count; ++i) benchmark::DoNotOptimize(limiter->allow(keys.users[i], keys.model));
      clock.advance(6s);
    }
    state.counters["bytes_per_key"] = static_cast<double>(live_bytes() - bytes_before) / key_count;
  }
}

template <class Subject>
void decision_allocs(benchmark::State& state, IdStyle ids) {
  constexpr std::size_t key_count = 10'000;
  const KeySet& keys = key_set(key_count, ids);
  warm_up<Subject>(keys);
  for (auto _ : state) {
    auto subject = std::make_unique<Subject>(quota);
    for (int round = 0; round < 50; ++round) {
      for (std::size_t i = 0; i < key_count; ++i) subject->allow(keys.users[i], keys.model, 1);
    }
    const std::int64_t allocs_before = allocation_count();
    constexpr int rounds = 10;
    for (int round = 0; round < rounds; ++round) {
      for (std::size_t i = 0; i < key_count; ++i) benchmark::DoNotOptimize(subject->allow(keys.users[i], keys.model, 1));
    }
    state.counters["allocs_per_decision"] =
        static_cast<double>(allocation_count() - allocs_before) / static_cast<double>(rounds * key_count);
  }
}

// allocs_per_decision with a unique 36-character request id per decision (AirlWithIds: 1000 keys, all
// admitted, 1 s window on a ManualClock moved 10 us per decision, so each bucket holds 100 entries and ids),
// counted over 100k decisions after three windows, when every bucket's buffers have reached their steady size.
void decision_allocs_with_ids(benchmark::State& state) {
  const KeySet& keys = key_set(1'000, IdStyle::short_ids);
  for (auto _ : state) {
    auto subject = std::make_unique<AirlWithIds>(airl::Quota{1'000'000'000, 1s});
    std::size_t key = 0;
    const auto decide = [&] {
      benchmark::DoNotOptimize(subject->allow(keys.users[key], keys.model, 1));
      if (++key == keys.size()) key = 0;
    };
    for (int i = 0; i < 300'000; ++i) decide();
    const std::int64_t allocs_before = allocation_count();
    constexpr int decisions = 100'000;
    for (int i = 0; i < decisions; ++i) decide();
    state.counters["allocs_per_decision"] = static_cast<double>(allocation_count() - allocs_before) / decisions;
  }
}

template <class Subject>
void register_subject() {
  for (const IdStyle ids : {IdStyle::short_ids, IdStyle::uuid_ids}) {
    const std::string suffix = std::string(to_string(ids)) + "/" + std::string(subject_name<Subject>);
    benchmark::RegisterBenchmark(("memory/" + suffix).c_str(), bytes_per_key<Subject>, ids)->Iterations(1);
    benchmark::RegisterBenchmark(("decision_allocs/" + suffix).c_str(), decision_allocs<Subject>, ids)->Iterations(1);
  }
}

[[maybe_unused]] const bool registered = [] {
  register_subject<NaiveLimiter>();
  register_subject<AirlSingle>();
  register_subject<AirlMulti>();
  for (const IdStyle ids : {IdStyle::short_ids, IdStyle::uuid_ids}) {
    const std::string name = "memory_spread/" + std::string(to_string(ids)) + "/airl";
    benchmark::RegisterBenchmark(name.c_str(), bytes_per_key_spread, ids)->Iterations(1);
  }
  benchmark::RegisterBenchmark("decision_allocs/request_ids/airl", decision_allocs_with_ids)->Iterations(1);
  return true;
}();

}  // namespace
