// SPDX-License-Identifier: MIT
// Concurrency caps (ConcurrencyLimiter, Permit, both concurrency storages). The behavioural cases run on both
// backends: in memory on a ManualClock (exact, no sleeps) and on a real redis-server (Redis's clock, bounded
// waits). Then the cases only one backend has: in-memory memory bounds, exact retry hints and clock limits;
// Redis keys, the script's refusals, forked processes (one that dies holding a permit, workers forked from
// one limiter), a paused server, and an unreachable server under each failure policy. Every wait is bounded:
// forked children are reaped with a deadline and killed past it.
#include <catch2/catch.hpp>

#include "redis_test_support.hpp"

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <csignal>
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

// Reaps `child`, waiting at most `limit` (WNOHANG polls); past it kills the child and returns nothing.
std::optional<int> reap_within(pid_t child, std::chrono::milliseconds limit = 20s) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  int status = 0;
  while (true) {
    const pid_t done = ::waitpid(child, &status, WNOHANG);
    if (done == child) return status;
    if (done < 0) return std::nullopt;
    if (std::chrono::steady_clock::now() >= deadline) {
      ::kill(child, SIGKILL);
      ::waitpid(child, &status, 0);  // returns at once: the child is dead
      return std::nullopt;
    }
    std::this_thread::sleep_for(5ms);
  }
}

// Whether a reaped child exited normally with code 0.
bool exited_cleanly(const std::optional<int>& status) {
  return status && WIFEXITED(*status) && WEXITSTATUS(*status) == 0;
}

// Reads exactly `size` bytes from `fd`, waiting at most `limit` in all; returns whether it got them.
bool read_within(int fd, char* out, std::size_t size, std::chrono::milliseconds limit = 10s) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  std::size_t got = 0;
  while (got < size) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return false;
    pollfd readable{fd, POLLIN, 0};
    if (::poll(&readable, 1, static_cast<int>(left.count())) != 1) return false;
    const ssize_t n = ::read(fd, out + got, size - got);
    if (n <= 0) return false;
    got += static_cast<std::size_t>(n);
  }
  return true;
}

std::string hex_of(const airl::PermitId& id) {
  const auto hex = id.hex();
  return std::string(hex.data(), hex.size());
}

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

TEMPLATE_TEST_CASE("a late release never frees the slot someone else took after the lease ran out",
                   "[concurrency]", InMemoryCaps, RedisCaps) {
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

TEMPLATE_TEST_CASE("renew() on a heartbeat thread may race release() on the request thread", "[concurrency][threads]",
                   InMemoryCaps, RedisCaps) {
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

TEMPLATE_TEST_CASE("a permit destroyed after its thread's thread_locals are gone still releases safely",
                   "[concurrency][lifecycle]", InMemoryCaps, RedisCaps) {
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
  if constexpr (std::is_same_v<TestType, RedisCaps>) {
    CHECK(limiter.in_flight("user", "alice", "m") == 0);  // the child's release reached the shared store
  }
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
  // A cap the script cannot count exactly fails at construction, not at every try_acquire().
  CHECK_THROWS_AS(airl::RedisConcurrencyLimiter({{"huge", Scope::global, (std::uint64_t{1} << 53) + 1, 1s}},
                                                airl::RedisConcurrencyStorage()),
                  std::invalid_argument);
  CHECK_THROWS_AS(airl::RedisConcurrencyLimiter({{"unlimited", Scope::global, std::numeric_limits<std::uint64_t>::max(), 1s}},
                                                airl::RedisConcurrencyStorage()),
                  std::invalid_argument);
  CHECK_NOTHROW(airl::RedisConcurrencyLimiter({{"top", Scope::global, std::uint64_t{1} << 53, 1s}},
                                              airl::RedisConcurrencyStorage()));
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
  CHECK(reap_within(child).has_value());  // bounded: a child stuck past 20 s is killed
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

TEST_CASE("redis: workers forked from one limiter never share permit ids", "[concurrency][redis][fork]") {
  const int port = shared_redis().port();
  airl::RedisOptions options = concurrency_options(port, airl::FailurePolicy::fail_closed);
  options.command_timeout = options.connect_timeout = 1000ms;
  // A pre-fork server: the limiter is built in the parent (not used yet: no connection to share), then each
  // process takes a permit under a cap of 2.
  airl::RedisConcurrencyLimiter limiter({{"user", Scope::user, 2, 60s}}, airl::RedisConcurrencyStorage(options));
  int to_parent[2], to_child[2];
  REQUIRE(::pipe(to_parent) == 0);
  REQUIRE(::pipe(to_child) == 0);
  const pid_t child = ::fork();
  REQUIRE(child >= 0);
  if (child == 0) {  // acquires, reports its id, releases when told, reports that
    ::close(to_parent[0]);
    ::close(to_child[1]);
    int code = 0;
    try {
      Permit permit = limiter.try_acquire("alice", "m");
      std::array<char, 33> report{};
      report[0] = permit ? '1' : '0';
      const auto hex = permit.id().hex();
      std::copy(hex.begin(), hex.end(), report.begin() + 1);
      if (::write(to_parent[1], report.data(), report.size()) != static_cast<ssize_t>(report.size())) code = 2;
      char go = 0;
      if (!read_within(to_child[0], &go, 1)) code = 4;
      permit.release();
      const char released = 'r';
      if (::write(to_parent[1], &released, 1) != 1) code = 2;
    } catch (...) {
      code = 3;
    }
    ::_exit(code);
  }
  ::close(to_parent[1]);
  ::close(to_child[0]);
  std::array<char, 33> report{};
  const bool reported = read_within(to_parent[0], report.data(), report.size());
  Permit mine;
  if (reported) mine = limiter.try_acquire("alice", "m");
  const std::uint64_t both = reported ? limiter.in_flight("user", "alice", "m") : 0;
  const bool third_denied = reported && !limiter.try_acquire("alice", "m");
  const char go = 'g';
  [[maybe_unused]] const auto sent = ::write(to_child[1], &go, 1);
  char released = 0;
  const bool child_released = read_within(to_parent[0], &released, 1);
  ::close(to_parent[0]);
  ::close(to_child[1]);
  CHECK(exited_cleanly(reap_within(child)));
  REQUIRE(reported);
  CHECK(report[0] == '1');
  REQUIRE(mine);
  CHECK(std::string(report.data() + 1, 32) != hex_of(mine.id()));
  CHECK(both == 2);  // two leases: neither overwrote the other
  CHECK(third_denied);
  REQUIRE(child_released);
  CHECK(limiter.in_flight("user", "alice", "m") == 1);  // the child's release left the parent's lease alone
  CHECK(mine.renew());
}

TEST_CASE("redis: the script refuses a repeated key, a lease above 366 days and an id already held, before "
          "any write",
          "[concurrency][redis][validation]") {
  const RedisServer& server = shared_redis();
  const std::string prefix = unique_key_prefix();
  const std::string script(airl::detail::concurrency_script);
  const std::string a = prefix + ":{g}:cc:g:a", b = prefix + ":{g}:cc:g:b";
  const std::string max_lease_us = "31622400000000";  // 366 days
  const auto eval = [&](std::vector<std::string> args) {
    args.insert(args.begin(), {"EVAL", script});
    RawReply reply = server.command(args);
    REQUIRE(reply);
    return reply;
  };
  const auto refused = [](const RawReply& reply, std::string_view why) {
    return reply->type == REDIS_REPLY_ERROR && text_of(*reply).find(why) != std::string::npos;
  };
  // The script's answer for an id already held: {-1}, and nothing written (the storage throws PermitIdInUse).
  const auto id_in_use = [](const RawReply& reply) {
    return reply->type == REDIS_REPLY_ARRAY && reply->elements == 1 && reply->element[0]->type == REDIS_REPLY_INTEGER &&
           reply->element[0]->integer == -1;
  };

  CHECK(refused(eval({"2", a, a, "acquire", "id-1", "5", "1000", "5", "1000"}), "passed twice"));
  CHECK(refused(eval({"2", a, a, "release", "id-1"}), "passed twice"));
  CHECK(refused(eval({"1", a, "acquire", "id-1", "5", "31622400000001"}), "lease"));
  CHECK(server.keys_with_prefix(prefix).empty());
  const RawReply longest = eval({"1", a, "acquire", "id-1", "5", max_lease_us});
  REQUIRE(longest->type == REDIS_REPLY_ARRAY);
  CHECK(longest->element[0]->integer == 1);
  CHECK(refused(eval({"1", a, "renew", "id-1", "31622400000001"}), "lease"));
  CHECK(eval({"1", a, "renew", "id-1", max_lease_us})->integer == 1);

  // An id that is already a member of any key (even with its lease run out) is never overwritten.
  must(server, {"ZADD", b, "1", "id-2"});  // a deadline long past: a lease that ran out, not yet dropped
  const RawReply clash = eval({"2", a, b, "acquire", "id-2", "5", "1000", "5", "1000"});
  CHECK(id_in_use(clash));
  CHECK(text_of(*must(server, {"ZSCORE", b, "id-2"})) == "1");  // not expired, not overwritten
  CHECK(must(server, {"ZCARD", a})->integer == 1);               // a only holds id-1
  CHECK(id_in_use(eval({"1", a, "acquire", "id-1", "5", "1000"})));
  CHECK(must(server, {"ZCARD", a})->integer == 1);
  must(server, {"DEL", a, b});
}

TEST_CASE("redis: try_acquire() with an id already held throws PermitIdInUse and takes nothing",
          "[concurrency][redis][validation]") {
  RedisCaps backend;
  airl::RedisConcurrencyStorage storage = backend.make_storage();
  const airl::PermitId id{7, 7};
  const airl::ConcurrencySlot slots[] = {{{Scope::user, "user", "alice", "m"}, 5, 60s},
                                         {{Scope::global, "all", {}, {}}, 5, 60s}};
  REQUIRE(storage.try_acquire(slots, id).acquired);
  const airl::ConcurrencySlot other_user[] = {{{Scope::user, "user", "bob", "m"}, 5, 60s},
                                              {{Scope::global, "all", {}, {}}, 5, 60s}};
  CHECK_THROWS_AS(storage.try_acquire(other_user, id), airl::PermitIdInUse);  // held in the global scope
  CHECK(storage.in_flight(other_user[0]) == 0);                               // bob's scope got nothing
  CHECK(storage.in_flight(slots[1]) == 1);
  storage.release(slots, id, airl::LeaseLocation::store);
  CHECK(storage.in_flight(slots[1]) == 0);
}

TEST_CASE("redis: a rate limiter's reset(user) under the same key prefix leaves the user's permits counting",
          "[concurrency][redis]") {
  airl::RedisOptions options = concurrency_options(shared_redis().port(), airl::FailurePolicy::fail_closed);
  options.command_timeout = options.connect_timeout = 1000ms;
  airl::RedisConcurrencyLimiter caps({{"user", Scope::user, 1, 60s}, {"pair", Scope::user_model, 1, 60s}},
                                     airl::RedisConcurrencyStorage(options));
  airl::MultiTierLimiter<airl::RedisStorage> rates(
      {airl::Tier{"rpm", Scope::user, airl::Quota{100, 60s}, airl::Unit::requests}}, airl::RedisStorage(options));
  Permit permit = caps.try_acquire("alice", "m");
  REQUIRE(permit);
  REQUIRE(rates.allow("alice", "m"));
  rates.reset("alice");
  CHECK(rates.usage("rpm", "alice", "m") == 0);       // the reset did its job
  CHECK(caps.in_flight("user", "alice", "m") == 1);  // and left the concurrency keys alone
  CHECK(caps.in_flight("pair", "alice", "m") == 1);
  CHECK_FALSE(caps.try_acquire("alice", "m"));
  CHECK(permit.renew());
}

TEST_CASE("redis paused: an acquisition that timed out does not keep its slot when the server resumes",
          "[concurrency][redis][faults]") {
  // A command that timed out still runs when a stalled server resumes. Its lease must not lock the slot
  // for the full 60 s lease: fail_closed and local release it before the storage's next call, a degraded
  // fail_open permit releases it when it ends.
  RedisServer server;
  const std::vector<ConcurrencyCap> caps = {{"user", Scope::user, 1, 60s}};
  const auto make = [&](airl::FailurePolicy policy) {
    return airl::RedisConcurrencyLimiter(caps,
                                         airl::RedisConcurrencyStorage(concurrency_options(server.port(), policy)));
  };
  const auto connected = [](airl::RedisConcurrencyLimiter& limiter) {  // a pooled connection is open
    return eventually(
        [&] {
          try {
            return limiter.in_flight("user", "alice", "m") == 0;
          } catch (const airl::BackendError&) {  // 50 ms timeouts on a busy machine
            return false;
          }
        },
        5s);
  };
  const auto slot_frees = [](airl::RedisConcurrencyLimiter& limiter, Permit& taken) {
    return eventually(
        [&] {
          try {
            taken = limiter.try_acquire("alice", "m");
          } catch (const airl::BackendError&) {  // the first call after the resume may still time out
          }
          return taken.acquired() && !taken.degraded();
        },
        5s);
  };

  SECTION("fail_closed") {
    airl::RedisConcurrencyLimiter limiter = make(airl::FailurePolicy::fail_closed);
    REQUIRE(connected(limiter));
    server.pause();
    const Permit refused = limiter.try_acquire("alice", "m");  // refused, not thrown (FailurePolicy::fail_closed)
    CHECK_FALSE(refused);
    CHECK(refused.status() == airl::Status::backend_unavailable);
    CHECK(limiter.storage().pending_releases() == 1);
    server.resume();
    Permit taken;
    CHECK(slot_frees(limiter, taken));
    CHECK(limiter.storage().pending_releases() == 0);
    CHECK(limiter.in_flight("user", "alice", "m") == 1);
    CHECK(limiter.metrics().held == 1);
  }
  SECTION("local") {
    airl::RedisConcurrencyLimiter limiter = make(airl::FailurePolicy::local);
    REQUIRE(connected(limiter));
    server.pause();
    {
      const Permit fallback = limiter.try_acquire("alice", "m");
      CHECK(fallback.degraded());
    }
    server.resume();
    Permit taken;
    CHECK(slot_frees(limiter, taken));
    CHECK(limiter.in_flight("user", "alice", "m") == 1);
  }
  SECTION("fail_open, released after the resume") {
    airl::RedisConcurrencyLimiter limiter = make(airl::FailurePolicy::fail_open);
    REQUIRE(connected(limiter));
    server.pause();
    Permit degraded = limiter.try_acquire("alice", "m");
    CHECK(degraded.degraded());
    CHECK(degraded.renew());  // no confirmed lease: assumed, without asking the stalled server
    server.resume();
    degraded.release();  // its acquisition may have run after all: release it
    Permit taken;
    CHECK(slot_frees(limiter, taken));
    CHECK(limiter.in_flight("user", "alice", "m") == 1);
    const airl::ConcurrencyMetrics metrics = limiter.metrics();
    CHECK(metrics.held == 1);
    CHECK(metrics.renewed == 1);
  }
  SECTION("fail_open, released during the pause") {
    airl::RedisConcurrencyLimiter limiter = make(airl::FailurePolicy::fail_open);
    REQUIRE(connected(limiter));
    server.pause();
    {
      const Permit degraded = limiter.try_acquire("alice", "m");
      CHECK(degraded.degraded());
    }  // its release fails too: it waits for the next call
    CHECK(limiter.metrics().release_errors == 1);
    CHECK(limiter.storage().pending_releases() == 1);
    server.resume();
    Permit taken;
    CHECK(slot_frees(limiter, taken));
    CHECK(limiter.storage().pending_releases() == 0);
    CHECK(limiter.in_flight("user", "alice", "m") == 1);
    CHECK(limiter.metrics().held == 1);
  }
}

TEST_CASE("redis unreachable: fail_closed refuses with backend_unavailable (no exception), fail_open grants a "
          "degraded permit, local caps in process",
          "[concurrency][redis][faults]") {
  const int closed_port = free_loopback_port();  // nothing listens there
  const std::vector<ConcurrencyCap> caps = {{"user", Scope::user, 1, 60s}};

  // fail_closed means what it means for a rate decision: a refusal whose status is backend_unavailable.
  airl::RedisConcurrencyLimiter closed(
      caps, airl::RedisConcurrencyStorage(concurrency_options(closed_port, airl::FailurePolicy::fail_closed)));
  const Permit unavailable = closed.try_acquire("alice", "m");
  CHECK_FALSE(unavailable);
  CHECK(unavailable.status() == airl::Status::backend_unavailable);
  CHECK(unavailable.reason() == airl::backend_unavailable_reason);
  CHECK(unavailable.degraded());
  CHECK(unavailable.retry_after() > 0ms);
  CHECK_THROWS_AS(closed.in_flight("user", "alice", "m"), airl::BackendError);  // not a decision: thrown
  CHECK(closed.metrics().backend_errors == 2);
  CHECK(closed.metrics().degraded == 1);
  CHECK(closed.metrics().denied == 1);
  CHECK(closed.metrics().denied_backend_unavailable == 1);
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
  CHECK(metrics.release_errors == 0);  // nothing was sent to release: the acquisitions never left
  CHECK(metrics.held == 1);            // second; first was released
  CHECK(metrics.renewed == 1);         // first's renew counts, though it needed no store
  second.release();
  for (int i = 0; i < 5; ++i) {
    Permit passing = open.try_acquire("alice", "m");
    CHECK(passing.renew());
  }
  metrics = open.metrics();
  CHECK(metrics.held == 0);  // degraded permits stop counting as held when they end
  CHECK(metrics.renewed == 6);
  CHECK(metrics.acquired == 7);
  CHECK(open.storage().pending_releases() == 0);  // nothing was sent, so nothing is left to release

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
