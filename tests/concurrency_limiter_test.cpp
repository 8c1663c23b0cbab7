// SPDX-License-Identifier: MIT
// Concurrency caps (ConcurrencyLimiter, Permit, both concurrency storages). The behavioural cases run on both
// backends: in memory on a ManualClock (exact, no sleeps) and on a real redis-server (Redis's clock, bounded
// waits). Then the cases only one backend has: in-memory memory bounds and exact retry hints; Redis keys, a
// process that dies holding a permit, and an unreachable server under each failure policy.
#include <catch2/catch.hpp>

#include "redis_test_support.hpp"

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#include <poll.h>
#include <sys/wait.h>
#include <unistd.h>

using namespace std::chrono_literals;
using namespace airl::test;
using airl::ConcurrencyCap;
using airl::Permit;
using airl::Scope;

namespace {

using ManualConcurrencyStorage = airl::InMemoryConcurrencyStorage<airl::ManualClock>;

// In memory on a ManualClock: time moves only when a test says so, every duration is exact.
struct InMemoryCaps {
  using Storage = ManualConcurrencyStorage;
  static constexpr const char* name = "in-memory";
  static constexpr std::chrono::milliseconds slack{0};
  static constexpr int thread_iterations = 200;
  static constexpr std::chrono::milliseconds longest_hold{2};

  airl::ManualClock clock;

  Storage make_storage() const { return Storage({}, clock); }
  void advance(std::chrono::milliseconds by) { clock.advance(by); }
  // Moves time by `by`, then asks once: on exact time there is nothing to wait for.
  template <class Done>
  bool after(std::chrono::milliseconds by, Done&& done) {
    advance(by);
    return done();
  }
};

// On the shared redis-server, each backend object with its own key prefix. Real time passes.
struct RedisCaps {
  using Storage = airl::RedisConcurrencyStorage;
  static constexpr const char* name = "redis";
  static constexpr std::chrono::milliseconds slack{60};
  static constexpr int thread_iterations = 40;
  static constexpr std::chrono::milliseconds longest_hold{20};  // a few round trips

  std::string key_prefix = unique_key_prefix();

  Storage make_storage() const {
    airl::RedisOptions options;
    options.port = shared_redis().port();
    options.key_prefix = key_prefix;
    options.on_failure = airl::FailurePolicy::fail_closed;  // a Redis fault must fail the test
    options.command_timeout = 1000ms;
    options.connect_timeout = 1000ms;
    return Storage(options);
  }
  void advance(std::chrono::milliseconds by) { std::this_thread::sleep_for(by); }
  // Sleeps most of `by`, then asks until `done()` or a bounded time after `by` has passed.
  template <class Done>
  bool after(std::chrono::milliseconds by, Done&& done) {
    std::this_thread::sleep_for(by - std::min(by, slack));
    return eventually(done, 2 * slack + 2s);
  }
};

template <class Backend>
using LimiterOn = airl::ConcurrencyLimiter<typename Backend::Storage>;

// What 32 threads saw while taking and releasing permits in a loop.
struct Contention {
  std::uint64_t over_cap = 0;     // times a counter of held permits went above its cap (must stay 0)
  std::uint64_t odd_denials = 0;  // denials naming neither cap
  std::uint64_t most_by_a_user = 0, most_globally = 0;
  std::uint64_t acquired = 0, denied = 0;
};

// 32 threads over 4 users, each looping try_acquire / hold / release. A holder holds until `full` (this
// user's count, the global count) says a cap is full, for a bounded time, then a few more turns so other
// threads find it full. Counters of held permits go up after an acquisition and down before a release, so
// they never exceed what the store really holds.
template <class Backend, class Full>
Contention run_32_threads(LimiterOn<Backend>& limiter, std::uint64_t per_user, std::uint64_t global, Full full) {
  constexpr int threads = 32, users = 4;
  std::array<std::atomic<std::uint64_t>, users> held_by_user{}, most_by_user{};
  std::atomic<std::uint64_t> held_globally{0}, most_globally{0}, over_cap{0}, acquired{0}, denied{0}, odd{0};
  const auto raise_to = [](std::atomic<std::uint64_t>& most, std::uint64_t value) {
    std::uint64_t seen = most.load();
    while (value > seen && !most.compare_exchange_weak(seen, value)) {
    }
  };
  std::vector<std::thread> workers;
  for (int t = 0; t < threads; ++t) {
    workers.emplace_back([&, t] {
      const auto u = static_cast<std::size_t>(t % users);
      const std::string user = "user-" + std::to_string(u);
      for (int i = 0; i < Backend::thread_iterations; ++i) {
        Permit permit = limiter.try_acquire(user, "m");
        if (!permit) {
          ++denied;
          if (permit.reason() != "user" && permit.reason() != "global") ++odd;
          std::this_thread::yield();
          continue;
        }
        ++acquired;
        const std::uint64_t mine = ++held_by_user[u];
        const std::uint64_t all = ++held_globally;
        if (mine > per_user || all > global) ++over_cap;
        raise_to(most_by_user[u], mine);
        raise_to(most_globally, all);
        const auto until = std::chrono::steady_clock::now() + Backend::longest_hold;
        while (!full(held_by_user[u].load(), held_globally.load()) && std::chrono::steady_clock::now() < until) {
          std::this_thread::yield();
        }
        for (int turn = 0; turn < 20; ++turn) std::this_thread::yield();
        --held_by_user[u];
        --held_globally;
        permit.release();
      }
    });
  }
  for (std::thread& worker : workers) worker.join();
  Contention seen;
  seen.over_cap = over_cap;
  seen.odd_denials = odd;
  for (const auto& most : most_by_user) seen.most_by_a_user = std::max(seen.most_by_a_user, most.load());
  seen.most_globally = most_globally;
  seen.acquired = acquired;
  seen.denied = denied;
  CHECK(seen.acquired + seen.denied == static_cast<std::uint64_t>(threads * Backend::thread_iterations));
  for (std::size_t u = 0; u < users; ++u) CHECK(limiter.in_flight("user", "user-" + std::to_string(u), "m") == 0);
  CHECK(limiter.in_flight("global", "anyone", "m") == 0);
  const airl::ConcurrencyMetrics metrics = limiter.metrics();
  CHECK(metrics.acquired == seen.acquired);
  CHECK(metrics.denied == seen.denied);
  CHECK(metrics.held == 0);
  CHECK(metrics.release_errors == 0);
  return seen;
}

}  // namespace

// ---------------------------------------------------------------------------------------------------------------
// Both backends

TEMPLATE_TEST_CASE("never more permits in flight than a cap, and every cap is reached, under 32 threads",
                   "[concurrency]", InMemoryCaps, RedisCaps) {
  TestType backend;
  SECTION("the global cap binds (8 slots for 4 users of 3)") {
    LimiterOn<TestType> limiter({{"user", Scope::user, 3, 60s}, {"global", Scope::global, 8, 60s}},
                                backend.make_storage());
    const Contention seen = run_32_threads<TestType>(limiter, 3, 8, [](std::uint64_t, std::uint64_t all) {
      return all >= 8;
    });
    CHECK(seen.over_cap == 0);
    CHECK(seen.odd_denials == 0);
    CHECK(seen.most_globally == 8);
    CHECK(seen.most_by_a_user <= 3);
    CHECK(seen.denied > 0);
  }
  SECTION("the user caps bind (4 users of 3 under a global cap of 100)") {
    LimiterOn<TestType> limiter({{"user", Scope::user, 3, 60s}, {"global", Scope::global, 100, 60s}},
                                backend.make_storage());
    const Contention seen = run_32_threads<TestType>(limiter, 3, 100, [](std::uint64_t mine, std::uint64_t) {
      return mine >= 3;
    });
    CHECK(seen.over_cap == 0);
    CHECK(seen.odd_denials == 0);
    CHECK(seen.most_by_a_user == 3);
    CHECK(seen.most_globally <= 12);
    CHECK(seen.denied > 0);
  }
}

TEMPLATE_TEST_CASE("a permit is released when the code holding it throws", "[concurrency]", InMemoryCaps,
                   RedisCaps) {
  TestType backend;
  LimiterOn<TestType> limiter({{"user", Scope::user, 1, 60s}}, backend.make_storage());
  const auto failing_completion = [&] {
    const Permit permit = limiter.try_acquire("alice", "m");
    REQUIRE(permit);
    REQUIRE(limiter.in_flight("user", "alice", "m") == 1);
    throw std::runtime_error("the GPU worker failed mid-stream");
  };
  CHECK_THROWS_AS(failing_completion(), std::runtime_error);
  CHECK(limiter.in_flight("user", "alice", "m") == 0);
  CHECK(limiter.try_acquire("alice", "m"));
  CHECK(limiter.metrics().held == 0);
}

TEMPLATE_TEST_CASE("a holder that never releases stops counting when its lease runs out", "[concurrency]",
                   InMemoryCaps, RedisCaps) {
  TestType backend;
  LimiterOn<TestType> limiter({{"user", Scope::user, 1, 300ms}}, backend.make_storage());
  Permit crashed = limiter.try_acquire("alice", "m");
  REQUIRE(crashed);
  crashed.abandon();  // as if the holder died: nothing is released
  CHECK_FALSE(crashed);
  CHECK(limiter.metrics().held == 0);
  CHECK(limiter.in_flight("user", "alice", "m") == 1);

  const Permit refused = limiter.try_acquire("alice", "m");
  CHECK_FALSE(refused);
  CHECK(refused.reason() == "user");
  CHECK_THAT(refused.retry_after(), within_slack<TestType>(300ms));

  if constexpr (TestType::slack == 0ms) {  // exact time: the boundary itself
    backend.advance(299ms);
    const Permit still = limiter.try_acquire("alice", "m");
    CHECK_FALSE(still);
    CHECK(still.retry_after() == 1ms);
  }
  Permit next;
  CHECK(backend.after(300ms, [&] {
    next = limiter.try_acquire("alice", "m");
    return next.acquired();
  }));
  CHECK(limiter.in_flight("user", "alice", "m") == 1);  // only the new holder
}

TEMPLATE_TEST_CASE("caps are all or nothing: a permit denied by one cap holds nothing in the others",
                   "[concurrency]", InMemoryCaps, RedisCaps) {
  TestType backend;
  LimiterOn<TestType> limiter({{"user", Scope::user, 2, 60s}, {"global", Scope::global, 1, 60s}},
                              backend.make_storage());
  const Permit alice = limiter.try_acquire("alice", "m");
  REQUIRE(alice);

  const Permit bob = limiter.try_acquire("bob", "m");
  CHECK_FALSE(bob);
  CHECK(bob.reason() == "global");
  CHECK(bob.denied_by() == 1);
  CHECK_THAT(bob.retry_after(), within_slack<TestType>(60s));
  CHECK(limiter.in_flight("user", "bob", "m") == 0);  // the user cap had room, and took nothing

  const Permit alice_again = limiter.try_acquire("alice", "m");
  CHECK_FALSE(alice_again);
  CHECK(limiter.in_flight("user", "alice", "m") == 1);
  CHECK(limiter.in_flight("global", "alice", "m") == 1);

  // Two full caps: the first in declared order is the reason.
  LimiterOn<TestType> both({{"pair", Scope::user_model, 1, 60s}, {"everyone", Scope::global, 1, 60s}},
                           backend.make_storage());
  const Permit first = both.try_acquire("carol", "m");
  REQUIRE(first);
  const Permit second = both.try_acquire("carol", "m");
  CHECK(second.reason() == "pair");
  CHECK(second.denied_by() == 0);
  CHECK(both.in_flight("everyone", "carol", "m") == 1);
  CHECK(both.metrics().denied == 1);
}

TEMPLATE_TEST_CASE("renew() extends a lease for a long stream, but a lease already run out cannot be renewed",
                   "[concurrency]", InMemoryCaps, RedisCaps) {
  TestType backend;
  LimiterOn<TestType> limiter({{"user", Scope::user, 1, 400ms}, {"global", Scope::global, 10, 400ms}},
                              backend.make_storage());
  Permit stream = limiter.try_acquire("alice", "m");
  REQUIRE(stream);
  backend.advance(250ms);
  CHECK(stream.renew());
  backend.advance(250ms);  // past the first lease, within the renewed one
  CHECK(limiter.in_flight("user", "alice", "m") == 1);
  const Permit waiting = limiter.try_acquire("alice", "m");
  CHECK_FALSE(waiting);
  if constexpr (TestType::slack == 0ms) CHECK(waiting.retry_after() == 150ms);  // renewed at 250 ms, now 500 ms

  backend.advance(500ms);  // the renewed lease has run out too
  CHECK(limiter.in_flight("user", "alice", "m") == 0);
  CHECK_FALSE(stream.renew());
  CHECK_FALSE(stream.acquired());
  CHECK(limiter.in_flight("global", "alice", "m") == 0);
  CHECK_FALSE(stream.renew());  // still lost: nothing to renew

  const airl::ConcurrencyMetrics metrics = limiter.metrics();
  CHECK(metrics.renewed == 1);
  CHECK(metrics.leases_lost == 1);
  CHECK(metrics.held == 0);
  CHECK(limiter.try_acquire("alice", "m"));
}

TEMPLATE_TEST_CASE("a lease lost in one cap is dropped in all of them when renew() finds it", "[concurrency]",
                   InMemoryCaps, RedisCaps) {
  TestType backend;
  // The user cap's lease is short, the global one long: once the short one runs out the permit is lost.
  LimiterOn<TestType> limiter({{"user", Scope::user, 1, 200ms}, {"global", Scope::global, 1, 60s}},
                              backend.make_storage());
  Permit stream = limiter.try_acquire("alice", "m");
  REQUIRE(stream);
  backend.advance(400ms);
  CHECK(limiter.in_flight("global", "alice", "m") == 1);
  CHECK_FALSE(stream.renew());
  CHECK(limiter.in_flight("global", "alice", "m") == 0);
  CHECK(limiter.try_acquire("bob", "m"));
}

TEMPLATE_TEST_CASE("permits move, and a moved-from permit releases nothing", "[concurrency]", InMemoryCaps, RedisCaps) {
  TestType backend;
  LimiterOn<TestType> limiter({{"pair", Scope::user_model, 1, 60s}}, backend.make_storage());
  const auto in_flight = [&] { return limiter.in_flight("pair", "alice", "m"); };

  Permit a = limiter.try_acquire("alice", "m");
  REQUIRE(a);
  Permit b = std::move(a);
  CHECK_FALSE(a);  // NOLINT(bugprone-use-after-move): a moved-from permit is empty by contract
  CHECK(b);
  CHECK(b.id() != airl::PermitId{});
  a.release();     // nothing to release
  CHECK_FALSE(a.renew());
  CHECK(in_flight() == 1);
  CHECK_FALSE(limiter.try_acquire("alice", "m"));

  { const Permit c(std::move(b)); }  // c releases
  CHECK(in_flight() == 0);
  b.release();

  Permit d = limiter.try_acquire("alice", "m");
  REQUIRE(d);
  { Permit shell = std::move(a); }  // destroying empty permits leaves d's lease alone
  CHECK(in_flight() == 1);

  b = std::move(d);  // b now holds d's lease
  CHECK(in_flight() == 1);
  b = limiter.try_acquire("alice", "m");  // assigning releases b's lease first; the new one was denied
  CHECK_FALSE(b);
  CHECK(in_flight() == 0);

  Permit e = limiter.try_acquire("alice", "m");
  REQUIRE(e);
  e.release();
  e.release();  // idempotent
  CHECK_FALSE(e);
  CHECK(in_flight() == 0);
  const airl::ConcurrencyMetrics metrics = limiter.metrics();
  CHECK(metrics.held == 0);
  CHECK(metrics.acquired == 3);
  CHECK(metrics.release_errors == 0);
}

TEMPLATE_TEST_CASE("max_in_flight 0 denies everything, and waiting never helps", "[concurrency]", InMemoryCaps,
                   RedisCaps) {
  TestType backend;
  LimiterOn<TestType> limiter({{"user", Scope::user, 5, 60s}, {"closed", Scope::model, 0, 60s}},
                              backend.make_storage());
  const Permit denied = limiter.try_acquire("alice", "m");
  CHECK_FALSE(denied);
  CHECK(denied.reason() == "closed");
  CHECK(denied.retry_after() == airl::Decision::never);
  CHECK(limiter.in_flight("user", "alice", "m") == 0);
  CHECK(limiter.metrics().denied == 1);
}

TEMPLATE_TEST_CASE("each scope counts its own permits: user, model, user+model, global", "[concurrency]",
                   InMemoryCaps, RedisCaps) {
  TestType backend;
  LimiterOn<TestType> pairs({{"pair", Scope::user_model, 1, 60s}, {"model", Scope::model, 2, 60s}},
                            backend.make_storage());
  const Permit a1 = pairs.try_acquire("alice", "m1");
  CHECK(a1);
  CHECK(pairs.try_acquire("alice", "m1").reason() == "pair");
  const Permit a2 = pairs.try_acquire("alice", "m2");
  CHECK(a2);
  const Permit b1 = pairs.try_acquire("bob", "m1");
  CHECK(b1);
  CHECK(pairs.try_acquire("carol", "m1").reason() == "model");
  const Permit c2 = pairs.try_acquire("carol", "m2");
  CHECK(c2);
  CHECK(pairs.in_flight("model", "anyone", "m1") == 2);
  CHECK(pairs.in_flight("pair", "alice", "m2") == 1);

  LimiterOn<TestType> users({{"user", Scope::user, 1, 60s}, {"all", Scope::global, 3, 60s}}, backend.make_storage());
  const Permit u1 = users.try_acquire("alice", "m1");
  CHECK(u1);
  CHECK(users.try_acquire("alice", "m2").reason() == "user");
  const Permit u2 = users.try_acquire("bob", "m1");
  CHECK(u2);
  const Permit u3 = users.try_acquire("a:b}{", "m1");  // ids are data: separators and braces included
  CHECK(u3);
  CHECK(users.try_acquire("dave", "m1").reason() == "all");
  CHECK(users.in_flight("all", "x", "y") == 3);
  CHECK(users.in_flight("user", "a:b}{", "zzz") == 1);
}

TEMPLATE_TEST_CASE("a permit still releases after its limiter was moved", "[concurrency]", InMemoryCaps,
                   RedisCaps) {
  TestType backend;
  LimiterOn<TestType> first({{"user", Scope::user, 1, 60s}}, backend.make_storage());
  Permit permit = first.try_acquire("alice", "m");
  REQUIRE(permit);
  LimiterOn<TestType> second = std::move(first);
  CHECK_THROWS_AS(first.try_acquire("alice", "m"), std::logic_error);  // NOLINT(bugprone-use-after-move)
  CHECK(second.in_flight("user", "alice", "m") == 1);
  permit.release();
  CHECK(second.in_flight("user", "alice", "m") == 0);
  CHECK(second.metrics().held == 0);
}

// ---------------------------------------------------------------------------------------------------------------
// Refusals

TEST_CASE("invalid caps, ids and storage calls are refused with std::invalid_argument", "[concurrency][validation]") {
  const auto make = [](std::vector<ConcurrencyCap> caps) {
    return airl::ConcurrencyLimiter<ManualConcurrencyStorage>(std::move(caps), ManualConcurrencyStorage());
  };
  const std::string too_long(airl::max_id_length + 1, 'x');
  CHECK_THROWS_AS(make({}), std::invalid_argument);
  CHECK_THROWS_AS(make({{"", Scope::user, 1, 1s}}), std::invalid_argument);
  CHECK_THROWS_AS(make({{too_long, Scope::user, 1, 1s}}), std::invalid_argument);
  CHECK_THROWS_AS(make({{"a", Scope::user, 1, 1s}, {"a", Scope::global, 1, 1s}}), std::invalid_argument);
  CHECK_THROWS_AS(make({{std::string(airl::key_capacity_reason), Scope::user, 1, 1s}}), std::invalid_argument);
  CHECK_THROWS_AS(make({{std::string(airl::backend_unavailable_reason), Scope::user, 1, 1s}}), std::invalid_argument);
  CHECK_THROWS_AS(make({{"a", Scope::user, 1, 0ms}}), std::invalid_argument);
  CHECK_THROWS_AS(make({{"a", Scope::user, 1, -1ms}}), std::invalid_argument);
  CHECK_THROWS_AS(make({{"a", Scope::user, 1, airl::max_window + 1ms}}), std::invalid_argument);
  CHECK_THROWS_AS(make({{"a", static_cast<Scope>(9), 1, 1s}}), std::invalid_argument);
  CHECK_NOTHROW(make({{"a", Scope::user, 0, airl::max_window}}));

  auto limiter = make({{"a", Scope::user, 1, 1s}});
  CHECK_THROWS_AS(limiter.try_acquire("", "m"), std::invalid_argument);
  CHECK_THROWS_AS(limiter.try_acquire("u", ""), std::invalid_argument);
  CHECK_THROWS_AS(limiter.try_acquire(too_long, "m"), std::invalid_argument);
  CHECK_THROWS_AS(limiter.try_acquire("u", too_long), std::invalid_argument);
  CHECK_THROWS_AS(limiter.in_flight("nope", "u", "m"), std::invalid_argument);
  CHECK_THROWS_AS(limiter.in_flight("a", "", "m"), std::invalid_argument);
  CHECK(limiter.metrics().acquired == 0);

  CHECK_THROWS_AS(ManualConcurrencyStorage({.shards = 3}), std::invalid_argument);
  CHECK_THROWS_AS(ManualConcurrencyStorage({.shards = 0}), std::invalid_argument);
  ManualConcurrencyStorage storage;
  const airl::PermitId id{1, 2};
  CHECK_THROWS_AS(storage.try_acquire({}, id), std::invalid_argument);
  const airl::ConcurrencySlot no_lease{{Scope::user, "a", "u", "m"}, 1, 0ms};
  CHECK_THROWS_AS(storage.try_acquire(std::span(&no_lease, 1), id), std::invalid_argument);
  const airl::ConcurrencySlot same[] = {{{Scope::user, "a", "u", "m"}, 1, 1s},
                                        {{Scope::user, "a", "u", "other"}, 1, 1s}};
  CHECK_THROWS_AS(storage.try_acquire(same, id), std::invalid_argument);  // one scope twice
  CHECK(storage.active_keys() == 0);

  airl::RedisOptions empty_prefix;
  empty_prefix.key_prefix = "";
  CHECK_THROWS_AS(airl::RedisConcurrencyStorage(empty_prefix), std::invalid_argument);
  airl::RedisConcurrencyStorage redis;  // connects lazily: nothing is sent for a refused call
  const airl::ConcurrencySlot huge{{Scope::global, "a", {}, {}}, (std::uint64_t{1} << 53) + 1, 1s};
  CHECK_THROWS_AS(redis.try_acquire(std::span(&huge, 1), id), std::invalid_argument);
}

// ---------------------------------------------------------------------------------------------------------------
// In memory only

TEST_CASE("in memory: a scope is erased with its last lease, and purge_expired() drops abandoned ones",
          "[concurrency][in_memory]") {
  airl::ManualClock clock;
  airl::ConcurrencyLimiter<ManualConcurrencyStorage> limiter(
      {{"user", Scope::user, 2, 1s}, {"global", Scope::global, 10, 1s}}, ManualConcurrencyStorage({}, clock));
  const auto keys = [&] { return limiter.storage().active_keys(); };
  {
    const Permit a = limiter.try_acquire("alice", "m");
    const Permit b = limiter.try_acquire("bob", "m");
    const Permit c = limiter.try_acquire("carol", "m");
    CHECK(keys() == 4);  // three users and the global scope
  }
  CHECK(keys() == 0);

  const Permit refused = [&] {
    Permit one = limiter.try_acquire("dave", "m"), two = limiter.try_acquire("dave", "m");
    Permit three = limiter.try_acquire("dave", "m");
    return three;
  }();
  CHECK_FALSE(refused);
  CHECK(keys() == 0);  // a denial creates nothing

  Permit lost = limiter.try_acquire("erin", "m");
  lost.abandon();
  CHECK(keys() == 2);
  CHECK(limiter.purge_expired() == 0);  // still live
  clock.advance(1s);
  CHECK(keys() == 2);  // nobody touched them yet
  CHECK(limiter.purge_expired() == 2);
  CHECK(keys() == 0);

  Permit touched = limiter.try_acquire("frank", "m");
  touched.abandon();
  clock.advance(1s);
  CHECK(limiter.in_flight("user", "frank", "m") == 0);  // touching drops the run-out lease and its scope
  CHECK(keys() == 1);                                   // the global scope waits for its next touch
}

TEST_CASE("in memory: retry_after is when the earliest live lease of the full scope runs out",
          "[concurrency][in_memory]") {
  airl::ManualClock clock;
  airl::ConcurrencyLimiter<ManualConcurrencyStorage> limiter({{"user", Scope::user, 2, 1000ms}},
                                                             ManualConcurrencyStorage({}, clock));
  Permit first = limiter.try_acquire("alice", "m");
  clock.advance(100ms);
  Permit second = limiter.try_acquire("alice", "m");
  clock.advance(100ms);
  CHECK(limiter.try_acquire("alice", "m").retry_after() == 800ms);  // first's lease: 1000 - 200
  first.release();
  Permit third = limiter.try_acquire("alice", "m");
  REQUIRE(third);
  CHECK(limiter.try_acquire("alice", "m").retry_after() == 900ms);  // now second's: 1100 - 200
  clock.advance(300ms);
  CHECK(second.renew());  // second now runs to 1500
  CHECK(limiter.try_acquire("alice", "m").retry_after() == 700ms);  // third's: 1200 - 500
  clock.advance(250'000ns);
  CHECK(limiter.try_acquire("alice", "m").retry_after() == 700ms);  // rounded up to whole milliseconds
}

TEST_CASE("permit ids are unique within a limiter and across limiters", "[concurrency]") {
  const std::vector<ConcurrencyCap> caps = {{"all", Scope::global, 1000, 1s}};
  airl::ConcurrencyLimiter<ManualConcurrencyStorage> one(caps, ManualConcurrencyStorage());
  airl::ConcurrencyLimiter<ManualConcurrencyStorage> two(caps, ManualConcurrencyStorage());
  std::vector<Permit> held;
  std::set<std::string> ids;
  for (int i = 0; i < 500; ++i) {
    for (auto* limiter : {&one, &two}) {
      held.push_back(limiter->try_acquire("u", "m"));
      REQUIRE(held.back());
      const auto hex = held.back().id().hex();
      ids.emplace(hex.data(), hex.size());
    }
  }
  CHECK(ids.size() == 1000);
  CHECK(one.in_flight("all", "u", "m") == 500);
}

TEST_CASE("the default storage and class template argument deduction", "[concurrency]") {
  airl::ConcurrencyLimiter limiter({{"user", Scope::user, 1, 60s}});  // InMemoryConcurrencyStorage<SteadyClock>
  static_assert(std::is_same_v<decltype(limiter), airl::ConcurrencyLimiter<airl::InMemoryConcurrencyStorage<>>>);
  const Permit permit = limiter.try_acquire("alice", "m");
  CHECK(permit);
  CHECK_FALSE(permit.degraded());
  CHECK(permit.reason().empty());
  CHECK(permit.retry_after() == 0ms);
  CHECK_FALSE(limiter.try_acquire("alice", "m"));
}

// ---------------------------------------------------------------------------------------------------------------
// Redis only

namespace {

airl::RedisOptions concurrency_options(int port, airl::FailurePolicy policy, std::string prefix = unique_key_prefix()) {
  airl::RedisOptions options;
  options.port = port;
  options.key_prefix = std::move(prefix);
  options.on_failure = policy;
  options.connect_timeout = 50ms;
  options.command_timeout = 50ms;
  options.pool_size = 2;
  return options;
}

}  // namespace

TEST_CASE("redis: each scope is a sorted set of permit ids scored by lease deadline, gone with its last permit",
          "[concurrency][redis]") {
  const RedisServer& server = shared_redis();
  const std::string prefix = unique_key_prefix();
  airl::RedisOptions options = concurrency_options(server.port(), airl::FailurePolicy::fail_closed, prefix);
  options.command_timeout = options.connect_timeout = 1000ms;
  airl::RedisConcurrencyLimiter limiter({{"pair", Scope::user_model, 2, 5s},
                                         {"user", Scope::user, 2, 5s},
                                         {"model", Scope::model, 2, 5s},
                                         {"all", Scope::global, 2, 5s}},
                                        airl::RedisConcurrencyStorage(options));
  Permit permit = limiter.try_acquire("a:b}", "llama 3");
  REQUIRE(permit);
  const std::set<std::string> expected = {prefix + ":{u=a%3Ab%7D}:cc:um:pair:llama%203",
                                          prefix + ":{u=a%3Ab%7D}:cc:u:user", prefix + ":{m=llama%203}:cc:m:model",
                                          prefix + ":{g}:cc:g:all"};
  const std::vector<std::string> found = server.keys_with_prefix(prefix);
  CHECK(std::set<std::string>(found.begin(), found.end()) == expected);

  const auto hex = permit.id().hex();
  const std::string member(hex.data(), hex.size());
  const RawReply time = must(server, {"TIME"});
  const double now_us = std::stod(text_of(*time->element[0])) * 1e6 + std::stod(text_of(*time->element[1]));
  for (const std::string& key : expected) {
    CHECK(text_of(*must(server, {"TYPE", key})) == "zset");
    const RawReply score = must(server, {"ZSCORE", key, member});
    REQUIRE(score->type == REDIS_REPLY_STRING);
    const double deadline_us = std::stod(text_of(*score));
    CHECK(deadline_us > now_us + 4e6);  // about 5 s ahead on Redis's clock
    CHECK(deadline_us <= now_us + 5e6);
    const long long ttl = pttl(server, key);
    CHECK(ttl > 4000);
    CHECK(ttl <= 5000);
  }
  permit.release();
  CHECK(server.keys_with_prefix(prefix).empty());
}

TEST_CASE("redis: the script is reloaded transparently after SCRIPT FLUSH", "[concurrency][redis]") {
  RedisCaps backend;
  airl::RedisConcurrencyLimiter limiter({{"user", Scope::user, 1, 60s}}, backend.make_storage());
  Permit before = limiter.try_acquire("alice", "m");
  REQUIRE(before);
  must(shared_redis(), {"SCRIPT", "FLUSH"});
  CHECK(limiter.in_flight("user", "alice", "m") == 1);
  before.release();
  must(shared_redis(), {"SCRIPT", "FLUSH"});
  CHECK(limiter.try_acquire("alice", "m"));
  CHECK(limiter.metrics().backend_errors == 0);
}

TEST_CASE("redis: a process that dies holding a permit stops counting when its lease runs out",
          "[concurrency][redis]") {
  const int port = shared_redis().port();  // started before the fork: the child only talks to it
  const std::string prefix = unique_key_prefix();
  const std::vector<ConcurrencyCap> caps = {{"user", Scope::user, 1, 400ms}};
  int ready[2];
  REQUIRE(::pipe(ready) == 0);
  const pid_t child = ::fork();
  REQUIRE(child >= 0);
  if (child == 0) {  // the replica that crashes: acquires, says so, and dies without releasing anything
    ::close(ready[0]);
    char acquired = '0';
    try {
      airl::RedisOptions options = concurrency_options(port, airl::FailurePolicy::fail_closed, prefix);
      options.command_timeout = options.connect_timeout = 1000ms;
      airl::RedisConcurrencyLimiter replica(caps, airl::RedisConcurrencyStorage(options));
      const Permit permit = replica.try_acquire("alice", "m");
      if (permit) acquired = '1';
      [[maybe_unused]] const auto written = ::write(ready[1], &acquired, 1);
      ::_exit(0);  // holding the permit: no destructor runs, nothing is released
    } catch (...) {
    }
    [[maybe_unused]] const auto written = ::write(ready[1], &acquired, 1);
    ::_exit(1);
  }
  ::close(ready[1]);
  pollfd wait_for_child{ready[0], POLLIN, 0};
  char acquired = '0';
  if (::poll(&wait_for_child, 1, 10'000) == 1) {
    [[maybe_unused]] const auto got = ::read(ready[0], &acquired, 1);
  }
  ::close(ready[0]);
  int status = 0;
  ::waitpid(child, &status, 0);
  REQUIRE(acquired == '1');

  airl::RedisOptions options = concurrency_options(port, airl::FailurePolicy::fail_closed, prefix);
  options.command_timeout = options.connect_timeout = 1000ms;
  airl::RedisConcurrencyLimiter survivor(caps, airl::RedisConcurrencyStorage(options));
  CHECK(survivor.in_flight("user", "alice", "m") == 1);
  CHECK_FALSE(survivor.try_acquire("alice", "m"));
  Permit taken;
  CHECK(eventually(
      [&] {
        taken = survivor.try_acquire("alice", "m");
        return taken.acquired();
      },
      3s));
}

TEST_CASE("redis unreachable: fail_closed throws BackendError, fail_open grants a degraded permit, local caps "
          "in process",
          "[concurrency][redis][faults]") {
  const int closed_port = free_loopback_port();  // nothing listens there
  const std::vector<ConcurrencyCap> caps = {{"user", Scope::user, 1, 60s}};

  airl::RedisConcurrencyLimiter closed(
      caps, airl::RedisConcurrencyStorage(concurrency_options(closed_port, airl::FailurePolicy::fail_closed)));
  CHECK_THROWS_AS(closed.try_acquire("alice", "m"), airl::BackendError);
  CHECK_THROWS_AS(closed.in_flight("user", "alice", "m"), airl::BackendError);
  CHECK(closed.metrics().backend_errors == 2);
  CHECK(closed.metrics().acquired == 0);
  CHECK(closed.metrics().held == 0);

  airl::RedisConcurrencyLimiter open(
      caps, airl::RedisConcurrencyStorage(concurrency_options(closed_port, airl::FailurePolicy::fail_open)));
  Permit first = open.try_acquire("alice", "m");
  Permit second = open.try_acquire("alice", "m");  // nothing is known: availability first
  CHECK(first);
  CHECK(second);
  CHECK(first.degraded());
  CHECK(first.renew());  // it holds no lease to lose
  first.release();
  CHECK_FALSE(first);
  airl::ConcurrencyMetrics metrics = open.metrics();
  CHECK(metrics.acquired == 2);
  CHECK(metrics.degraded == 2);
  CHECK(metrics.backend_errors == 2);
  CHECK(metrics.release_errors == 0);  // nothing was sent to release

  airl::RedisConcurrencyLimiter local(
      caps, airl::RedisConcurrencyStorage(concurrency_options(closed_port, airl::FailurePolicy::local)));
  Permit mine = local.try_acquire("alice", "m");
  CHECK(mine);
  CHECK(mine.degraded());
  const Permit refused = local.try_acquire("alice", "m");
  CHECK_FALSE(refused);
  CHECK(refused.reason() == "user");
  CHECK(local.storage().active_keys() == 1);
  CHECK(mine.renew());
  mine.release();
  CHECK(local.storage().active_keys() == 0);
  CHECK(local.try_acquire("alice", "m"));
}

TEST_CASE("redis: a release that fails is swallowed and counted, and the lease runs out on its own",
          "[concurrency][redis][faults]") {
  RedisServer server;
  airl::RedisConcurrencyLimiter limiter(
      {{"user", Scope::user, 1, 60s}},
      airl::RedisConcurrencyStorage(concurrency_options(server.port(), airl::FailurePolicy::fail_closed)));
  Permit permit = limiter.try_acquire("alice", "m");
  REQUIRE(permit);
  server.kill();
  CHECK_NOTHROW(permit.release());
  CHECK_FALSE(permit);
  const airl::ConcurrencyMetrics metrics = limiter.metrics();
  CHECK(metrics.release_errors == 1);
  CHECK(metrics.backend_errors == 1);
  CHECK(metrics.held == 0);
  Permit streaming = [&] {
    server.start();  // an empty server again (no persistence)
    return limiter.try_acquire("alice", "m");
  }();
  REQUIRE(streaming);
  server.kill();
  CHECK_THROWS_AS(streaming.renew(), airl::BackendError);  // fail_closed: the fault is the caller's
  CHECK(streaming.acquired());                             // state unknown: still tries to release
}
