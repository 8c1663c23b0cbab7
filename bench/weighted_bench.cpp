// SPDX-License-Identifier: MIT
// Weighted costs on a limit of 1,000,000 tokens per 60 s: cost 1, cost 4000 and a mix of 1..4000, on one hot
// key and on 10k keys round-robin. The naive baseline here is its weighted variant ((time, cost) entries).

#include <chrono>
#include <cstdint>
#include <string>

#include "run_scenario.hpp"

namespace {

using namespace std::chrono_literals;
using namespace airl_bench;

[[maybe_unused]] const bool registered = [] {
  for (const std::uint64_t cost : {std::uint64_t{1}, std::uint64_t{4000}, std::uint64_t{0}}) {
    const std::string costs = cost == 0 ? "mixed" : "cost" + std::to_string(cost);
    register_scenario<Floor, NaiveWeightedLimiter, AirlSingle, AirlMulti>(
        "weighted", {.name = "hot/" + costs, .keys = 1, .quota = {1'000'000, 60s}, .cost = cost});
    register_scenario<Floor, NaiveWeightedLimiter, AirlSingle, AirlMulti>(
        "weighted",
        {.name = "rr10k/" + costs, .keys = 10'000, .quota = {1'000'000, 60s}, .cost = cost, .prefill = true});
  }
  return true;
}();

}  // namespace
