// SPDX-License-Identifier: MIT
// Concurrency caps (ConcurrencyLimiter, Permit, both concurrency storages). The behavioural cases run on every
// backend of caps_support.hpp: in memory on a ManualClock (exact, no sleeps) and, when the Redis backend is
// built, on a real redis-server (Redis's clock, bounded waits). Then the cases only the in-memory backend has:
// memory bounds, exact retry hints and clock limits, id clashes, fork. The Redis-only cases (keys, the
// script's refusals, forked processes, a paused or unreachable server) are in
// tests/redis/redis_concurrency_caps_test.cpp. Every wait is bounded: forked children are reaped with a
// deadline and killed past it.
#include <catch2/catch.hpp>

#include "caps_support.hpp"
#include "child_process.hpp"
#include "support.hpp"

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <limits>
#include <memory>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#include <unistd.h>

using namespace std::chrono_literals;
using namespace airl::test;
using airl::ConcurrencyCap;
using airl::Permit;
using airl::Scope;

namespace {

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
// Every backend (caps_support.hpp)

TEMPLATE_LIST_TEST_CASE("never more permits in flight than a cap, and every cap is reached, under 32 threads",
                        "[concurrency]", airl::test::CapsBackends) {
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

TEMPLATE_LIST_TEST_CASE("a permit is released when the code holding it throws",
                        "[concurrency]", airl::test::CapsBackends) {
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

TEMPLATE_LIST_TEST_CASE("a holder that never releases stops counting when its lease runs out",
                        "[concurrency]", airl::test::CapsBackends) {
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

TEMPLATE_LIST_TEST_CASE("caps are all or nothing: a permit denied by one cap holds nothing in the others",
                        "[concurrency]", airl::test::CapsBackends) {
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

TEMPLATE_LIST_TEST_CASE("renew() extends a lease for a long stream, but a lease already run out cannot be renewed",
                        "[concurrency]", airl::test::CapsBackends) {
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

TEMPLATE_LIST_TEST_CASE("a lease lost in one cap is dropped in all of them when renew() finds it",
                        "[concurrency]", airl::test::CapsBackends) {
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

TEMPLATE_LIST_TEST_CASE("permits move, and a moved-from permit releases nothing",
                        "[concurrency]", airl::test::CapsBackends) {
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

TEMPLATE_LIST_TEST_CASE("max_in_flight 0 denies everything, and waiting never helps",
                        "[concurrency]", airl::test::CapsBackends) {
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

TEMPLATE_LIST_TEST_CASE("each scope counts its own permits: user, model, user+model, global",
                        "[concurrency]", airl::test::CapsBackends) {
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

TEMPLATE_LIST_TEST_CASE("a permit still releases after its limiter was moved",
                        "[concurrency]", airl::test::CapsBackends) {
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

TEMPLATE_LIST_TEST_CASE("a late release never frees the slot someone else took after the lease ran out",
                        "[concurrency]", airl::test::CapsBackends) {
  TestType backend;
  LimiterOn<TestType> limiter({{"user", Scope::user, 1, 300ms}}, backend.make_storage());
  Permit late = limiter.try_acquire("alice", "m");
  REQUIRE(late);
  Permit next;
  REQUIRE(backend.after(300ms, [&] {  // late's lease runs out while it still thinks it holds it
    next = limiter.try_acquire("alice", "m");
    return next.acquired();
  }));
  CHECK(late.id() != next.id());
  late.release();  // its lease is gone: this must not free next's
  CHECK(limiter.in_flight("user", "alice", "m") == 1);
  CHECK_FALSE(limiter.try_acquire("alice", "m"));
  CHECK(next.renew());
  CHECK(limiter.metrics().held == 1);
}

TEMPLATE_LIST_TEST_CASE("renew() on a heartbeat thread may race release() on the request thread",
                        "[concurrency][threads]", airl::test::CapsBackends) {
  TestType backend;
  LimiterOn<TestType> limiter({{"user", Scope::user, 1, 60s}}, backend.make_storage());
  const int rounds = TestType::thread_iterations;
  std::atomic<std::uint64_t> renewed{0};
  for (int round = 0; round < rounds; ++round) {
    Permit permit = limiter.try_acquire("alice", "m");
    REQUIRE(permit);
    std::atomic<bool> started{false}, done{false};
    std::thread heartbeat([&] {
      while (!done.load()) {
        if (permit.renew()) ++renewed;
        started = true;
      }
    });
    while (!started.load()) std::this_thread::yield();
    for (int turn = 0; turn < round % 8; ++turn) std::this_thread::yield();
    permit.release();  // the stream ended while the heartbeat still runs
    CHECK_FALSE(permit.acquired());
    done = true;
    heartbeat.join();
    CHECK_FALSE(permit.renew());
  }
  const airl::ConcurrencyMetrics metrics = limiter.metrics();
  CHECK(metrics.held == 0);         // released exactly once per permit: never below zero
  CHECK(metrics.leases_lost == 0);  // a renew after the release finds the permit ended, not a lost lease
  CHECK(metrics.renewed == renewed.load());
  CHECK(metrics.release_errors == 0);
  CHECK(limiter.in_flight("user", "alice", "m") == 0);
  CHECK(limiter.try_acquire("alice", "m"));
}

TEMPLATE_LIST_TEST_CASE("a permit destroyed after its thread's thread_locals are gone still releases safely",
                        "[concurrency][lifecycle]", airl::test::CapsBackends) {
  // A permit kept in a static or thread_local object outlives the thread-local buffers a storage might use
  // (at exit, thread_locals die before statics). Here a thread_local permit declared before the first
  // acquisition is destroyed after anything try_acquire() put in thread-local storage: under ASan a release
  // that used such a buffer is a heap-use-after-free. It runs in a forked child so such a crash fails this
  // test only; the limiter is built before the fork and first used in the child.
  TestType backend;
  LimiterOn<TestType> limiter({{"user", Scope::user, 1, 60s}, {"all", Scope::global, 10, 60s}},
                              backend.make_storage());
  const pid_t child = ::fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    int code = 1;
    try {
      std::atomic<bool> held{false};
      std::thread holder([&] {
        thread_local std::optional<Permit> kept;  // constructed first, so destroyed last
        kept.emplace(limiter.try_acquire("alice", "m"));
        held = kept->acquired();
      });
      holder.join();  // the thread's exit destroyed `kept`, releasing it
      code = held.load() && limiter.in_flight("user", "alice", "m") == 0 ? 0 : 2;
    } catch (...) {
      code = 3;
    }
    ::_exit(code);
  }
  const std::optional<int> status = reap_within(child);
  CHECK(exited_cleanly(status));
#if AIRL_TEST_WITH_REDIS
  if constexpr (std::is_same_v<TestType, RedisCaps>) {
    CHECK(limiter.in_flight("user", "alice", "m") == 0);  // the child's release reached the shared store
  }
#endif
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

#if AIRL_TEST_WITH_REDIS  // the Redis storage's refusals, where it is built
  airl::RedisOptions empty_prefix;
  empty_prefix.key_prefix = "";
  CHECK_THROWS_AS(airl::RedisConcurrencyStorage(empty_prefix), std::invalid_argument);
  airl::RedisConcurrencyStorage redis;  // connects lazily: nothing is sent for a refused call
  const airl::ConcurrencySlot huge{{Scope::global, "a", {}, {}}, (std::uint64_t{1} << 53) + 1, 1s};
  CHECK_THROWS_AS(redis.try_acquire(std::span(&huge, 1), id), std::invalid_argument);
  // A cap the script cannot count exactly fails at construction, not at every try_acquire().
  CHECK_THROWS_AS(airl::RedisConcurrencyLimiter({{"huge", Scope::global, (std::uint64_t{1} << 53) + 1, 1s}},
                                                airl::RedisConcurrencyStorage()),
                  std::invalid_argument);
  CHECK_THROWS_AS(airl::RedisConcurrencyLimiter({{"unlimited", Scope::global, std::numeric_limits<std::uint64_t>::max(), 1s}},
                                                airl::RedisConcurrencyStorage()),
                  std::invalid_argument);
  CHECK_NOTHROW(airl::RedisConcurrencyLimiter({{"top", Scope::global, std::uint64_t{1} << 53, 1s}},
                                              airl::RedisConcurrencyStorage()));
#endif
  // In memory any count is exact.
  CHECK_NOTHROW(make({{"unlimited", Scope::global, std::numeric_limits<std::uint64_t>::max(), 1s}}));
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

TEST_CASE("in memory: renewing with a lease no entry of the shard has used yet is safe", "[concurrency][in_memory]") {
  // One shard, so both scopes share its expiry lists: the renew's 20 s lease has no list there yet.
  airl::ManualClock clock;
  ManualConcurrencyStorage storage({.shards = 1}, clock);
  const airl::BucketRef scope{Scope::user, "user", "alice", "m"};
  const airl::ConcurrencySlot ten[] = {{scope, 2, 10s}};
  const airl::ConcurrencySlot twenty[] = {{scope, 2, 20s}};
  const airl::PermitId id{1, 2};
  REQUIRE(storage.try_acquire(ten, id).acquired);
  CHECK(storage.renew(twenty, id) == airl::RenewStatus::renewed);
  clock.advance(15s);  // beyond the first lease, within the renewed one
  CHECK(storage.in_flight(ten[0]) == 1);
  CHECK(storage.purge_expired() == 0);
  clock.advance(5s);
  CHECK(storage.purge_expired() == 1);
  CHECK(storage.active_keys() == 0);
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

TEST_CASE("in memory: leases near the end of the clock's range saturate instead of overflowing",
          "[concurrency][in_memory]") {
  // 1 s before the largest time a ManualClock can show: now + a 60 s lease does not fit in 64 bits.
  airl::ManualClock clock(std::chrono::nanoseconds{std::numeric_limits<std::int64_t>::max() - 1'000'000'000});
  airl::ConcurrencyLimiter<ManualConcurrencyStorage> limiter({{"user", Scope::user, 1, 60s}},
                                                             ManualConcurrencyStorage({}, clock));
  Permit first = limiter.try_acquire("alice", "m");
  REQUIRE(first);
  const Permit second = limiter.try_acquire("alice", "m");
  CHECK_FALSE(second);  // an overflowed deadline would lie in the past: the first lease would not count
  CHECK(second.retry_after() == 1000ms);  // the deadline saturated at the end of time, 1 s away
  CHECK(limiter.in_flight("user", "alice", "m") == 1);
  clock.advance(999ms);
  CHECK(first.renew());
  CHECK(limiter.in_flight("user", "alice", "m") == 1);
  first.release();
  CHECK(limiter.try_acquire("alice", "m"));
}

namespace {

// A storage that answers PermitIdInUse for its first `clashes` ids, as if another process held them, and
// records them; otherwise the in-memory storage.
struct ClashingStorage {
  ManualConcurrencyStorage inner;
  std::shared_ptr<std::vector<airl::PermitId>> refused = std::make_shared<std::vector<airl::PermitId>>();
  std::size_t clashes = 0;

  airl::ConcurrencyResult try_acquire(std::span<const airl::ConcurrencySlot> slots, const airl::PermitId& id) {
    if (refused->size() < clashes) {
      refused->push_back(id);
      throw airl::PermitIdInUse("airl test: id already held");
    }
    return inner.try_acquire(slots, id);
  }
  void release(std::span<const airl::ConcurrencySlot> slots, const airl::PermitId& id, airl::LeaseLocation where) {
    inner.release(slots, id, where);
  }
  airl::RenewStatus renew(std::span<const airl::ConcurrencySlot> slots, const airl::PermitId& id,
                          airl::LeaseLocation where) {
    return inner.renew(slots, id, where);
  }
  std::uint64_t in_flight(const airl::ConcurrencySlot& slot) { return inner.in_flight(slot); }
  std::size_t purge_expired() { return inner.purge_expired(); }
  std::size_t active_keys() const noexcept { return inner.active_keys(); }
};
static_assert(airl::ConcurrencyStoragePolicy<ClashingStorage>);

}  // namespace

namespace {

// The in-memory storage with a renew that takes as long as a Redis round trip, counting store renews.
struct SlowRenewStorage {
  ManualConcurrencyStorage inner;
  std::shared_ptr<std::atomic<int>> renews = std::make_shared<std::atomic<int>>(0);

  airl::ConcurrencyResult try_acquire(std::span<const airl::ConcurrencySlot> slots, const airl::PermitId& id) {
    return inner.try_acquire(slots, id);
  }
  void release(std::span<const airl::ConcurrencySlot> slots, const airl::PermitId& id, airl::LeaseLocation where) {
    inner.release(slots, id, where);
  }
  airl::RenewStatus renew(std::span<const airl::ConcurrencySlot> slots, const airl::PermitId& id,
                          airl::LeaseLocation where) {
    ++*renews;
    std::this_thread::sleep_for(200us);
    return inner.renew(slots, id, where);
  }
  std::uint64_t in_flight(const airl::ConcurrencySlot& slot) { return inner.in_flight(slot); }
  std::size_t purge_expired() { return inner.purge_expired(); }
  std::size_t active_keys() const noexcept { return inner.active_keys(); }
};
static_assert(airl::ConcurrencyStoragePolicy<SlowRenewStorage>);

}  // namespace

TEST_CASE("a heartbeat renewing in a tight loop cannot starve release(): it waits for one renew, not the loop",
          "[concurrency][threads]") {
  // The permit's lock is held across the store call and is not fair: the renewing thread unlocks and locks
  // again before a woken releaser runs. This hung CI for 120 s on Redis; here the renew is slowed instead.
  SlowRenewStorage slow;
  const auto renews = slow.renews;
  airl::ConcurrencyLimiter<SlowRenewStorage> limiter({{"user", Scope::user, 1, 60s}}, std::move(slow));
  for (int round = 0; round < 20; ++round) {
    Permit permit = limiter.try_acquire("alice", "m");
    REQUIRE(permit);
    std::atomic<bool> released{false};
    std::atomic<int> renews_at_release{0};
    std::atomic<int> loops{0};
    std::thread heartbeat([&] {
      // Bounded, so the test fails rather than hangs when release() starves: 2000 renews of 200 µs.
      for (int loop = 0; loop < 2000 && !released.load(); ++loop) {
        permit.renew();
        ++loops;
      }
    });
    while (loops.load() < 2) std::this_thread::yield();
    renews_at_release = renews->load();
    permit.release();
    const int renews_during_release = renews->load() - renews_at_release.load();
    released = true;
    heartbeat.join();
    // At most one renew in progress, plus those of a main thread descheduled between its read and the
    // release (a busy CI machine): far below the starved release's ~2000.
    CHECK(renews_during_release <= 500);
    CHECK_FALSE(permit.acquired());
    CHECK(limiter.in_flight("user", "alice", "m") == 0);
  }
  CHECK(limiter.metrics().held == 0);
}

TEST_CASE("an id the store already holds is retried with a freshly drawn base, at most three times",
          "[concurrency]") {
  ClashingStorage clashing;
  clashing.clashes = 2;
  const auto refused = clashing.refused;
  airl::ConcurrencyLimiter<ClashingStorage> limiter({{"user", Scope::user, 1, 60s}}, std::move(clashing));
  Permit permit = limiter.try_acquire("alice", "m");
  REQUIRE(permit);
  REQUIRE(refused->size() == 2);
  CHECK(permit.id() != (*refused)[0]);
  CHECK(permit.id() != (*refused)[1]);
  CHECK((*refused)[0].high != (*refused)[1].high);  // a new base, not just the next counter value
  CHECK(limiter.in_flight("user", "alice", "m") == 1);
  CHECK(limiter.metrics().acquired == 1);

  ClashingStorage always;
  always.clashes = 3;
  airl::ConcurrencyLimiter<ClashingStorage> unlucky({{"user", Scope::user, 1, 60s}}, std::move(always));
  CHECK_THROWS_AS(unlucky.try_acquire("alice", "m"), airl::PermitIdInUse);
  CHECK(unlucky.in_flight("user", "alice", "m") == 0);
  CHECK(unlucky.metrics().acquired == 0);
  CHECK(unlucky.metrics().held == 0);
}

TEST_CASE("a limiter built before fork() draws other permit ids in the child", "[concurrency][fork]") {
  airl::ConcurrencyLimiter<ManualConcurrencyStorage> limiter({{"all", Scope::global, 100, 60s}},
                                                             ManualConcurrencyStorage());
  const Permit before = limiter.try_acquire("u", "m");  // used before the fork, too
  REQUIRE(before);
  int pipe_fds[2];
  REQUIRE(::pipe(pipe_fds) == 0);
  const pid_t child = ::fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    ::close(pipe_fds[0]);
    int code = 0;
    try {
      Permit mine = limiter.try_acquire("u", "m");
      const auto hex = mine.id().hex();
      if (::write(pipe_fds[1], hex.data(), hex.size()) != static_cast<ssize_t>(hex.size())) code = 2;
    } catch (...) {
      code = 3;
    }
    ::_exit(code);
  }
  ::close(pipe_fds[1]);
  std::array<char, 32> theirs{};
  const bool got = read_within(pipe_fds[0], theirs.data(), theirs.size());
  ::close(pipe_fds[0]);
  CHECK(exited_cleanly(reap_within(child)));
  REQUIRE(got);
  const Permit mine = limiter.try_acquire("u", "m");  // the parent's next id: the one the child would repeat
  REQUIRE(mine);
  CHECK(std::string(theirs.data(), theirs.size()) != hex_of(mine.id()));
  CHECK(std::string(theirs.data(), theirs.size()).substr(0, 8) != hex_of(mine.id()).substr(0, 8));  // a new base
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
