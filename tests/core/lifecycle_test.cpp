// SPDX-License-Identifier: MIT
// Object lifecycle: limiters move with their buckets and counters, and a moved-from limiter reports misuse
// (std::logic_error) instead of crashing or deciding with no tiers.
#include <catch2/catch.hpp>

#include <stdexcept>
#include <utility>

#include "support.hpp"

using namespace airl::test;

TEST_CASE("a moved limiter keeps its buckets and counters", "[lifecycle]") {
  airl::ManualClock clock;
  airl::SlidingWindowLimiter<ManualStorage> limiter({2, 1s}, ManualStorage({}, clock));
  REQUIRE(limiter.allow("u", "m"));
  airl::SlidingWindowLimiter<ManualStorage> moved(std::move(limiter));
  CHECK(moved.usage("u", "m") == 1);
  CHECK(moved.metrics().allowed == 1);
  REQUIRE(moved.allow("u", "m"));
  const airl::Decision denied = moved.allow("u", "m");
  CHECK_FALSE(denied.allowed);
  CHECK(denied.reason == "default");  // the tier names moved along with the tiers

  airl::SlidingWindowLimiter<ManualStorage> assigned({1, 1s}, ManualStorage({}, clock));
  assigned = std::move(moved);
  CHECK(assigned.allow("u", "m").reason == "default");
}

TEST_CASE("a moved-from limiter refuses to decide and reports zero metrics", "[lifecycle]") {
  airl::MultiTierLimiter<ManualStorage> limiter({{"t", airl::Scope::user, {2, 1s}}}, ManualStorage());
  REQUIRE(limiter.allow("u", "m"));
  auto moved = std::move(limiter);
  CHECK_THROWS_AS(limiter.allow("u", "m"), std::logic_error);  // NOLINT(bugprone-use-after-move): on purpose
  const airl::Metrics metrics = limiter.metrics();
  CHECK(metrics.total() == 0);
  CHECK(metrics.active_keys == 0);
  CHECK(moved.metrics().allowed == 1);
}
