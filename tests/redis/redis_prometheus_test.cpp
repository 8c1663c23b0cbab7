// SPDX-License-Identifier: MIT
// <airl/prometheus.hpp> on Redis only: decisions a failure policy made while the server is unreachable are
// counted as degraded. The other cases are in tests/ai_serving/prometheus_test.cpp.

#include <catch2/catch.hpp>

#include <airl/prometheus.hpp>

#include "prometheus_support.hpp"
#include "support.hpp"

namespace {

using namespace std::chrono_literals;
using airl::test::sample;

}  // namespace

TEST_CASE("decisions a failure policy made are counted as degraded", "[prometheus][metrics]") {
  airl::RedisOptions options;
  options.port = airl::test::free_loopback_port();  // nothing listens there
  options.on_failure = airl::FailurePolicy::fail_open;
  options.connect_timeout = 200ms;
  options.command_timeout = 200ms;
  airl::RedisRateLimiter limiter({5, 1s}, airl::RedisStorage(options));
  for (int i = 0; i < 3; ++i) CHECK(limiter.allow("u", "m").degraded);
  const airl::Metrics metrics = limiter.metrics();
  CHECK(metrics.degraded == 3);
  CHECK(metrics.backend_errors >= 3);
  CHECK(sample(airl::prometheus::text(metrics), "airl_degraded_decisions_total") == "3");
}
