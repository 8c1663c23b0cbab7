// SPDX-License-Identifier: MIT
// RedisStorage against a real redis-server (and, for the decision cases, a Redis Cluster and a Sentinel-watched
// master): replicas share one quota, races admit exactly the limit,
// request ids replay across replicas, weighted costs, and the numbers the script computes are exact.
// What Redis holds afterwards (TTLs, key names, resets) is checked in redis_storage_keys_test.cpp.
#include <catch2/catch.hpp>

#include "moved_from.hpp"
#include "redis_test_support.hpp"

#include <airl/redis/testing_clock.hpp>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <thread>
#include <tuple>
#include <utility>
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

TEST_CASE("under fail_open too, a limit above 2^53 is refused at construction and a cost above it denied for good",
          "[redis]") {
  // Before: the limiter was built, then every allow() threw std::invalid_argument, even under fail_open.
  RedisServer server;
  const std::string prefix = unique_key_prefix();
  RedisOptions options = options_for(server, FailurePolicy::fail_open, prefix);
  CHECK_THROWS_AS(RedisRateLimiter(Quota{two_to_53 + 1, 10s}, RedisStorage(options)), std::invalid_argument);
  CHECK_THROWS_AS(RedisMultiTierRateLimiter({{"ok", Scope::user, {10, 10s}}, {"huge", Scope::global, {two_to_53 + 1, 10s}}},
                                            RedisStorage(options)),
                  std::invalid_argument);
  RedisRateLimiter at_most(Quota{two_to_53, 10s}, RedisStorage(options));
  // The script answers it (not the failure policy), and writes nothing.
  const Decision huge = at_most.allow(costing("alice", "m", two_to_53 + 1));
  CHECK_FALSE(huge.allowed);
  CHECK_FALSE(huge.degraded);
  CHECK(huge.retry_after == Decision::never);
  CHECK(at_most.metrics().backend_errors == 0);
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

TEST_CASE("every member of a moved-from RedisStorage throws std::logic_error", "[redis][lifecycle]") {
  RedisStorage storage(options_for(shared_redis(), FailurePolicy::local, unique_key_prefix()));
  RedisStorage taken(std::move(storage));
  static const Charge charge{BucketRef{Scope::user, "t", "u", ""}, Quota{2, 1s}, 1};
  static const AcquireCall call{std::span(&charge, 1), {}};
  require_refused_when_moved_from<RedisStorage>(storage, "airl::RedisStorage",  // NOLINT(bugprone-use-after-move)
      {
          {"acquire", [](RedisStorage& s) { (void)s.acquire(std::span(&charge, 1), {}); }},
          {"acquire_many", [](RedisStorage& s) { (void)s.acquire_many(std::span(&call, 1)); }},
          {"settle", [](RedisStorage& s) { (void)s.settle(std::span(&charge, 1), "id"); }},
          {"refund", [](RedisStorage& s) { (void)s.refund(std::span(&charge, 1), "id"); }},
          {"usage", [](RedisStorage& s) { (void)s.usage(charge.bucket, charge.quota); }},
          {"erase", [](RedisStorage& s) { s.erase(std::span(&charge.bucket, 1)); }},
          {"erase_user", [](RedisStorage& s) { s.erase_user("u"); }},
          {"purge_expired", [](RedisStorage& s) { (void)s.purge_expired(); }},
          {"topology_metrics", [](RedisStorage& s) { (void)std::as_const(s).topology_metrics(); }},
          {"active_keys", [](RedisStorage& s) { (void)std::as_const(s).active_keys(); }},
          {"healthy", [](RedisStorage& s) { (void)std::as_const(s).healthy(); }},
          {"options", [](RedisStorage& s) { (void)std::as_const(s).options(); }},
          {"last_backend_error", [](RedisStorage& s) { (void)std::as_const(s).last_backend_error(); }},
      });
  storage = std::move(taken);  // assigning brings it back; destroying the moved-from `taken` is fine
  CHECK(storage.acquire(std::span(&charge, 1), {}).status == AcquireStatus::allowed);
  taken = RedisStorage(options_for(shared_redis(), FailurePolicy::local, unique_key_prefix()));
  CHECK(taken.active_keys() == 0);
}

TEST_CASE("every member of a moved-from RedisConcurrencyStorage throws std::logic_error", "[redis][lifecycle]") {
  RedisConcurrencyStorage storage(options_for(shared_redis(), FailurePolicy::local, unique_key_prefix()));
  RedisConcurrencyStorage taken(std::move(storage));
  static const ConcurrencySlot slot{BucketRef{Scope::user, "c", "u", ""}, 1, 60s};
  static const PermitId id{1, 2};
  using Storage = RedisConcurrencyStorage;
  require_refused_when_moved_from<Storage>(storage, "airl::RedisConcurrencyStorage",  // NOLINT(bugprone-use-after-move)
      {
          {"validate_cap", [](Storage& s) { std::as_const(s).validate_cap({"c", Scope::user, 1, 60s}); }},
          {"try_acquire", [](Storage& s) { (void)s.try_acquire(std::span(&slot, 1), id); }},
          {"release", [](Storage& s) { s.release(std::span(&slot, 1), id, LeaseLocation::store); }},
          {"renew", [](Storage& s) { (void)s.renew(std::span(&slot, 1), id, LeaseLocation::store); }},
          {"in_flight", [](Storage& s) { (void)s.in_flight(slot); }},
          {"purge_expired", [](Storage& s) { (void)s.purge_expired(); }},
          {"topology_metrics", [](Storage& s) { (void)std::as_const(s).topology_metrics(); }},
          {"pending_releases", [](Storage& s) { (void)std::as_const(s).pending_releases(); }},
          {"active_keys", [](Storage& s) { (void)std::as_const(s).active_keys(); }},
          {"healthy", [](Storage& s) { (void)std::as_const(s).healthy(); }},
          {"options", [](Storage& s) { (void)std::as_const(s).options(); }},
          {"last_backend_error", [](Storage& s) { (void)std::as_const(s).last_backend_error(); }},
      });
  storage = std::move(taken);
  CHECK(storage.try_acquire(std::span(&slot, 1), id).acquired);
  storage.release(std::span(&slot, 1), id, LeaseLocation::store);
  taken = Storage(options_for(shared_redis(), FailurePolicy::local, unique_key_prefix()));
  CHECK(taken.pending_releases() == 0);
}

TEMPLATE_LIST_TEST_CASE("a storage on a test clock decides at the clock's time, exactly, across slots too",
                        "[redis][test_clock]", Topologies) {
  ManualClock clock{1000s};
  const std::string prefix = unique_key_prefix();
  // Two tiers: in a cluster the user and model buckets fall in different slots (two script calls, an undo).
  RedisMultiTierRateLimiter limiter({{"user", Scope::user, {2, 1h}}, {"model", Scope::model, {3, 1h}}},
                                    testing::RedisTestClock::storage(shared_options(TestType::mode, prefix), clock));
  REQUIRE(limiter.allow("alice", "m").allowed);  // T
  clock.advance(10min);
  REQUIRE(limiter.allow("alice", "m").allowed);  // T + 10 min
  Decision denied = limiter.allow("alice", "m");
  REQUIRE_FALSE(denied.allowed);
  CHECK(denied.reason == "user");
  CHECK(denied.retry_after == 50min);  // exact: no real time counts
  CHECK(denied.reset_after == 60min);
  clock.advance(49min);  // T + 59 min
  denied = limiter.allow("alice", "m");
  CHECK_FALSE(denied.allowed);
  CHECK(denied.retry_after == 1min);
  clock.advance(1min - 1ms);
  denied = limiter.allow("alice", "m");
  CHECK_FALSE(denied.allowed);
  CHECK(denied.retry_after == 1ms);
  clock.advance(1ms);  // T + 1 h: the first entry leaves the window
  CHECK(limiter.allow("alice", "m").allowed);
  // The model tier (another slot in a cluster) logged T + 10 min and T + 1 h: one more fits, then it waits
  // for T + 10 min to leave.
  CHECK(limiter.allow("bob", "m").allowed);
  denied = limiter.allow("bob", "m");
  CHECK_FALSE(denied.allowed);
  CHECK(denied.reason == "model");
  CHECK(denied.retry_after == 10min);
  CHECK(limiter.usage("user", "bob", "m") == 1);
  CHECK(limiter.usage("model", "bob", "m") == 3);  // usage() reads the test clock too
  if constexpr (TestType::mode == RedisMode::standalone) {
    // Test time stands still while real time passes: TTLs carry an hour more than the window.
    const long long ttl = pttl(shared_redis(), redis_key_of(prefix, {Scope::user, "user", "alice", ""}));
    CHECK(ttl > 3'600'000);
    CHECK(ttl <= 7'200'000);
  }
}

TEST_CASE("only the test variant of the script reads a caller's time", "[redis][test_clock]") {
  CHECK(detail::sliding_window_script.find("redis.call('TIME')") != std::string_view::npos);
  CHECK(detail::sliding_window_script.find("ARGV)") == std::string_view::npos);  // no table.remove(ARGV)
  CHECK(detail::sliding_window_script_client_clock.find("redis.call('TIME')") == std::string_view::npos);
  CHECK(detail::sliding_window_script_client_clock.find("table.remove(ARGV)") != std::string_view::npos);
  CHECK(detail::sliding_window_script.ends_with(detail::sliding_window_body));
  CHECK(detail::sliding_window_script_client_clock.ends_with(detail::sliding_window_body));
}
