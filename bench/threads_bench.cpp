// SPDX-License-Identifier: MIT
// Two threads against one and the same limiter: on distinct keys (thread t hammers key t) and on one hot
// key, limit 100 per 1 s, short ids. Each case runs with 1 and with 2 threads in real time, so
// items_per_second is the aggregate throughput and 2-thread / 1-thread is the scaling.

#include <chrono>

#include "run_scenario.hpp"

namespace {

using namespace std::chrono_literals;
using namespace airl_bench;

void one_and_two_threads(benchmark::internal::Benchmark* bench) { bench->Threads(1)->Threads(2)->UseRealTime(); }

[[maybe_unused]] const bool registered = [] {
  register_scenario<Floor, NaiveLimiter, AirlSingle, AirlMulti>(
      "threads", {.name = "distinct", .keys = 2, .quota = {100, 1s}, .walk = Walk::per_thread}, one_and_two_threads);
  register_scenario<Floor, NaiveLimiter, AirlSingle, AirlMulti>(
      "threads", {.name = "hot", .keys = 1, .quota = {100, 1s}}, one_and_two_threads);
  return true;
}();

}  // namespace
