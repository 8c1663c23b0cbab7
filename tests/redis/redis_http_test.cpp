// SPDX-License-Identifier: MIT
// <airl/http.hpp> on Redis only: a decision degraded by an unreachable server still carries both units'
// headers. The other cases are in tests/ai_serving/http_test.cpp.

#include <catch2/catch.hpp>

#include <airl/http.hpp>

#include "http_support.hpp"
#include "support.hpp"

namespace {

using airl::test::header;
using airl::test::rpm_and_tpm;

}  // namespace

TEST_CASE("a degraded fail_open decision still carries both units' headers", "[http][redis][faults]") {
  airl::MultiTierLimiter<airl::RedisStorage> limiter(
      rpm_and_tpm(), airl::RedisStorage(airl::test::options_for_closed_port(airl::FailurePolicy::fail_open)));
  const airl::Decision degraded = limiter.allow({.user = "u", .model = "m", .cost = 300});
  REQUIRE(degraded.degraded);
  const auto headers = airl::http::response_headers(degraded, limiter.tiers());
  CHECK(header(headers, "x-ratelimit-remaining-requests") == "2");
  CHECK(header(headers, "x-ratelimit-remaining-tokens") == "700");
}
