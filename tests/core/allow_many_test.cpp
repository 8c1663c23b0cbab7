// SPDX-License-Identifier: MIT
// allow_many(): a batch decided in order, each request all-or-nothing across tiers, exactly as allow() one
// by one would (on Redis, one pipelined round trip). Templated over the test backends; the Redis-only cases
// (an unreachable server, SCRIPT FLUSH) are in tests/redis/redis_allow_many_test.cpp.
#include <catch2/catch.hpp>

#include <stdexcept>
#include <string>
#include <vector>

#include "support.hpp"

using namespace airl::test;

TEMPLATE_LIST_TEST_CASE("a batch is decided in order, like allow() one by one", "[allow_many]", airl::test::Backends) {
  TestType backend;
  airl::SlidingWindowLimiter<typename TestType::Storage> limiter({5, 10s}, backend.make_storage());
  const std::vector<airl::Request> batch(8, airl::Request{"am-alice", "m"});
  const std::vector<airl::Decision> decisions = limiter.allow_many(batch);
  REQUIRE(decisions.size() == 8);
  for (std::size_t i = 0; i < 5; ++i) {
    CHECK(decisions[i].allowed);
    CHECK(decisions[i].remaining == 4 - i);
    CHECK_FALSE(decisions[i].degraded);
  }
  for (std::size_t i = 5; i < 8; ++i) {
    CHECK_FALSE(decisions[i].allowed);
    CHECK(decisions[i].reason == "default");
    CHECK(decisions[i].retry_after > std::chrono::milliseconds{0});
  }
  CHECK(limiter.usage("am-alice", "m") == 5);
  CHECK(limiter.metrics().allowed == 5);
  CHECK(limiter.metrics().denied == 3);
}

TEMPLATE_LIST_TEST_CASE("each request of a batch is all-or-nothing across tiers",
                        "[allow_many]", airl::test::Backends) {
  TestType backend;
  airl::MultiTierLimiter<typename TestType::Storage> limiter(
      {{"am-user", airl::Scope::user, {3, 10s}}, {"am-global", airl::Scope::global, {100, 10s}, airl::Unit::requests}},
      backend.make_storage());
  std::vector<airl::Request> batch;
  for (int i = 0; i < 5; ++i) batch.push_back(airl::Request{"am-tier-alice", "m", 1});
  batch.push_back(airl::Request{"am-tier-bob", "m", 2});
  const std::vector<airl::Decision> decisions = limiter.allow_many(batch);
  REQUIRE(decisions.size() == 6);
  CHECK(decisions[2].allowed);
  CHECK_FALSE(decisions[3].allowed);
  CHECK(decisions[3].reason == "am-user");
  CHECK(decisions[5].allowed);
  // The two denied requests charged no tier: the global bucket holds 3 (alice) + 1 (bob) requests.
  CHECK(limiter.usage("am-global", "anyone", "m") == 4);
  CHECK(limiter.usage("am-user", "am-tier-bob", "m") == 2);
}

TEMPLATE_LIST_TEST_CASE("a request id repeated within a batch is replayed, not charged twice",
                        "[allow_many]", airl::test::Backends) {
  TestType backend;
  airl::SlidingWindowLimiter<typename TestType::Storage> limiter({10, 10s}, backend.make_storage());
  const std::vector<airl::Request> batch = {with_id("am-id-user", "m", "r1"), with_id("am-id-user", "m", "r1"),
                                            with_id("am-id-user", "m", "r2")};
  const std::vector<airl::Decision> decisions = limiter.allow_many(batch);
  CHECK(decisions[0].allowed);
  CHECK_FALSE(decisions[0].replayed);
  CHECK(decisions[1].allowed);
  CHECK(decisions[1].replayed);
  CHECK(decisions[2].allowed);
  CHECK(limiter.usage("am-id-user", "m") == 2);
}

TEMPLATE_LIST_TEST_CASE("a batch with one bad request is refused whole, before any decision",
                        "[allow_many][validation]", airl::test::Backends) {
  TestType backend;
  airl::SlidingWindowLimiter<typename TestType::Storage> limiter({10, 10s}, backend.make_storage());
  const std::vector<airl::Request> batch = {{"am-bad-user", "m"}, {"am-bad-user", "m", 0}};
  CHECK_THROWS_AS(limiter.allow_many(batch), std::invalid_argument);
  CHECK(limiter.usage("am-bad-user", "m") == 0);
  CHECK(limiter.metrics().total() == 0);
  CHECK(limiter.allow_many(std::vector<airl::Request>{}).empty());
}
