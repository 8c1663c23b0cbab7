// SPDX-License-Identifier: MIT
// allow_many() on Redis only: a batch against an unreachable server gets the failure policy's decision for
// every request, and a batch after SCRIPT FLUSH reloads the script. The cases both backends share are in
// tests/core/allow_many_test.cpp.
#include <catch2/catch.hpp>

#include <vector>

#include "support.hpp"

using namespace airl::test;

TEST_CASE("a batch against an unreachable Redis gets the failure policy's decision for every request",
          "[allow_many][redis]") {
  airl::RedisOptions options;
  options.port = 1;  // nothing listens: refused at once
  options.on_failure = airl::FailurePolicy::fail_closed;
  airl::RedisRateLimiter limiter({10, 1s}, airl::RedisStorage(options));
  const std::vector<airl::Request> batch(4, airl::Request{"am-down", "m"});
  const std::vector<airl::Decision> decisions = limiter.allow_many(batch);
  REQUIRE(decisions.size() == 4);
  for (const airl::Decision& decision : decisions) {
    CHECK_FALSE(decision.allowed);
    CHECK(decision.degraded);
    CHECK(decision.reason == "backend_unavailable");
  }
  CHECK(limiter.metrics().backend_errors == 4);
}

TEST_CASE("a batch after SCRIPT FLUSH reloads the script transparently", "[allow_many][redis]") {
  RedisBackend backend;
  airl::RedisRateLimiter limiter({10, 10s}, backend.make_storage());
  const std::vector<airl::Request> batch(3, airl::Request{"am-flush", "m"});
  REQUIRE(limiter.allow_many(batch).size() == 3);
  const RawReply flushed = shared_redis().command({"SCRIPT", "FLUSH"});
  REQUIRE(flushed);
  const std::vector<airl::Decision> decisions = limiter.allow_many(batch);
  for (const airl::Decision& decision : decisions) {
    CHECK(decision.allowed);
    CHECK_FALSE(decision.degraded);
  }
  CHECK(limiter.usage("am-flush", "m") == 6);
}
