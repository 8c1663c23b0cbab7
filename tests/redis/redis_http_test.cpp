// SPDX-License-Identifier: MIT
// <airl/http.hpp> on Redis only: a decision degraded by an unreachable server carries the policies but no
// counters (nothing counted them). The other cases are in tests/ai_serving/http_test.cpp.

#include <catch2/catch.hpp>

#include <airl/http.hpp>

#include "http_support.hpp"
#include "support.hpp"

namespace {

using airl::test::header;
using airl::test::rpm_and_tpm;

}  // namespace

TEST_CASE("a degraded fail_open decision carries the policies but no made-up counters", "[http][redis][faults]") {
  airl::MultiTierLimiter<airl::RedisStorage> limiter(
      rpm_and_tpm(), airl::RedisStorage(airl::test::options_for_closed_port(airl::FailurePolicy::fail_open)));
  const airl::Decision degraded = limiter.allow({.user = "u", .model = "m", .cost = 300});
  REQUIRE(degraded.allowed);
  REQUIRE(degraded.degraded);
  const auto headers = airl::http::response_headers(degraded, limiter.tiers());
  CHECK(header(headers, "RateLimit-Policy") == airl::http::policy_header_value(limiter.tiers()));
  for (const char* absent : {"RateLimit", "x-ratelimit-limit-requests", "x-ratelimit-remaining-requests",
                             "x-ratelimit-reset-requests", "x-ratelimit-limit-tokens", "x-ratelimit-remaining-tokens",
                             "x-ratelimit-reset-tokens", "Retry-After"}) {
    INFO(absent);
    CHECK(header(headers, absent) == "(absent)");
  }
  CHECK(headers.size() == 1);
}
