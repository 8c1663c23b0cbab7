// SPDX-License-Identifier: MIT
#pragma once
// Tests only: a RedisStorage whose script decides on a clock the test drives (a ManualClock) instead of on
// Redis's own, so one sequence of calls gives the same decisions on InMemoryStorage<ManualClock> and on
// Redis. Neither airl.hpp nor redis.hpp includes this header, and the storage's constructor for it is
// private: no option or argument of a production storage switches the script off Redis's clock.
//
// What differs from production: every script call carries the clock's now() in microseconds (truncated),
// and every key's TTL is an hour longer (test time may stand still while real time passes). Only the rate
// script has the variant; the concurrency caps and the FailurePolicy::local fallback keep real time.

#include <chrono>
#include <cstdint>
#include <utility>

#include "../clock.hpp"
#include "options.hpp"
#include "redis_storage.hpp"

namespace airl::testing {

class RedisTestClock {
 public:
  // A RedisStorage on `clock` (a copy: a ManualClock's copies share one time, so the test advances its own).
  // Pass it to a limiter like any storage: RedisMultiTierRateLimiter(tiers, RedisTestClock::storage(o, c)).
  // Throws std::invalid_argument on bad options, as RedisStorage(RedisOptions) does.
  template <ClockPolicy Clock>
  static RedisStorage storage(RedisOptions options, Clock clock) {
    return RedisStorage(std::move(options), [clock = std::move(clock)]() -> std::int64_t {
      return std::chrono::duration_cast<std::chrono::microseconds>(clock.now()).count();
    });
  }
};

}  // namespace airl::testing
