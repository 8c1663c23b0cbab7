// SPDX-License-Identifier: MIT
// RedisStorage when Redis fails, each case on its own redis-server: killed (every failure policy), restarted
// on the same port (stale pooled connections replaced within the call), frozen with SIGSTOP, its scripts or
// data flushed mid-run. allow() never throws and never blocks much longer than connect_timeout +
// command_timeout; usage() and reset() throw BackendError; a timeout says where and after how long; both
// storages name their last fault (last_backend_error()). A hostile server is in redis_hostile_test.cpp.
#include <catch2/catch.hpp>

#include "fake_redis.hpp"
#include "redis_test_support.hpp"

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

using namespace std::chrono_literals;
using namespace airl;
using namespace airl::test;

namespace {

// connect_timeout + command_timeout of options_for(), plus room for a loaded (sanitized) test machine.
constexpr auto latency_bound = 50ms + 50ms + 100ms;

RedisRateLimiter limiter_on(const RedisServer& server, FailurePolicy policy, Quota quota) {
  return RedisRateLimiter(quota, RedisStorage(options_for(server, policy)));
}

// Makes `calls` decisions for one user while the server is down, spaced so that some land inside the
// connect backoff and some attempt a connect; records every decision and the slowest call.
struct Outage {
  std::vector<Decision> decisions;
  LatencyProbe latency;
  int admitted = 0;
};
Outage allow_during_outage(RedisRateLimiter& limiter, int calls, std::string_view user = "alice") {
  Outage outage;
  for (int i = 0; i < calls; ++i) {
    outage.decisions.push_back(outage.latency([&] { return limiter.allow(user, "m"); }));
    if (outage.decisions.back().allowed) ++outage.admitted;
    std::this_thread::sleep_for(7ms);
  }
  return outage;
}

void report(const char* what, const LatencyProbe& latency) {
  std::printf("[latency] %-48s max %7.2f ms over %d calls\n", what, latency.max_ms(), latency.calls());
}

// SCRIPT LOAD of airl's script on `server` through a raw connection: its SHA1, as the storage sees it.
std::string script_sha(const RedisServer& server) {
  return text_of(*must(server, {"SCRIPT", "LOAD", std::string(detail::sliding_window_script)}));
}

bool script_loaded(const RedisServer& server, const std::string& sha) {
  const RawReply reply = must(server, {"SCRIPT", "EXISTS", sha});
  return reply->elements == 1 && reply->element[0]->integer == 1;
}

}  // namespace

TEST_CASE("server killed, fail_open: every request admitted, degraded and counted, within the timeouts",
          "[redis][faults]") {
  RedisServer server;
  RedisRateLimiter limiter = limiter_on(server, FailurePolicy::fail_open, {3, 10s});
  REQUIRE_FALSE(limiter.allow("alice", "m").degraded);
  server.kill();

  const Outage outage = allow_during_outage(limiter, 20);
  report("killed, fail_open allow()", outage.latency);
  CHECK(outage.admitted == 20);  // more than the limit: nothing is known, availability first
  for (const Decision& decision : outage.decisions) {
    CHECK(decision.degraded);
    CHECK(decision.reason.empty());
  }
  CHECK(limiter.metrics().backend_errors == 20);
  CHECK(limiter.metrics().allowed == 21);
  CHECK(outage.latency.max() <= latency_bound);
  CHECK_FALSE(limiter.storage().healthy());
}

TEST_CASE("server killed, fail_closed: every request denied as backend_unavailable, degraded and counted",
          "[redis][faults]") {
  RedisServer server;
  RedisRateLimiter limiter = limiter_on(server, FailurePolicy::fail_closed, {3, 10s});
  REQUIRE_FALSE(limiter.allow("alice", "m").degraded);
  server.kill();

  const Outage outage = allow_during_outage(limiter, 20);
  report("killed, fail_closed allow()", outage.latency);
  CHECK(outage.admitted == 0);
  for (const Decision& decision : outage.decisions) {
    CHECK(decision.degraded);
    CHECK(decision.reason == backend_unavailable_reason);
    CHECK(decision.retry_after > 0ms);
  }
  CHECK(limiter.metrics().backend_errors == 20);
  CHECK(limiter.metrics().denied == 20);
  CHECK(outage.latency.max() <= latency_bound);
}

TEST_CASE("server killed, local: an in-process limiter of the same quota decides, exactly `limit` admitted",
          "[redis][faults]") {
  RedisServer server;
  RedisRateLimiter limiter = limiter_on(server, FailurePolicy::local, {3, 10s});
  REQUIRE_FALSE(limiter.allow("alice", "m").degraded);
  server.kill();

  const Outage alice = allow_during_outage(limiter, 10, "alice");
  const Outage bob = allow_during_outage(limiter, 5, "bob");
  report("killed, local allow()", alice.latency);
  CHECK(alice.admitted == 3);
  CHECK(bob.admitted == 3);  // per-user buckets locally too
  for (const Outage* outage : {&alice, &bob}) {
    for (const Decision& decision : outage->decisions) {
      CHECK(decision.degraded);
      CHECK(decision.limit == 3);
      if (!decision.allowed) {
        CHECK(decision.reason == "default");
        CHECK(decision.retry_after > 0ms);
        CHECK(decision.retry_after <= 10s);
      }
    }
    CHECK(outage->latency.max() <= latency_bound);
  }
  CHECK(limiter.metrics().backend_errors == 15);
}

TEST_CASE("usage() and reset() throw ConnectionError or TimeoutError while the server is down", "[redis][faults]") {
  RedisServer server;
  RedisRateLimiter limiter = limiter_on(server, FailurePolicy::fail_open, {3, 10s});
  REQUIRE_FALSE(limiter.allow("alice", "m").degraded);
  const auto down_kind = [](auto call) {
    try {
      call();
    } catch (const ConnectionError&) {
      return std::string("ConnectionError");
    } catch (const TimeoutError&) {
      return std::string("TimeoutError");
    } catch (const BackendError& error) {
      return std::string("another BackendError: ") + error.what();
    }
    return std::string("no exception");
  };
  LatencyProbe latency;
  const auto check_all_throw = [&] {
    for (int i = 0; i < 5; ++i) {
      const std::string usage = latency([&] { return down_kind([&] { limiter.usage("alice", "m"); }); });
      const std::string reset_user = latency([&] { return down_kind([&] { limiter.reset("alice"); }); });
      const std::string reset_pair = latency([&] { return down_kind([&] { limiter.reset("alice", "m"); }); });
      for (const std::string& kind : {usage, reset_user, reset_pair}) {
        INFO(kind);
        CHECK((kind == "ConnectionError" || kind == "TimeoutError"));
      }
      std::this_thread::sleep_for(15ms);
    }
  };
  SECTION("killed") {
    server.kill();
    check_all_throw();
    report("killed, usage()/reset()", latency);
  }
  SECTION("frozen with SIGSTOP") {
    server.pause();
    // The pooled connection is open: its command times out, which must be told apart from a refused connect.
    CHECK(latency([&] { return down_kind([&] { limiter.usage("alice", "m"); }); }) == "TimeoutError");
    check_all_throw();
    report("SIGSTOP, usage()/reset()", latency);
    server.resume();
  }
  CHECK(latency.max() <= latency_bound);
  CHECK(limiter.metrics().backend_errors == static_cast<std::uint64_t>(latency.calls()));  // each failed call counts
}

TEST_CASE("server restarted on the same port: the same limiter recovers and reloads the script", "[redis][faults]") {
  RedisServer server;
  RedisRateLimiter limiter = limiter_on(server, FailurePolicy::fail_closed, {100, 10s});
  REQUIRE_FALSE(limiter.allow("alice", "m").degraded);
  const std::string sha = script_sha(server);
  server.kill();
  CHECK(limiter.allow("alice", "m").degraded);
  std::this_thread::sleep_for(300ms);  // let the connect backoff grow past its first steps
  CHECK(limiter.allow("alice", "m").degraded);

  server.start();  // same port, empty data, no scripts
  REQUIRE_FALSE(script_loaded(server, sha));
  const auto restarted = std::chrono::steady_clock::now();
  Decision decision;
  const bool recovered = eventually([&] { return !(decision = limiter.allow("alice", "m")).degraded; }, 3000ms, 5ms);
  const auto took = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - restarted);
  std::printf("[latency] restart to first healthy decision: %lld ms\n", static_cast<long long>(took.count()));
  REQUIRE(recovered);
  CHECK(decision.allowed);
  CHECK(took <= 1500ms);  // the connect backoff is capped at 1 s
  CHECK(script_loaded(server, sha));
  CHECK(limiter.usage("alice", "m") == 1);  // the restarted server counts from its empty state
  CHECK(limiter.storage().healthy());
}

TEST_CASE("a quick restart with a full pool of stale connections costs no degraded decision",
          "[redis][faults]") {
  RedisServer server;
  RedisOptions options = options_for(server, FailurePolicy::fail_closed);
  options.pool_size = 8;
  RedisRateLimiter limiter(Quota{100000, 10s}, RedisStorage(options));
  // Warm the whole pool: threads decide together until Redis sees 8 airl connections (+1: the one asking).
  const auto clients = [&] {
    const std::string info = text_of(*must(server, {"INFO", "clients"}));
    const std::size_t at = info.find("connected_clients:");
    return at == std::string::npos ? 0 : std::stoi(info.substr(at + 18));
  };
  std::atomic<bool> warm{false};
  std::vector<std::thread> workers;
  for (int t = 0; t < 8; ++t) {
    workers.emplace_back([&] {
      while (!warm.load()) (void)limiter.allow("alice", "m");
    });
  }
  const bool pool_full = eventually([&] { return clients() >= 9; }, 3000ms, 1ms);
  warm = true;
  for (std::thread& worker : workers) worker.join();
  REQUIRE(pool_full);
  REQUIRE(limiter.metrics().backend_errors == 0);

  server.kill();
  server.start();  // back on the same port within milliseconds
  // Each stale connection fails its first call; the call goes again on a fresh connection within its
  // deadline, so no decision is degraded (no spurious 503 under fail_closed) and Redis counts every one.
  int degraded = 0;
  for (int i = 0; i < 40; ++i) degraded += limiter.allow("alice", "m").degraded ? 1 : 0;
  std::printf("[faults] restart with 8 stale connections: %d of 40 decisions degraded\n", degraded);
  CHECK(degraded == 0);
  CHECK(limiter.usage("alice", "m") == 40);  // the restarted server counts from its empty state
  CHECK(limiter.storage().healthy());
}

TEST_CASE("a stale connection shared by threads: every call that meets one goes again, none degraded",
          "[redis][faults]") {
  RedisServer server;
  RedisOptions options = options_for(server, FailurePolicy::fail_closed);
  options.pool_size = 8;
  RedisRateLimiter limiter(Quota{100000, 10s}, RedisStorage(options));
  const auto burst = [&](int threads, int calls) {
    std::atomic<int> degraded{0};
    std::vector<std::thread> workers;
    for (int t = 0; t < threads; ++t) {
      workers.emplace_back([&] {
        for (int i = 0; i < calls; ++i) degraded.fetch_add(limiter.allow("alice", "m").degraded ? 1 : 0);
      });
    }
    for (std::thread& worker : workers) worker.join();
    return degraded.load();
  };
  REQUIRE(burst(8, 50) == 0);
  server.kill();
  server.start();
  CHECK(burst(8, 20) == 0);
  CHECK(limiter.usage("alice", "m") == 160);
}

TEST_CASE("SIGSTOP: allow() stays within the timeouts and degrades, and recovers after SIGCONT", "[redis][faults]") {
  RedisServer server;
  RedisOptions options = options_for(server, FailurePolicy::fail_open);
  int threads = 1;
  SECTION("one thread") { threads = 1; }
  SECTION("six threads sharing one connection") {
    threads = 6;
    options.pool_size = 1;
  }
  RedisRateLimiter limiter(Quota{1000, 10s}, RedisStorage(options));
  for (int i = 0; i < threads; ++i) REQUIRE_FALSE(limiter.allow("alice", "m").degraded);

  server.pause();
  std::mutex mutex;
  LatencyProbe worst;
  std::atomic<int> degraded{0}, calls{0};
  std::vector<std::thread> workers;
  for (int t = 0; t < threads; ++t) {
    workers.emplace_back([&] {
      const Outage outage = allow_during_outage(limiter, 12);
      for (const Decision& decision : outage.decisions) degraded.fetch_add(decision.degraded ? 1 : 0);
      calls.fetch_add(static_cast<int>(outage.decisions.size()));
      std::lock_guard lock(mutex);
      worst.merge(outage.latency);
    });
  }
  for (std::thread& worker : workers) worker.join();
  report(threads == 1 ? "SIGSTOP allow(), 1 thread" : "SIGSTOP allow(), 6 threads / pool 1", worst);
  CHECK(degraded.load() == calls.load());
  CHECK(limiter.metrics().backend_errors == static_cast<std::uint64_t>(calls.load()));
  CHECK(worst.max() <= latency_bound);

  server.resume();
  const auto resumed = std::chrono::steady_clock::now();
  CHECK(eventually([&] { return !limiter.allow("alice", "m").degraded; }, 3000ms, 5ms));
  std::printf("[latency] SIGCONT to first healthy decision: %lld ms\n",
              static_cast<long long>(
                  std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - resumed).count()));
  CHECK(limiter.storage().healthy());
}

TEST_CASE("SCRIPT FLUSH mid-run: the next decision reloads the script transparently (not degraded)",
          "[redis][faults]") {
  RedisServer server;
  RedisRateLimiter limiter = limiter_on(server, FailurePolicy::fail_closed, {5, 10s});
  REQUIRE(limiter.allow("alice", "m").allowed);
  REQUIRE(limiter.allow("alice", "m").allowed);
  const std::string sha = script_sha(server);
  for (int round = 0; round < 3; ++round) {
    must(server, {"SCRIPT", "FLUSH"});
    REQUIRE_FALSE(script_loaded(server, sha));
    const Decision decision = limiter.allow("alice", "m");
    CHECK(decision.allowed);
    CHECK_FALSE(decision.degraded);
    CHECK(script_loaded(server, sha));
  }
  CHECK(limiter.usage("alice", "m") == 5);  // the data survived: counting went on
  CHECK_FALSE(limiter.allow("alice", "m").allowed);
  must(server, {"SCRIPT", "FLUSH"});
  CHECK(limiter.usage("alice", "m") == 5);  // usage() reloads too
  CHECK(limiter.metrics().backend_errors == 0);
}

TEST_CASE("FLUSHALL mid-run: decisions go on, counting again from zero", "[redis][faults]") {
  RedisServer server;
  RedisRateLimiter limiter = limiter_on(server, FailurePolicy::fail_closed, {3, 10s});
  for (int i = 0; i < 3; ++i) REQUIRE(limiter.allow("alice", "m").allowed);
  REQUIRE_FALSE(limiter.allow("alice", "m").allowed);
  must(server, {"FLUSHALL"});
  CHECK(limiter.usage("alice", "m") == 0);
  for (int i = 0; i < 3; ++i) {
    const Decision decision = limiter.allow("alice", "m");
    CHECK(decision.allowed);
    CHECK_FALSE(decision.degraded);
    CHECK(decision.remaining == static_cast<std::uint64_t>(2 - i));
  }
  const Decision full = limiter.allow("alice", "m");
  CHECK_FALSE(full.allowed);
  CHECK(full.reason == "default");
  CHECK(limiter.usage("alice", "m") == 3);
  CHECK(limiter.metrics().backend_errors == 0);
}

TEST_CASE("a request too large for one write, sent to a killed server, does not kill the process with SIGPIPE",
          "[redis][faults]") {
  // ~2 MB of keys: hiredis needs several write() calls, and the one after the peer's reset raises SIGPIPE,
  // whose default action would end the serving process.
  RedisServer server;
  std::vector<Tier> tiers;
  for (int i = 0; i < 40; ++i) tiers.push_back({"tier-" + std::to_string(i), Scope::user_model, {10, 10s}});
  RedisMultiTierRateLimiter limiter(tiers, RedisStorage(options_for(server, FailurePolicy::fail_open)));
  REQUIRE_FALSE(limiter.allow("alice", "m").degraded);
  server.kill();
  const std::string huge(max_id_length, '\xff');  // every byte percent-encoded: 3x longer in the key
  for (int i = 0; i < 3; ++i) {
    const Decision decision = limiter.allow(huge, huge);
    CHECK(decision.allowed);
    CHECK(decision.degraded);
    std::this_thread::sleep_for(20ms);
  }
}

TEST_CASE("a timeout names the server and how long it waited, not an errno text", "[redis][faults]") {
  const auto timeout_text = [](auto&& call) {
    try {
      call();
    } catch (const TimeoutError& error) {
      return std::string(error.what());
    } catch (const BackendError& error) {
      return std::string("not a TimeoutError: ") + error.what();
    }
    return std::string("no exception");
  };
  SECTION("a command: the server frozen with SIGSTOP") {
    RedisServer server;
    RedisRateLimiter limiter = limiter_on(server, FailurePolicy::fail_closed, {3, 10s});
    REQUIRE_FALSE(limiter.allow("alice", "m").degraded);
    server.pause();
    CHECK(timeout_text([&] { limiter.usage("alice", "m"); }) ==
          "airl: Redis command to 127.0.0.1:" + std::to_string(server.port()) + " timed out after 50 ms");
    server.resume();
  }
  SECTION("a connect: a port whose accept queue is full, so the SYN goes unanswered") {
    FullBacklog backlog;
    REQUIRE(backlog.full());
    RedisOptions options = options_for_closed_port(FailurePolicy::fail_closed);
    options.port = backlog.port();
    RedisRateLimiter limiter(Quota{3, 10s}, RedisStorage(options));
    CHECK(timeout_text([&] { limiter.usage("alice", "m"); }) ==
          "airl: Redis connect to 127.0.0.1:" + std::to_string(backlog.port()) + " timed out after 50 ms");
  }
  SECTION("the handshake: a server that accepts and never answers") {
    RedisServer server;
    FakeRedis fake(server.port());
    FakeRedis::Fault silence;
    silence.act = FakeRedis::Act::answer_then_silence;
    silence.match = FakeRedis::Match::any;
    fake.arm(silence);
    RedisOptions options = options_for_closed_port(FailurePolicy::fail_closed);
    options.port = fake.port();
    RedisRateLimiter limiter(Quota{3, 10s}, RedisStorage(options));
    CHECK(timeout_text([&] { limiter.usage("alice", "m"); }) ==
          "airl: Redis handshake to 127.0.0.1:" + std::to_string(fake.port()) + " timed out after 50 ms");
  }
}

TEST_CASE("last_backend_error() says what degraded a decision, on both storages, and when", "[redis][faults]") {
  RedisServer server;
  RedisRateLimiter rates = limiter_on(server, FailurePolicy::fail_open, {3, 10s});
  RedisOptions options = options_for(server, FailurePolicy::fail_open);
  RedisConcurrencyLimiter caps({{"per-user", Scope::user, 2, 10s}}, RedisConcurrencyStorage(options));
  CHECK_FALSE(rates.storage().last_backend_error());  // no fault yet
  REQUIRE_FALSE(rates.allow("alice", "m").degraded);
  Permit held = caps.try_acquire("alice", "m");
  REQUIRE((held.acquired() && !held.degraded()));
  CHECK_FALSE(rates.storage().last_backend_error());
  CHECK_FALSE(caps.storage().last_backend_error());

  server.kill();
  const auto before = std::chrono::system_clock::now();
  CHECK(rates.allow("alice", "m").degraded);
  Permit degraded = caps.try_acquire("alice", "m");
  CHECK(degraded.degraded());
  const auto after = std::chrono::system_clock::now();
  const std::string where = "127.0.0.1:" + std::to_string(server.port());
  for (const std::optional<BackendFault>& fault : {rates.storage().last_backend_error(), caps.storage().last_backend_error()}) {
    REQUIRE(fault);
    CHECK(fault->type == "ConnectionError");
    CHECK_THAT(fault->message, Catch::Contains(where) && Catch::Contains("Connection refused"));
    CHECK(fault->at >= before);
    CHECK(fault->at <= after);
  }

  // It stays once Redis is back (healthy() says that): the cause of the last degraded decision.
  server.start();
  CHECK(eventually([&] { return !rates.allow("alice", "m").degraded; }, 3000ms, 5ms));
  CHECK(rates.storage().healthy());
  REQUIRE(rates.storage().last_backend_error());
  CHECK(rates.storage().last_backend_error()->type == "ConnectionError");
}
