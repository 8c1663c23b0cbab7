// SPDX-License-Identifier: MIT
// Single-thread decisions by key set: 1 hot key (limit 100 per 1 s, so nearly every decision is a denial, as
// in a flood), and 10k or 1M keys round-robin (limit 100 per 60 s, keys created before timing), each with
// short ids and with 36-character UUID users and a 20-character model; and, for short ids, the RateLimiter and
// the floor on CoarseSteadyClock. On the hot key also the minimal exact limiter (bench/minimal_exact.hpp). And
// RateLimiter with and without a request id per decision on 1000 keys (ids1k).

#include <chrono>
#include <cstddef>

#include "run_scenario.hpp"

namespace {

using namespace std::chrono_literals;
using namespace airl_bench;

[[maybe_unused]] const bool registered = [] {
  for (const IdStyle ids : {IdStyle::short_ids, IdStyle::uuid_ids}) {
    const std::string style(to_string(ids));
    register_scenario<Floor, NaiveLimiter, AirlSingle, AirlMulti, MinimalExact>(
        "keys", {.name = "hot/" + style, .keys = 1, .ids = ids, .quota = {100, 1s}});
    register_scenario<Floor, NaiveLimiter, AirlSingle, AirlMulti>(
        "keys", {.name = "rr10k/" + style, .keys = 10'000, .ids = ids, .quota = {100, 60s}, .prefill = true});
    register_scenario<Floor, NaiveLimiter, AirlSingle, AirlMulti>(
        "keys", {.name = "rr1m/" + style, .keys = 1'000'000, .ids = ids, .quota = {100, 60s}, .prefill = true});
  }
  // The coarse clock's effect, on the short-id hot key and 10k keys: RateLimiter and floor on both clocks.
  register_scenario<FloorCoarse, AirlCoarse>("keys", {.name = "hot/short", .keys = 1, .quota = {100, 1s}});
  register_scenario<FloorCoarse, AirlCoarse>(
      "keys", {.name = "rr10k/short", .keys = 10'000, .quota = {100, 60s}, .prefill = true});
  // Request ids: the same limiter and keys (1000 users, all admitted, ManualClock: see AirlIds), with a unique
  // 36-character id per decision and without.
  // ids1k: a 100 ms window, 10 live ids per key (10k in all); ids1k_100: a 1 s window, 100 per key (100k).
  register_scenario<AirlNoIds, AirlWithIds>("keys", {.name = "ids1k/short", .keys = 1'000, .quota = {1'000'000'000, 100ms}});
  register_scenario<AirlNoIds, AirlWithIds>("keys", {.name = "ids1k_100/short", .keys = 1'000, .quota = {1'000'000'000, 1s}});
  return true;
}();

}  // namespace
