// SPDX-License-Identifier: MIT
// Tier units: a Unit::requests tier counts 1 per request whatever its cost, a Unit::cost tier counts the cost,
// and one allow() enforces both kinds together, all-or-nothing. Behavioural cases run on every test backend
// (support.hpp: in memory, and Redis when it is built).
#include <catch2/catch.hpp>

#include "support.hpp"

using namespace airl::test;

namespace {

std::vector<airl::Tier> rpm_and_tpm() {
  return {{"rpm", airl::Scope::user_model, {3, 60s}, airl::Unit::requests},
          {"tpm", airl::Scope::user_model, {10'000, 60s}, airl::Unit::cost}};
}

}  // namespace

TEMPLATE_LIST_TEST_CASE("a requests tier counts one per request whatever the cost",
                        "[tier_unit]", airl::test::Backends) {
  TestType backend;
  airl::MultiTierLimiter<typename TestType::Storage> limiter(rpm_and_tpm(), backend.make_storage());
  REQUIRE(limiter.allow({.user = "u1", .model = "m", .cost = 2'500}));
  REQUIRE(limiter.allow({.user = "u1", .model = "m", .cost = 100}));
  CHECK(limiter.usage("rpm", "u1", "m") == 2);
  CHECK(limiter.usage("tpm", "u1", "m") == 2'600);
}

TEMPLATE_LIST_TEST_CASE("requests and tokens are enforced together and the first denying tier is the reason",
                        "[tier_unit]", airl::test::Backends) {
  TestType backend;
  airl::MultiTierLimiter<typename TestType::Storage> limiter(rpm_and_tpm(), backend.make_storage());
  REQUIRE(limiter.allow({.user = "u2", .model = "m", .cost = 9'000}));
  const airl::Decision too_many_tokens = limiter.allow({.user = "u2", .model = "m", .cost = 1'001});
  CHECK_FALSE(too_many_tokens);
  CHECK(too_many_tokens.reason == "tpm");
  CHECK(too_many_tokens.remaining == 1'000);
  // All-or-nothing: the token denial charged no request either.
  CHECK(limiter.usage("rpm", "u2", "m") == 1);

  REQUIRE(limiter.allow({.user = "u2", .model = "m", .cost = 1}));
  REQUIRE(limiter.allow({.user = "u2", .model = "m", .cost = 1}));
  const airl::Decision too_many_requests = limiter.allow({.user = "u2", .model = "m", .cost = 1});
  CHECK_FALSE(too_many_requests);
  CHECK(too_many_requests.reason == "rpm");
  CHECK(too_many_requests.limit == 3);
  CHECK(limiter.usage("tpm", "u2", "m") == 9'002);
}

TEMPLATE_LIST_TEST_CASE("a request costing more than a requests tier's limit still counts as one",
                        "[tier_unit]", airl::test::Backends) {
  TestType backend;
  airl::MultiTierLimiter<typename TestType::Storage> limiter(
      {{"rpm", airl::Scope::user, {2, 60s}, airl::Unit::requests}}, backend.make_storage());
  const airl::Decision decision = limiter.allow({.user = "u3", .model = "m", .cost = 50});
  CHECK(decision);
  CHECK(decision.remaining == 1);
}

TEST_CASE("tiers written as {name, scope, quota} default to counting cost", "[tier_unit]") {
  const airl::Tier tier{"tpm", airl::Scope::global, {100, 1s}};
  CHECK(tier.unit == airl::Unit::cost);
  airl::MultiTierLimiter<ManualStorage> limiter({tier}, ManualStorage());
  REQUIRE(limiter.allow({.user = "u4", .model = "m", .cost = 60}));
  CHECK_FALSE(limiter.allow({.user = "u4", .model = "m", .cost = 41}));
}

TEST_CASE("an unknown unit is refused", "[tier_unit][validation]") {
  const auto bogus = static_cast<airl::Unit>(7);
  CHECK_THROWS_AS(airl::MultiTierLimiter<ManualStorage>({{"t", airl::Scope::user, {1, 1s}, bogus}}, ManualStorage()),
                  std::invalid_argument);
}
