// SPDX-License-Identifier: MIT
// airl::Metrics arithmetic, and the counters a limiter keeps: exact under many threads, replays and capacity
// refusals counted on the right side, active_keys taken from the storage.
#include <catch2/catch.hpp>

#include "support.hpp"

#include <cstdint>
#include <string>
#include <thread>
#include <vector>

using namespace std::literals;

namespace {

using airl::test::ManualStorage;
using Limiter = airl::SlidingWindowLimiter<ManualStorage>;

}  // namespace

TEST_CASE("Metrics::total and deny_rate_percent count decisions, not backend errors", "[metrics]") {
  const auto metrics_of = [](std::uint64_t allowed, std::uint64_t denied) {
    airl::Metrics metrics;
    metrics.allowed = allowed;
    metrics.denied = denied;
    metrics.backend_errors = 5;  // never part of the total or the rate
    return metrics;
  };
  CHECK(metrics_of(3, 1).total() == 4);
  CHECK(metrics_of(0, 0).total() == 0);
  CHECK(metrics_of(0, 0).deny_rate_percent() == 0.0);  // no division by zero
  CHECK(metrics_of(3, 1).deny_rate_percent() == 25.0);
  CHECK(metrics_of(0, 5).deny_rate_percent() == 100.0);
  CHECK(metrics_of(7, 0).deny_rate_percent() == 0.0);
  CHECK(metrics_of(1, 2).deny_rate_percent() == Approx(200.0 / 3.0));
}

TEST_CASE("a limiter counts decisions from several threads exactly", "[metrics]") {
  // The first 24 threads of the process own a counter stripe each; later ones share the remaining 8. With 40
  // threads at least 16 of them share, so both ways of counting must be exact.
  const int threads = GENERATE(4, 40);
  const int per_thread = 1000;
  const std::uint64_t limit = static_cast<std::uint64_t>(threads) * per_thread / 2;
  CAPTURE(threads);
  const airl::ManualClock clock;  // never advanced: exactly `limit` requests fit
  Limiter limiter(airl::Quota{limit, 1s}, ManualStorage({}, clock));

  std::vector<std::uint64_t> allowed_by(static_cast<std::size_t>(threads), 0);
  std::vector<std::thread> workers;
  for (int t = 0; t < threads; ++t) {
    workers.emplace_back([&limiter, &allowed_by, t] {
      for (int i = 0; i < per_thread; ++i) {
        if (limiter.allow("user", "model")) ++allowed_by[static_cast<std::size_t>(t)];
      }
    });
  }
  for (auto& worker : workers) worker.join();

  std::uint64_t allowed_seen = 0;
  for (const std::uint64_t n : allowed_by) allowed_seen += n;
  const airl::Metrics metrics = limiter.metrics();
  CHECK(allowed_seen == limit);
  CHECK(metrics.allowed == allowed_seen);
  CHECK(metrics.denied == static_cast<std::uint64_t>(threads) * per_thread - allowed_seen);
  CHECK(metrics.backend_errors == 0);
  CHECK(metrics.deny_rate_percent() == 50.0);
}

TEST_CASE("replays count as allowed and capacity refusals as denied", "[metrics]") {
  const airl::ManualClock clock;
  Limiter limiter(airl::Quota{1, 1s}, ManualStorage(airl::InMemoryOptions{64, 1}, clock));
  CHECK(limiter.allow(airl::Request{"alice", "m", 1, "req-1"}).allowed);
  CHECK(limiter.allow(airl::Request{"alice", "m", 1, "req-1"}).replayed);  // a retry of the same request
  CHECK_FALSE(limiter.allow("alice", "m"));                                 // window full
  CHECK(limiter.allow("bob", "m").reason == airl::key_capacity_reason);    // store full (max_keys 1)

  const airl::Metrics metrics = limiter.metrics();
  CHECK(metrics.allowed == 2);
  CHECK(metrics.denied == 2);
  CHECK(limiter.usage("alice", "m") == 1);  // the replay was not charged
}

TEST_CASE("metrics report the storage's active keys", "[metrics]") {
  airl::ManualClock clock;
  Limiter limiter(airl::Quota{10, 1s}, ManualStorage({}, clock));
  limiter.allow("alice", "m1");
  limiter.allow("alice", "m2");
  limiter.allow("bob", "m1");
  limiter.allow("bob", "m1");  // same bucket again
  CHECK(limiter.metrics().active_keys == 3);
  CHECK(limiter.metrics().active_keys == limiter.storage().active_keys());

  limiter.reset("alice");
  CHECK(limiter.metrics().active_keys == 1);
  clock.advance(1s);
  limiter.purge_expired();
  CHECK(limiter.metrics().active_keys == 0);
  CHECK(limiter.metrics().allowed == 4);  // resets and purges keep the counters
}

TEST_CASE("a multi-tier limiter's active keys count one bucket per tier", "[metrics]") {
  const airl::ManualClock clock;
  airl::MultiTierLimiter<ManualStorage> limiter(
      {airl::Tier{"per-user", airl::Scope::user, airl::Quota{10, 1s}},
       airl::Tier{"per-model", airl::Scope::model, airl::Quota{10, 1s}},
       airl::Tier{"everyone", airl::Scope::global, airl::Quota{10, 1s}}},
      ManualStorage({}, clock));
  limiter.allow("alice", "m1");
  CHECK(limiter.metrics().active_keys == 3);
  limiter.allow("bob", "m1");  // new user bucket; model and global buckets are shared
  CHECK(limiter.metrics().active_keys == 4);
  CHECK(limiter.metrics().allowed == 2);
}
