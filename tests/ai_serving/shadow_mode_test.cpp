// SPDX-License-Identifier: MIT
// Shadow mode (LimiterOptions::shadow): every request is admitted, decisions are computed and counted as
// usual, and the ones the limits deny say so. On every test backend (in memory, and Redis when it is built).

#include <catch2/catch.hpp>

#include <airl/http.hpp>

#include <string>

#include "support.hpp"

namespace {

using namespace std::chrono_literals;
using airl::Scope;
using airl::Tier;

}  // namespace

TEMPLATE_LIST_TEST_CASE("a shadow limiter admits what its limits deny and says so", "[shadow]", airl::test::Backends) {
  TestType backend;
  const std::string prefix = std::string("shadow-") + TestType::name + "-";
  airl::MultiTierLimiter<typename TestType::Storage> limiter(
      {{prefix + "pair", Scope::user_model, {2, 1000ms}}, {prefix + "user", Scope::user, {10, 1000ms}}},
      backend.make_storage(), airl::LimiterOptions{.shadow = true});
  REQUIRE(limiter.options().shadow);
  const std::string user = prefix + "alice";

  for (int i = 0; i < 2; ++i) {
    const airl::Decision admitted = limiter.allow(user, "m");
    REQUIRE(admitted.allowed);
    CHECK_FALSE(admitted.shadow_denied);
    CHECK(admitted.reason.empty());
  }
  const airl::Decision shadowed = limiter.allow(user, "m");
  CHECK(shadowed.allowed);  // admitted anyway
  CHECK(shadowed.shadow_denied);
  CHECK(shadowed.reason == prefix + "pair");  // what would have denied it
  CHECK(shadowed.binding_tier == 0);
  CHECK(shadowed.remaining == 0);
  CHECK_THAT(shadowed.retry_after, airl::test::within_slack<TestType>(1000ms));
  CHECK(airl::http::status_code(shadowed) == 200);
  CHECK(airl::http::response_headers(shadowed, limiter.tiers()).front().name == "RateLimit-Policy");  // no Retry-After

  // The denied request was not recorded in any tier, so the logs hold what the limits would have admitted.
  CHECK(limiter.usage(prefix + "pair", user, "m") == 2);
  CHECK(limiter.usage(prefix + "user", user, "m") == 2);
  const airl::Metrics metrics = limiter.metrics();
  CHECK(metrics.allowed == 2);
  CHECK(metrics.denied == 1);  // counted as the limits decided

  // Batches follow the same rule.
  const airl::Request batch[] = {airl::Request{user, "m"}, airl::Request{user, "m"}};
  for (const airl::Decision& decision : limiter.allow_many(batch)) {
    CHECK(decision.allowed);
    CHECK(decision.shadow_denied);
  }
  CHECK(limiter.metrics().denied == 3);
}

TEMPLATE_LIST_TEST_CASE("a limiter not in shadow mode denies as usual and never marks shadow_denied",
                        "[shadow]", airl::test::Backends) {
  TestType backend;
  const std::string prefix = std::string("shadow-off-") + TestType::name + "-";
  airl::SlidingWindowLimiter<typename TestType::Storage> limiter({1, 1000ms}, backend.make_storage());
  CHECK_FALSE(limiter.options().shadow);
  const airl::Decision first = limiter.allow(prefix + "bob", "m");
  CHECK(first.allowed);
  CHECK_FALSE(first.shadow_denied);
  const airl::Decision second = limiter.allow(prefix + "bob", "m");
  CHECK_FALSE(second.allowed);
  CHECK_FALSE(second.shadow_denied);
}

TEST_CASE("a shadow limiter admits a request no wait could admit, and a full store's refusals", "[shadow]") {
  airl::test::InMemoryBackend backend;
  airl::SlidingWindowLimiter<airl::test::ManualStorage> limiter({5, 1000ms}, backend.make_storage({.max_keys = 1}),
                                                               airl::LimiterOptions{.shadow = true});
  const airl::Decision too_big = limiter.allow({.user = "carol", .model = "m", .cost = 6});
  CHECK(too_big.allowed);
  CHECK(too_big.shadow_denied);
  CHECK(too_big.retry_after == airl::Decision::never);
  REQUIRE(limiter.allow("carol", "m"));  // the store's one key
  const airl::Decision full = limiter.allow("dave", "m");
  CHECK(full.allowed);
  CHECK(full.shadow_denied);
  CHECK(full.reason == airl::key_capacity_reason);
  CHECK(limiter.usage("dave", "m") == 0);
}
