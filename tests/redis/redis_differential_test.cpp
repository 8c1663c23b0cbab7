// SPDX-License-Identifier: MIT
// The Redis storage against the reference model: the sequences of tests/core/differential_test.cpp, on one
// redis-server and on the Redis Cluster, so the Lua script and the C++ log are shown to follow one rule. The
// script takes the test's ManualClock as its time (airl/redis/testing_clock.hpp: a script variant only tests
// can reach), so windows of hours and exact boundaries are decided without waiting.

#include <catch2/catch.hpp>

#include <airl/redis/testing_clock.hpp>

#include "differential.hpp"
#include "support.hpp"

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace {

using airl::test::RedisMode;

std::optional<std::string> on_redis(RedisMode mode, std::uint64_t seed, airl::test::DifferentialCoverage& coverage) {
  const airl::ManualClock clock{std::chrono::seconds{1000}};
  return airl::test::run_differential<airl::RedisStorage>(
      seed, clock,
      [&](std::vector<airl::Tier> tiers, airl::LimiterOptions options) {
        airl::RedisOptions redis = airl::test::shared_options(mode, airl::test::unique_key_prefix());
        redis.on_failure = airl::FailurePolicy::fail_closed;  // a fault must show, never be decided locally
        return airl::RedisMultiTierRateLimiter(std::move(tiers), airl::testing::RedisTestClock::storage(redis, clock),
                                               options);
      },
      coverage, airl::test::DifferentialLimits{.steps = 100});
}

void run(RedisMode mode, std::size_t sequences) {
  const std::vector<std::uint64_t> seeds = airl::test::differential_seeds(sequences);
  airl::test::DifferentialCoverage coverage;
  std::size_t differing = 0;
  std::string first;
  for (const std::uint64_t seed : seeds) {
    if (const std::optional<std::string> difference = on_redis(mode, seed, coverage)) {
      if (differing++ == 0) first = *difference;
    }
  }
  INFO(first);
  CHECK(differing == 0);
  if (seeds.size() >= 300) {  // the sequences reached every rule (not when reproducing one seed)
    for (const std::size_t seen : {coverage.allowed, coverage.denied, coverage.never, coverage.replayed,
                                   coverage.shadow_denied, coverage.other_unit, coverage.settled, coverage.refunded,
                                   coverage.boundary_steps, coverage.binding_not_first}) {
      CHECK(seen >= seeds.size() / 10);
    }
  }
  CHECK(coverage.denied + coverage.allowed > 0);
}

}  // namespace

TEST_CASE("one redis-server answers as the reference model on 300 random sequences", "[differential][redis]") {
  run(RedisMode::standalone, 300);
}

TEST_CASE("a Redis Cluster answers as the reference model on 300 random sequences", "[differential][redis][cluster]") {
  run(RedisMode::cluster, 300);
}

TEST_CASE("seeds that once differed on Redis stay equal", "[differential][redis][cluster]") {
  // Cluster: allow_many sent a split request's parts and the next requests at once, then undid the partial
  // admission: the next requests saw its entries (1245178684524847, 3526087017229317). The others differed
  // once while the script was being changed; they stay as cheap checks.
  const std::pair<RedisMode, std::uint64_t> seeds[] = {
      {RedisMode::cluster, 1245178684524847},   {RedisMode::cluster, 3526087017229317},
      {RedisMode::cluster, 1402247144728814},   {RedisMode::cluster, 3979190168534694},
      {RedisMode::cluster, 4084363025052323},   {RedisMode::standalone, 1141063614180576},
      {RedisMode::standalone, 2223818611435823}};
  for (const auto& [mode, seed] : seeds) {
    airl::test::DifferentialCoverage coverage;
    const std::optional<std::string> difference = on_redis(mode, seed, coverage);
    INFO(difference.value_or(""));
    CHECK_FALSE(difference);
  }
}
