// SPDX-License-Identifier: MIT
// <airl/prometheus.hpp> and the counters behind it: the exact exposition text, label escaping, what a real
// limiter counts (by tier, by store-made reason, sampled latencies), and Prometheus's own promtool accepting
// real output. promtool missing fails the test (Debian: apt-get install prometheus). Decisions degraded by an
// unreachable Redis are counted in tests/redis/redis_prometheus_test.cpp.

#include <catch2/catch.hpp>

#include <airl/prometheus.hpp>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <string>
#include <thread>
#include <unistd.h>

#include "prometheus_support.hpp"
#include "support.hpp"

namespace {

using namespace std::chrono_literals;
using airl::Scope;
using airl::test::sample;

// Runs Debian's `promtool check metrics` on `text` and checks that it accepts it. A missing promtool fails
// the test (Debian: apt-get install prometheus), never skips it.
void check_with_promtool(const std::string& text) {
  if (std::system("command -v promtool > /dev/null 2>&1") != 0) {
    FAIL("promtool is not installed (Debian: apt-get install prometheus); this test needs it");
  }
  static int calls = 0;
  const std::string path = "/tmp/airl-promtool-" + std::to_string(::getpid()) + "-" + std::to_string(calls++) + ".txt";
  {
    std::ofstream file(path);
    file << text;
  }
  const int status = std::system(("promtool check metrics < " + path + " > " + path + ".out 2>&1").c_str());
  std::ifstream report(path + ".out");
  const std::string output((std::istreambuf_iterator<char>(report)), std::istreambuf_iterator<char>());
  INFO("promtool said: " << output);
  CHECK(status == 0);
  std::remove(path.c_str());
  std::remove((path + ".out").c_str());
}

}  // namespace

TEST_CASE("the exposition text of a metrics snapshot is exact", "[prometheus]") {
  airl::Metrics metrics;
  metrics.allowed = 7;
  metrics.denied = 5;
  metrics.backend_errors = 2;
  metrics.active_keys = 3;
  metrics.degraded = 1;
  metrics.denied_key_capacity = 1;
  metrics.denied_backend_unavailable = 0;
  metrics.denied_by_tier = {{"rpm", 3}, {"tpm", 1}};
  metrics.latency.counts[2] = 4;   // <= 500 ns
  metrics.latency.counts[15] = 1;  // <= 10 ms
  metrics.latency.counts[16] = 1;  // more
  metrics.latency.sum_ns = 12'000'001'500;
  const std::string expected =
      "# HELP airl_decisions_total Rate-limit decisions, by result.\n"
      "# TYPE airl_decisions_total counter\n"
      "airl_decisions_total{result=\"allowed\"} 7\n"
      "airl_decisions_total{result=\"denied\"} 5\n"
      "# HELP airl_denials_total Denials, by the tier (or store-level reason) that denied.\n"
      "# TYPE airl_denials_total counter\n"
      "airl_denials_total{reason=\"rpm\"} 3\n"
      "airl_denials_total{reason=\"tpm\"} 1\n"
      "airl_denials_total{reason=\"key_capacity\"} 1\n"
      "airl_denials_total{reason=\"backend_unavailable\"} 0\n"
      "# HELP airl_backend_errors_total Storage backend calls that failed.\n"
      "# TYPE airl_backend_errors_total counter\n"
      "airl_backend_errors_total 2\n"
      "# HELP airl_degraded_decisions_total Decisions a failure policy made without the store.\n"
      "# TYPE airl_degraded_decisions_total counter\n"
      "airl_degraded_decisions_total 1\n"
      "# HELP airl_active_keys Buckets the store holds (expired ones until swept).\n"
      "# TYPE airl_active_keys gauge\n"
      "airl_active_keys 3\n"
      "# HELP airl_decision_latency_seconds Latency of allow(), one decision in 64 per thread.\n"
      "# TYPE airl_decision_latency_seconds histogram\n"
      "airl_decision_latency_seconds_bucket{le=\"0.000000100\"} 0\n"
      "airl_decision_latency_seconds_bucket{le=\"0.000000250\"} 0\n"
      "airl_decision_latency_seconds_bucket{le=\"0.000000500\"} 4\n"
      "airl_decision_latency_seconds_bucket{le=\"0.000001000\"} 4\n"
      "airl_decision_latency_seconds_bucket{le=\"0.000002500\"} 4\n"
      "airl_decision_latency_seconds_bucket{le=\"0.000005000\"} 4\n"
      "airl_decision_latency_seconds_bucket{le=\"0.000010000\"} 4\n"
      "airl_decision_latency_seconds_bucket{le=\"0.000025000\"} 4\n"
      "airl_decision_latency_seconds_bucket{le=\"0.000050000\"} 4\n"
      "airl_decision_latency_seconds_bucket{le=\"0.000100000\"} 4\n"
      "airl_decision_latency_seconds_bucket{le=\"0.000250000\"} 4\n"
      "airl_decision_latency_seconds_bucket{le=\"0.000500000\"} 4\n"
      "airl_decision_latency_seconds_bucket{le=\"0.001000000\"} 4\n"
      "airl_decision_latency_seconds_bucket{le=\"0.002500000\"} 4\n"
      "airl_decision_latency_seconds_bucket{le=\"0.005000000\"} 4\n"
      "airl_decision_latency_seconds_bucket{le=\"0.010000000\"} 5\n"
      "airl_decision_latency_seconds_bucket{le=\"+Inf\"} 6\n"
      "airl_decision_latency_seconds_sum 12.000001500\n"
      "airl_decision_latency_seconds_count 6\n";
  CHECK(airl::prometheus::text(metrics) == expected);
  CHECK(airl::prometheus::text(metrics, "gateway_limits").rfind("# HELP gateway_limits_decisions_total ", 0) == 0);
}

TEST_CASE("label values are escaped and kept valid UTF-8, and a bad prefix is refused", "[prometheus][validation]") {
  airl::Metrics metrics;
  metrics.denied_by_tier = {{"a\\b\"c\nd caf\xC3\xA9 \xFF", 2}};
  CHECK(sample(airl::prometheus::text(metrics), "airl_denials_total{reason=\"a\\\\b\\\"c\\nd caf\xC3\xA9 \xEF\xBF\xBD\"}") == "2");
  for (const char* bad : {"", "9lives", "has-dash", "sp ace", "caf\xC3\xA9"}) {
    INFO("prefix '" << bad << "'");
    CHECK_THROWS_AS(airl::prometheus::text(metrics, bad), std::invalid_argument);
  }
  CHECK_NOTHROW(airl::prometheus::text(metrics, "_a:b_9"));
}

TEMPLATE_LIST_TEST_CASE("a limiter counts denials by tier and by store-made reason",
                        "[prometheus][metrics]", airl::test::Backends) {
  TestType backend;
  const std::string prefix = std::string("prom-") + TestType::name + "-";
  airl::MultiTierLimiter<typename TestType::Storage> limiter(
      {{prefix + "pair", Scope::user_model, {2, 60s}}, {prefix + "user", Scope::user, {3, 60s}}},
      backend.make_storage());
  const std::string alice = prefix + "alice";
  REQUIRE(limiter.allow(alice, "m1"));
  REQUIRE(limiter.allow(alice, "m1"));
  REQUIRE_FALSE(limiter.allow(alice, "m1"));  // pair
  REQUIRE(limiter.allow(alice, "m2"));
  REQUIRE_FALSE(limiter.allow(alice, "m3"));  // user
  REQUIRE_FALSE(limiter.allow(alice, "m3"));  // user
  const airl::Metrics metrics = limiter.metrics();
  CHECK(metrics.allowed == 3);
  CHECK(metrics.denied == 3);
  REQUIRE(metrics.denied_by_tier.size() == 2);
  CHECK(metrics.denied_by_tier[0].tier == prefix + "pair");
  CHECK(metrics.denied_by_tier[0].denied == 1);
  CHECK(metrics.denied_by_tier[1].tier == prefix + "user");
  CHECK(metrics.denied_by_tier[1].denied == 2);
  CHECK(metrics.denied_key_capacity == 0);
  CHECK(metrics.degraded == 0);
  const std::string text = airl::prometheus::text(metrics);
  CHECK(sample(text, "airl_denials_total{reason=\"" + prefix + "user\"}") == "2");
}

TEST_CASE("key_capacity denials are counted under their own reason", "[prometheus][metrics]") {
  airl::test::InMemoryBackend backend;
  airl::SlidingWindowLimiter<airl::test::ManualStorage> limiter({5, 1s}, backend.make_storage({.max_keys = 1}));
  REQUIRE(limiter.allow("a", "m"));
  REQUIRE_FALSE(limiter.allow("b", "m"));
  const airl::Metrics metrics = limiter.metrics();
  CHECK(metrics.denied == 1);
  CHECK(metrics.denied_key_capacity == 1);
  CHECK(metrics.denied_by_tier.at(0).denied == 0);
}

TEST_CASE("one allow() in 64 per thread is timed into the latency histogram", "[prometheus][metrics]") {
  airl::RateLimiter limiter({1'000'000, 60s});
  std::thread worker([&] {  // a new thread: its countdown starts fresh, so the first decision is timed
    for (int i = 0; i < 64 * 10; ++i) limiter.allow("u", "m");
  });
  worker.join();
  const airl::Metrics metrics = limiter.metrics();
  CHECK(metrics.latency.count() == 10);
  CHECK(metrics.latency.sum_ns > 0);
  const std::string text = airl::prometheus::text(metrics);
  CHECK(sample(text, "airl_decision_latency_seconds_count") == "10");
  CHECK(sample(text, "airl_decision_latency_seconds_bucket{le=\"+Inf\"}") == "10");
}

TEST_CASE("two limiters used in turn by one thread are each sampled one decision in 64", "[prometheus][metrics]") {
  // The countdown is per limiter: a thread-wide one would line up with the alternation and starve one.
  airl::RateLimiter live({1'000'000, 60s});
  airl::RateLimiter candidate({1'000'000, 60s}, airl::InMemoryStorage<>{}, airl::LimiterOptions{.shadow = true});
  std::thread worker([&] {
    for (int i = 0; i < 64 * 10; ++i) {
      live.allow("u", "m");
      candidate.allow("u", "m");
    }
  });
  worker.join();
  CHECK(live.metrics().latency.count() == 10);
  CHECK(candidate.metrics().latency.count() == 10);
}

TEST_CASE("promtool accepts the metrics of a real limiter", "[prometheus][promtool]") {
  airl::MultiTierRateLimiter limiter({{"rpm", Scope::user_model, {3, 60s}, airl::Unit::requests},
                                      {"tpm \"quoted\"\n", Scope::user_model, {1000, 90s}}});
  for (int i = 0; i < 1000; ++i) limiter.allow({.user = "u" + std::to_string(i % 9), .model = "m", .cost = 300});
  check_with_promtool(airl::prometheus::text(limiter.metrics()));
}

TEST_CASE("a concurrency limiter's metrics come out exactly, and promtool accepts them", "[prometheus][promtool]") {
  airl::ManualClock clock;
  airl::ConcurrencyLimiter<airl::InMemoryConcurrencyStorage<airl::ManualClock>> caps(
      {{"user_in_flight", Scope::user, 1, 10s}}, airl::InMemoryConcurrencyStorage<airl::ManualClock>({}, clock));
  airl::Permit held = caps.try_acquire("u", "m");
  REQUIRE(held);
  REQUIRE_FALSE(caps.try_acquire("u", "m"));
  REQUIRE(held.renew());
  const std::string text = airl::prometheus::text(caps.metrics());
  CHECK(sample(text, "airl_concurrency_acquisitions_total{result=\"acquired\"}") == "1");
  CHECK(sample(text, "airl_concurrency_acquisitions_total{result=\"denied\"}") == "1");
  CHECK(sample(text, "airl_concurrency_permits_held") == "1");
  CHECK(sample(text, "airl_concurrency_renewals_total{result=\"renewed\"}") == "1");
  CHECK(sample(text, "airl_concurrency_renewals_total{result=\"lost\"}") == "0");
  CHECK(sample(text, "airl_concurrency_release_errors_total") == "0");
  CHECK_THROWS_AS(airl::prometheus::text(caps.metrics(), "9bad"), std::invalid_argument);
  check_with_promtool(text);
}
