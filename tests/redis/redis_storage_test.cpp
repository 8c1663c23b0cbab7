// SPDX-License-Identifier: MIT
// RedisStorage against a real redis-server (and, for the decision cases, a Redis Cluster and a Sentinel-watched
// master): replicas share one quota, races admit exactly the limit,
// request ids replay across replicas, weighted costs, and the numbers the script computes are exact.
// What Redis holds afterwards (TTLs, key names, resets) is checked in redis_storage_keys_test.cpp.
#include <catch2/catch.hpp>

#include "redis_test_support.hpp"

#include <atomic>
#include <chrono>
#include <cstdint>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

using namespace std::chrono_literals;
using namespace airl;
using namespace airl::test;

namespace {

constexpr std::uint64_t two_to_53 = std::uint64_t{1} << 53;

// A limiter on the shared server, cluster or Sentinel-watched master (Backend::mode); `prefix` picks the
// quota it shares.
template <class Backend = RedisBackend>
RedisRateLimiter limiter_on(const std::string& prefix, Quota quota) {
  RedisOptions options = shared_options(Backend::mode, prefix);  // fail_closed
  options.command_timeout = 1000ms;  // generous: these tests are about decisions, not faults
  options.connect_timeout = 1000ms;
  return RedisRateLimiter(quota, RedisStorage(options));
}

// The topologies the decision cases below run on.
using Topologies = std::tuple<RedisBackend, RedisClusterBackend, RedisSentinelBackend>;

}  // namespace

TEMPLATE_LIST_TEST_CASE("two limiters with separate storages on one server and prefix share one quota", "[redis]", Topologies) {
  const std::string prefix = unique_key_prefix();
  RedisRateLimiter replica_a = limiter_on<TestType>(prefix, {5, 30s});
  RedisRateLimiter replica_b = limiter_on<TestType>(prefix, {5, 30s});
  int admitted = 0;
  for (int i = 0; i < 10; ++i) {
    RedisRateLimiter& replica = i % 2 == 0 ? replica_a : replica_b;
    const Decision decision = replica.allow("alice", "m");
    CHECK_FALSE(decision.degraded);
    if (decision.allowed) ++admitted;
  }
  CHECK(admitted == 5);
  CHECK(replica_a.usage("alice", "m") == 5);
  CHECK(replica_b.usage("alice", "m") == 5);
  CHECK(replica_a.metrics().allowed + replica_b.metrics().allowed == 5);
  CHECK(replica_a.metrics().denied + replica_b.metrics().denied == 5);
  // A third replica under another prefix shares nothing.
  RedisRateLimiter elsewhere = limiter_on<TestType>(unique_key_prefix(), {5, 30s});
  CHECK(elsewhere.allow("alice", "m").allowed);
  CHECK(elsewhere.usage("alice", "m") == 1);
}

TEMPLATE_LIST_TEST_CASE("threads racing on one key are admitted exactly `limit` times", "[redis]", Topologies) {
  constexpr std::uint64_t limit = 40;
  constexpr int threads = 8;
  constexpr int attempts_per_thread = 15;  // 120 attempts for 40 slots
  const std::string prefix = unique_key_prefix();
  std::vector<RedisRateLimiter> limiters;

  SECTION("one limiter, 8 threads") { limiters.push_back(limiter_on<TestType>(prefix, {limit, 60s})); }
  SECTION("two limiters (separate pools), 4 threads each") {
    limiters.push_back(limiter_on<TestType>(prefix, {limit, 60s}));
    limiters.push_back(limiter_on<TestType>(prefix, {limit, 60s}));
  }

  REQUIRE_FALSE(limiters.empty());  // a section that threw (no redis-server) must not reach the modulo below
  std::atomic<int> admitted{0};
  std::atomic<int> degraded{0};
  std::atomic<bool> go{false};
  std::vector<std::thread> workers;
  for (int t = 0; t < threads; ++t) {
    RedisRateLimiter& limiter = limiters[static_cast<std::size_t>(t) % limiters.size()];
    workers.emplace_back([&] {
      while (!go.load()) std::this_thread::yield();
      for (int i = 0; i < attempts_per_thread; ++i) {
        const Decision decision = limiter.allow("racer", "m");
        if (decision.allowed) admitted.fetch_add(1);
        if (decision.degraded) degraded.fetch_add(1);
      }
    });
  }
  go = true;
  for (std::thread& worker : workers) worker.join();

  CHECK(degraded.load() == 0);
  CHECK(admitted.load() == static_cast<int>(limit));
  CHECK(limiters.front().usage("racer", "m") == limit);
  std::uint64_t allowed = 0, denied = 0;
  for (const RedisRateLimiter& limiter : limiters) {
    allowed += limiter.metrics().allowed;
    denied += limiter.metrics().denied;
  }
  CHECK(allowed == limit);
  CHECK(denied == threads * attempts_per_thread - limit);
}

TEMPLATE_LIST_TEST_CASE("a retry with the same request_id is replayed, not charged again, on any replica", "[redis]", Topologies) {
  const std::string prefix = unique_key_prefix();
  RedisRateLimiter replica_a = limiter_on<TestType>(prefix, {3, 30s});
  RedisRateLimiter replica_b = limiter_on<TestType>(prefix, {3, 30s});

  const Decision first = replica_a.allow(with_id("alice", "m", "req-1"));
  CHECK(first.allowed);
  CHECK_FALSE(first.replayed);
  CHECK(first.remaining == 2);
  for (RedisRateLimiter* replica : {&replica_a, &replica_b, &replica_b}) {
    const Decision retry = replica->allow(with_id("alice", "m", "req-1"));
    CHECK(retry.allowed);
    CHECK(retry.replayed);
    CHECK_FALSE(retry.degraded);
  }
  CHECK(replica_a.usage("alice", "m") == 1);

  CHECK(replica_b.allow(with_id("alice", "m", "req-2")).allowed);
  CHECK(replica_a.allow(with_id("alice", "m", "req-3")).allowed);
  CHECK(replica_a.usage("alice", "m") == 3);
  // The window is full: a retry of an admitted id still passes uncharged, a new id does not.
  const Decision full_retry = replica_b.allow(with_id("alice", "m", "req-2"));
  CHECK(full_retry.allowed);
  CHECK(full_retry.replayed);
  const Decision fresh = replica_b.allow(with_id("alice", "m", "req-4"));
  CHECK_FALSE(fresh.allowed);
  CHECK_FALSE(fresh.replayed);
  CHECK(replica_a.usage("alice", "m") == 3);
  // The same id for another user is another request.
  CHECK_FALSE(replica_a.allow(with_id("bob", "m", "req-1")).replayed);
  CHECK(replica_a.usage("bob", "m") == 1);
}

TEMPLATE_LIST_TEST_CASE("weighted costs: admitted while the sum fits, a cost above the limit never", "[redis]", Topologies) {
  RedisRateLimiter limiter = limiter_on<TestType>(unique_key_prefix(), {10, 30s});
  Decision decision = limiter.allow(costing("alice", "m", 4));
  CHECK(decision.allowed);
  CHECK(decision.remaining == 6);
  decision = limiter.allow(costing("alice", "m", 4));
  CHECK(decision.allowed);
  CHECK(decision.remaining == 2);
  CHECK(limiter.usage("alice", "m") == 8);

  decision = limiter.allow(costing("alice", "m", 3));
  CHECK_FALSE(decision.allowed);
  CHECK(decision.remaining == 2);
  CHECK(decision.reason == "default");
  CHECK(decision.retry_after > 0ms);
  CHECK(decision.retry_after <= 30s);
  CHECK(limiter.usage("alice", "m") == 8);  // a denial writes nothing

  decision = limiter.allow(costing("alice", "m", 11));
  CHECK_FALSE(decision.allowed);
  CHECK(decision.retry_after == Decision::never);

  decision = limiter.allow(costing("alice", "m", 2));
  CHECK(decision.allowed);
  CHECK(decision.remaining == 0);
  CHECK(limiter.usage("alice", "m") == 10);

  RedisRateLimiter closed = limiter_on<TestType>(unique_key_prefix(), {0, 30s});
  decision = closed.allow("alice", "m");
  CHECK_FALSE(decision.allowed);
  CHECK(decision.retry_after == Decision::never);
}

TEMPLATE_LIST_TEST_CASE("retry_after from Redis is when the oldest entries free enough room", "[redis]", Topologies) {
  RedisRateLimiter limiter = limiter_on<TestType>(unique_key_prefix(), {8, 400ms});
  const auto started = std::chrono::steady_clock::now();
  REQUIRE(limiter.allow(costing("alice", "m", 4)).allowed);
  std::this_thread::sleep_for(150ms);
  REQUIRE(limiter.allow(costing("alice", "m", 4)).allowed);
  const Decision denied = limiter.allow(costing("alice", "m", 3));  // needs the first entry to expire
  const auto since_first = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - started);
  REQUIRE_FALSE(denied.allowed);
  CHECK(denied.retry_after <= 400ms - since_first + TestType::slack);
  CHECK(denied.retry_after >= 400ms - since_first - TestType::slack);
  std::this_thread::sleep_for(denied.retry_after);
  CHECK(limiter.allow(costing("alice", "m", 3)).allowed);
}

TEST_CASE("limits and costs above 2^53 are refused before anything is written", "[redis]") {
  RedisServer server;
  const std::string prefix = unique_key_prefix();
  RedisOptions options = options_for(server, FailurePolicy::fail_open, prefix);
  {
    RedisRateLimiter too_high(Quota{two_to_53 + 1, 10s}, RedisStorage(options));
    CHECK_THROWS_AS(too_high.allow("alice", "m"), std::invalid_argument);
    CHECK(too_high.metrics().total() == 0);
    CHECK(too_high.metrics().backend_errors == 0);
  }
  RedisRateLimiter at_most(Quota{two_to_53, 10s}, RedisStorage(options));
  CHECK_THROWS_AS(at_most.allow(costing("alice", "m", two_to_53 + 1)), std::invalid_argument);
  // A multi-tier request whose second tier is out of range writes nothing in the first either.
  RedisMultiTierRateLimiter tiers({{"ok", Scope::user, {10, 10s}}, {"huge", Scope::global, {two_to_53 + 1, 10s}}},
                                  RedisStorage(options));
  CHECK_THROWS_AS(tiers.allow("alice", "m"), std::invalid_argument);
  CHECK(server.keys_with_prefix("").empty());
  // 2^53 itself is fine.
  CHECK(at_most.allow(costing("alice", "m", two_to_53)).allowed);
}

TEST_CASE("the script's numbers are exact: integer microsecond scores on Redis's clock, costs up to 2^53",
          "[redis]") {
  const std::string prefix = unique_key_prefix();
  RedisRateLimiter limiter = limiter_on(prefix, {two_to_53, 30s});
  const std::string log = redis_key_of(prefix, {Scope::user_model, "default", "alice", "m"});

  const RawReply before = must(shared_redis(), {"TIME"});
  const long long time_before = std::stoll(text_of(*before->element[0])) * 1'000'000 + std::stoll(text_of(*before->element[1]));
  REQUIRE(limiter.allow(costing("alice", "m", two_to_53 - 1)).allowed);
  const Decision last = limiter.allow(costing("alice", "m", 1));
  REQUIRE(last.allowed);
  CHECK(last.remaining == 0);
  const RawReply after = must(shared_redis(), {"TIME"});
  const long long time_after = std::stoll(text_of(*after->element[0])) * 1'000'000 + std::stoll(text_of(*after->element[1]));

  const RawReply entries = must(shared_redis(), {"ZRANGE", log, "0", "-1", "WITHSCORES"});
  REQUIRE(entries->elements == 4);
  long long previous = 0;
  for (std::size_t i = 1; i < entries->elements; i += 2) {
    const std::string score = text_of(*entries->element[i]);
    INFO("score " << score);
    CHECK(score.find_first_not_of("0123456789") == std::string::npos);  // no '.', no exponent
    const long long at = std::stoll(score);
    CHECK(at >= time_before);
    CHECK(at <= time_after);
    CHECK(at >= previous);
    previous = at;
  }
  // The running sum and the weighted entry are stored as exact integers, and usage() reads them back exactly.
  const std::string costs = log + ":c";
  CHECK(text_of(*must(shared_redis(), {"HGET", costs, ""})) == std::to_string(two_to_53));
  CHECK(text_of(*must(shared_redis(), {"HGET", costs, text_of(*entries->element[0])})) == std::to_string(two_to_53 - 1));
  CHECK(limiter.usage("alice", "m") == two_to_53);
  const Decision over = limiter.allow(costing("alice", "m", 1));
  CHECK_FALSE(over.allowed);
  CHECK(over.retry_after > 0ms);
  CHECK(over.retry_after <= 30s);
}

TEST_CASE("bad Redis options are refused with std::invalid_argument", "[redis]") {
  const auto refused = [](auto change) {
    RedisOptions options;
    change(options);
    CHECK_THROWS_AS(RedisStorage(options), std::invalid_argument);
  };
  refused([](RedisOptions& o) { o.key_prefix = ""; });
  refused([](RedisOptions& o) { o.key_prefix = "a{b"; });
  refused([](RedisOptions& o) { o.key_prefix = "ab}"; });
  refused([](RedisOptions& o) { o.pool_size = 0; });
  refused([](RedisOptions& o) { o.port = 0; });
  refused([](RedisOptions& o) { o.port = -1; });
  refused([](RedisOptions& o) { o.port = 70000; });
  refused([](RedisOptions& o) { o.connect_timeout = 0ms; });
  refused([](RedisOptions& o) { o.command_timeout = 0ms; });
  refused([](RedisOptions& o) { o.command_timeout = -5ms; });
  refused([](RedisOptions& o) { o.database = -1; });
  refused([](RedisOptions& o) { o.on_failure = static_cast<FailurePolicy>(42); });
  CHECK_NOTHROW(RedisStorage(RedisOptions{}));
}

TEST_CASE("the constructor does not connect: no throw when nothing listens, allow() degrades", "[redis]") {
  RedisOptions options;
  options.port = free_loopback_port();
  options.connect_timeout = 50ms;
  options.command_timeout = 50ms;
  options.key_prefix = unique_key_prefix();
  options.on_failure = FailurePolicy::fail_open;
  std::optional<RedisRateLimiter> limiter;
  REQUIRE_NOTHROW(limiter.emplace(Quota{3, 1s}, RedisStorage(options)));
  const Decision decision = limiter->allow("alice", "m");
  CHECK(decision.allowed);
  CHECK(decision.degraded);
  CHECK(limiter->metrics().backend_errors == 1);
  CHECK_FALSE(limiter->storage().healthy());
}

TEST_CASE("a bucket whose log key was lost counts nothing, even under steady traffic", "[redis]") {
  // An eviction policy (or a log expiring a moment before its costs key) can leave a sum without its log:
  // the script must drop that sum, not keep denying on entries that no longer exist.
  const std::string prefix = unique_key_prefix();
  RedisRateLimiter limiter = limiter_on(prefix, {10, 30s});
  for (int i = 0; i < 3; ++i) REQUIRE(limiter.allow("alice", "m"));
  const std::string log = redis_key_of(prefix, {Scope::user_model, "default", "alice", "m"});
  must(shared_redis(), {"DEL", log});
  CHECK(limiter.usage("alice", "m") == 0);
  for (int i = 0; i < 10; ++i) CHECK(limiter.allow("alice", "m"));  // all 10 fit again
  CHECK_FALSE(limiter.allow("alice", "m"));
  CHECK(limiter.usage("alice", "m") == 10);
}

TEST_CASE("RedisStorage refuses what a limiter would: zero cost, bad windows, and used after a move",
          "[redis][validation]") {
  RedisStorage storage(options_for(shared_redis(), FailurePolicy::fail_open, unique_key_prefix()));
  const BucketRef bucket{Scope::user, "t", "alice", ""};
  for (const auto window : {0ms, -1ms, max_window + 1ms}) {
    const Charge charge{bucket, Quota{5, window}, 1};
    CHECK_THROWS_AS(storage.acquire(std::span(&charge, 1), {}), std::invalid_argument);
    CHECK_THROWS_AS(storage.usage(bucket, Quota{5, window}), std::invalid_argument);
  }
  const Charge zero_cost{bucket, Quota{5, 1s}, 0};
  CHECK_THROWS_AS(storage.acquire(std::span(&zero_cost, 1), {}), std::invalid_argument);  // not "admitted, degraded"
  RedisStorage taken(std::move(storage));
  const Charge fine{bucket, Quota{5, 1s}, 1};
  CHECK(taken.acquire(std::span(&fine, 1), {}).status == AcquireStatus::allowed);
  CHECK_THROWS_AS(storage.acquire(std::span(&fine, 1), {}), std::logic_error);  // NOLINT(bugprone-use-after-move)
}
