// SPDX-License-Identifier: MIT
// Reserve, then settle, on Redis only: costs above 2^53 refused through SlidingWindowLimiter, a settle on a
// server that is down, and settles under FailurePolicy::local during an outage. The cases both backends
// share are in tests/ai_serving/settle_test.cpp.
#include <catch2/catch.hpp>

#include "redis_test_support.hpp"

#include <cstdint>
#include <stdexcept>
#include <string>

using namespace airl::test;

TEST_CASE("settle on Redis refuses costs above 2^53 and works through SlidingWindowLimiter", "[settle][redis]") {
  RedisBackend backend;
  airl::SlidingWindowLimiter<airl::RedisStorage> limiter({1'000, 60s}, backend.make_storage());
  REQUIRE(limiter.allow(reserve("lee", "m", 300, "r")));
  CHECK_THROWS_AS(limiter.settle("lee", "m", "r", (std::uint64_t{1} << 53) + 1), std::invalid_argument);
  CHECK(limiter.usage("lee", "m") == 300);
  CHECK(limiter.settle("lee", "m", "r", 20));
  CHECK(limiter.usage("lee", "m") == 20);
}

TEST_CASE("settle on a Redis that is down throws BackendError and counts it", "[settle][redis][faults]") {
  for (const airl::FailurePolicy policy : {airl::FailurePolicy::fail_open, airl::FailurePolicy::fail_closed}) {
    airl::MultiTierLimiter<airl::RedisStorage> limiter({{"tpm", airl::Scope::user, {100, 60s}}},
                                                       airl::RedisStorage(options_for_closed_port(policy)));
    CHECK_THROWS_AS(limiter.settle("u", "m", "r", 1), airl::BackendError);
    CHECK(limiter.metrics().backend_errors == 1);
  }
}

TEST_CASE("with FailurePolicy::local, requests admitted during an outage are settled in the local store",
          "[settle][redis][faults]") {
  // Nothing listens on the port: every request is decided locally.
  airl::MultiTierLimiter<airl::RedisStorage> limiter({{"tpm", airl::Scope::user, {1'000, 60s}}},
                                                     airl::RedisStorage(options_for_closed_port(airl::FailurePolicy::local)));
  for (int i = 0; i < 2; ++i) REQUIRE(limiter.allow(reserve("oli", "m", 400, id("r", i))).degraded);
  CHECK_FALSE(limiter.allow(reserve("oli", "m", 400, "r-2")));  // 800 reserved locally: no room for 400
  CHECK(limiter.settle("oli", "m", "r-0", 10));                   // refunded in the local store
  CHECK(limiter.settle("oli", "m", "r-1", 10));
  CHECK(limiter.allow(reserve("oli", "m", 400, "r-2")));
  CHECK_FALSE(limiter.settle("oli", "m", "never", 10));
}

TEST_CASE("a settle refused for its total writes nothing on Redis: neither the entry's cost nor the sum",
          "[settle][redis]") {
  // Before: an HINCRBY of the sum overflowed after the entry's new cost had been written (HSET), so the costs
  // disagreed with their sum. The script now compares every total before its first write.
  const std::string prefix = unique_key_prefix();
  airl::MultiTierLimiter<airl::RedisStorage> limiter({{"tpm", airl::Scope::user, {100, 60s}}},
                                                     airl::RedisStorage(shared_options(RedisMode::standalone, prefix)));
  REQUIRE(limiter.allow(reserve("kim", "m", 5, "a")));
  REQUIRE(limiter.allow(reserve("kim", "m", 7, "b")));
  const std::string log = redis_key_of(prefix, {airl::Scope::user, "tpm", "kim", ""});
  std::string costs;
  airl::detail::redis_costs_key(costs, log);
  const auto raw = [&] {
    std::string text;
    for (const RawReply& reply : {must(shared_redis(), {"ZRANGE", log, "0", "-1", "WITHSCORES"}),
                                  must(shared_redis(), {"HGETALL", costs})}) {
      for (std::size_t i = 0; i < reply->elements; ++i) text += text_of(*reply->element[i]) + " ";
      text += "| ";
    }
    return text;
  };
  const std::string before = raw();
  CHECK_THROWS_AS(limiter.settle("kim", "m", "a", std::uint64_t{1} << 53), std::invalid_argument);  // 2^53 + 7
  CHECK(raw() == before);
  CHECK(limiter.usage("tpm", "kim", "m") == 12);
  CHECK(limiter.settle("kim", "m", "a", (std::uint64_t{1} << 53) - 7));  // exactly 2^53
  CHECK(limiter.usage("tpm", "kim", "m") == std::uint64_t{1} << 53);
  CHECK(limiter.metrics().backend_errors == 0);
}

TEST_CASE("refunding the only entry of a bucket keeps its keys' TTLs", "[settle][refund][redis]") {
  // Before: the refund's ZREM emptied the log (Redis deleted it) and its ZADD made it again without a TTL,
  // so the bucket's key stayed for good.
  const std::string prefix = unique_key_prefix();
  airl::MultiTierLimiter<airl::RedisStorage> limiter({{"tpm", airl::Scope::user, {100, 60s}}},
                                                     airl::RedisStorage(shared_options(RedisMode::standalone, prefix)));
  REQUIRE(limiter.allow(reserve("kai", "m", 5, "only")));
  REQUIRE(limiter.refund("kai", "m", "only"));
  const std::string log = redis_key_of(prefix, {airl::Scope::user, "tpm", "kai", ""});
  std::string costs;
  airl::detail::redis_costs_key(costs, log);
  CHECK(pttl(shared_redis(), log) > 0);
  CHECK(pttl(shared_redis(), costs) > 0);
  CHECK(limiter.usage("tpm", "kai", "m") == 0);
}
