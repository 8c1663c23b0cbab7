// SPDX-License-Identifier: MIT
#pragma once
// One scenario, one subject, one Google Benchmark case: the timed loop and the registration helper shared by
// the *_bench.cpp files. Every case reports items_per_second (decisions per second, summed over threads).

#include <benchmark/benchmark.h>

#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <string_view>

#include "fixture.hpp"
#include "scenarios.hpp"
#include "subjects.hpp"

namespace airl_bench {

inline std::uint64_t cost_at(const Scenario& scenario, std::size_t step) {
  return scenario.cost != 0 ? scenario.cost : mixed_costs()[step & (mixed_costs().size() - 1)];
}

template <class Subject>
void run_scenario(benchmark::State& state, const Scenario& scenario) {
  const KeySet& keys = key_set(scenario.keys, scenario.ids);
  Subject& subject = shared_fixture<Subject>(&scenario, [&] {
    auto made = std::make_unique<Subject>(scenario.quota);
    if (scenario.prefill) {
      for (std::size_t i = 0; i < keys.size(); ++i) made->allow(keys.users[i], keys.model, cost_at(scenario, i));
    }
    return made;
  });
  const auto thread = static_cast<std::size_t>(state.thread_index());
  std::size_t key = scenario.walk == Walk::per_thread ? thread % keys.size() : (thread * keys.size()) / 2 % keys.size();
  const std::size_t stride = scenario.walk == Walk::per_thread ? 0 : 1;
  std::size_t step = 0;
  for (auto _ : state) {
    benchmark::DoNotOptimize(subject.allow(keys.users[key], keys.model, cost_at(scenario, step++)));
    key += stride;
    if (key == keys.size()) key = 0;
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()));
}

// Registers `scenario` as "<group>/<scenario.name>/<subject>" for each subject; `tune` adjusts each case
// (threads, real time). Scenarios are copied into process-lifetime storage, one copy per case, whose address
// identifies the case's fixture.
template <class... Subjects>
void register_scenario(std::string_view group, const Scenario& scenario,
                       void (*tune)(benchmark::internal::Benchmark*) = nullptr) {
  static std::deque<Scenario> storage;
  (
      [&] {
        const Scenario* stored = &storage.emplace_back(scenario);
        const std::string name = std::string(group) + "/" + scenario.name + "/" + std::string(subject_name<Subjects>);
        auto* bench = benchmark::RegisterBenchmark(
            name.c_str(), [stored](benchmark::State& state) { run_scenario<Subjects>(state, *stored); });
        if (tune != nullptr) tune(bench);
      }(),
      ...);
}

}  // namespace airl_bench
