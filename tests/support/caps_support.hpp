// SPDX-License-Identifier: MIT
#pragma once
// Backends for the concurrency-cap tests (ConcurrencyLimiter, Permit), as support.hpp's are for the rate
// limiters: behavioural cases are TEMPLATE_LIST_TEST_CASEs over `CapsBackends`. In memory on a ManualClock
// (exact, no sleeps) always; on the shared redis-server (Redis's clock, bounded waits) only when the build
// defines AIRL_TEST_WITH_REDIS=1.

#include <airl/airl.hpp>

#include <chrono>
#include <string>
#include <tuple>

#include "support.hpp"

#if AIRL_TEST_WITH_REDIS
#include <airl/redis.hpp>

#include <algorithm>
#include <thread>

#include "redis_test_support.hpp"
#endif

namespace airl::test {

using ManualConcurrencyStorage = InMemoryConcurrencyStorage<ManualClock>;

// In memory on a ManualClock: time moves only when a test says so, every duration is exact.
struct InMemoryCaps {
  using Storage = ManualConcurrencyStorage;
  static constexpr const char* name = "in-memory";
  static constexpr std::chrono::milliseconds slack{0};
  static constexpr int thread_iterations = 200;
  static constexpr std::chrono::milliseconds longest_hold{2};

  ManualClock clock;

  Storage make_storage() const { return Storage({}, clock); }
  void advance(std::chrono::milliseconds by) { clock.advance(by); }
  // Moves time by `by`, then asks once: on exact time there is nothing to wait for.
  template <class Done>
  bool after(std::chrono::milliseconds by, Done&& done) {
    advance(by);
    return done();
  }
};

#if AIRL_TEST_WITH_REDIS
// On the shared redis-server, each backend object with its own key prefix. Real time passes.
template <RedisMode Mode>
struct RedisCapsIn {
  using Storage = RedisConcurrencyStorage;
  static constexpr const char* name = RedisBackendIn<Mode>::name;
  static constexpr std::chrono::milliseconds slack{60};
  static constexpr int thread_iterations = 40;
  static constexpr std::chrono::milliseconds longest_hold{20};  // a few round trips

  std::string key_prefix = unique_key_prefix();

  Storage make_storage() const {
    RedisOptions options = shared_options(Mode, key_prefix);  // fail_closed: a Redis fault must fail the test
    options.connect_timeout = 1000ms;
    return Storage(options);
  }
  void advance(std::chrono::milliseconds by) { std::this_thread::sleep_for(by); }
  // Sleeps most of `by`, then asks until `done()` or a bounded time after `by` has passed.
  template <class Done>
  bool after(std::chrono::milliseconds by, Done&& done) {
    std::this_thread::sleep_for(by - std::min(by, slack));
    return eventually(done, 2 * slack + 2s);
  }
};
#endif

// The backends every behavioural cap case runs on: TEMPLATE_LIST_TEST_CASE(name, tags, airl::test::CapsBackends).
#if AIRL_TEST_WITH_REDIS
using RedisCaps = RedisCapsIn<RedisMode::standalone>;
using CapsBackends = std::tuple<InMemoryCaps, RedisCaps, RedisCapsIn<RedisMode::cluster>, RedisCapsIn<RedisMode::sentinel>>;
#else
using CapsBackends = std::tuple<InMemoryCaps>;
#endif

template <class Backend>
using LimiterOn = ConcurrencyLimiter<typename Backend::Storage>;

// A permit id as its 32 hex digits.
inline std::string hex_of(const PermitId& id) {
  const auto hex = id.hex();
  return std::string(hex.data(), hex.size());
}

}  // namespace airl::test
