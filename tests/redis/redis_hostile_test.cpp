// SPDX-License-Identifier: MIT
// Both Redis storages against a hostile Redis (support/fake_redis.hpp, proxying to a real redis-server): replies
// of the wrong type (integers, bulk strings, nested arrays, arrays too short or too long, negative or huge
// numbers), garbage, a reply cut in the middle then a close or silence, a 512 MB bulk length, a valid reply one
// byte at a time, a close right after the request, and error replies. For each fault, each failure policy and
// each call (rate limits: allow, allow_many, settle; caps: acquire, renew, release), the call returns (or throws
// airl::BackendError where its API says so) within connect_timeout + command_timeout + a margin, with the
// policy's answer and the fault named by last_backend_error(); then, the fault disarmed, the next call on the
// same limiter is decided by Redis, exactly. Faults during the connect handshake too. The elapsed times are a
// liveness bound (no call hangs), not a performance check. Run under ASan too: no leak on any path.
#include <catch2/catch.hpp>

#include "fake_redis.hpp"
#include "redis_test_support.hpp"

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <thread>
#include <vector>

using namespace std::chrono_literals;
using namespace airl;
using namespace airl::test;

namespace {

using Fault = FakeRedis::Fault;
using Act = FakeRedis::Act;
using Match = FakeRedis::Match;

// Timeouts long enough that a healthy call never meets them on a loaded machine under a sanitizer, short
// enough to keep the test quick.
constexpr auto connect_timeout = 300ms;
constexpr auto command_timeout = 150ms;
// Room for a loaded machine and the sanitizers on top of the timeouts: a call past it hung.
constexpr auto margin = 400ms;
constexpr auto bound = connect_timeout + command_timeout + margin;
// A valid reply one byte at a time: each byte within command_timeout, so no single read times out, yet the
// shortest reply (":1\r\n", 4 bytes) takes longer than a call's deadline: only the deadline can end it.
constexpr auto dribble_interval = 130ms;
static_assert(dribble_interval < command_timeout && 4 * dribble_interval > connect_timeout + command_timeout);

constexpr FailurePolicy policies[] = {FailurePolicy::fail_open, FailurePolicy::fail_closed, FailurePolicy::local};

const char* name_of(FailurePolicy policy) {
  switch (policy) {
    case FailurePolicy::fail_open: return "fail_open";
    case FailurePolicy::fail_closed: return "fail_closed";
    case FailurePolicy::local: return "local";
  }
  return "?";
}

// What a call expects back, which decides the shape of a reply that is wrong only in its values.
enum class Expects { rate_decision, cap_decision, count };

// One hostile answer, and the type of the error the storage must make of it.
struct Hostile {
  std::string name;
  Fault fault;
  std::string error_type;
  bool runs = false;  // the real server still runs the command (dribble)
};

// A fault doing `act` (writing `bytes`, for the answers) to every script call until disarmed, or `times` of them.
Fault fault(Act act, std::string bytes = {}, int times = -1) {
  Fault made;
  made.act = act;
  made.bytes = std::move(bytes);
  made.times = times;
  return made;
}

// A valid reply, one byte per `interval`.
Fault dribble(std::chrono::milliseconds interval) {
  Fault made;
  made.act = Act::dribble;
  made.interval = interval;
  return made;
}

Hostile answer(std::string name, std::string bytes, std::string type = "ReplyError") {
  return {std::move(name), fault(Act::answer, std::move(bytes)), std::move(type)};
}

// Every fault of the issue, for a call that expects `expects`.
std::vector<Hostile> hostile_answers(Expects expects) {
  const std::string huge = "9223372036854775807";
  const std::string negative = expects == Expects::rate_decision ? "*5\r\n:1\r\n:1\r\n:-4\r\n:0\r\n:-1000\r\n"
                               : expects == Expects::cap_decision ? "*4\r\n:0\r\n:1\r\n:-3\r\n:-7\r\n"
                                                                   : ":-2\r\n";  // -1: settle's refusal
  const std::string large = expects == Expects::rate_decision
                                ? "*5\r\n:0\r\n:0\r\n:" + huge + "\r\n:" + huge + "\r\n:" + huge + "\r\n"
                            : expects == Expects::cap_decision ? "*4\r\n:0\r\n:1\r\n:" + huge + "\r\n:" + huge + "\r\n"
                                                                : ":" + huge + "\r\n";
  const std::string cut = "*5\r\n:1\r\n:1\r";
  const std::string bulk_512mb = "$536870912\r\n";
  return {
      answer("an integer", ":7\r\n"),
      answer("a bulk string", "$2\r\nok\r\n"),
      answer("nested arrays", "*2\r\n*1\r\n:1\r\n*1\r\n:0\r\n"),
      answer("an array too short", "*1\r\n:0\r\n"),
      answer("an array too long", "*6\r\n:1\r\n:1\r\n:4\r\n:0\r\n:1000\r\n:9\r\n"),
      answer("negative numbers", negative),
      answer("huge numbers", large),
      answer("garbage", "this is not RESP at all\r\n"),
      answer("-ERR", "-ERR hostile\r\n"),
      answer("-NOSCRIPT", "-NOSCRIPT No matching script. Please use EVAL.\r\n"),
      answer("-BUSY", "-BUSY Redis is busy running a script.\r\n"),
      answer("-OOM", "-OOM command not allowed when used memory > 'maxmemory'.\r\n"),
      {"a reply cut in the middle, then a close", fault(Act::answer_then_close, cut), "ConnectionError"},
      {"a reply cut in the middle, then silence", fault(Act::answer_then_silence, cut), "TimeoutError"},
      {"a 512 MB bulk length, then silence", fault(Act::answer_then_silence, bulk_512mb), "TimeoutError"},
      {"a 512 MB bulk length, a few bytes, then a close", fault(Act::answer_then_close, bulk_512mb + "abcdef"),
       "ConnectionError"},
      {"one byte at a time", dribble(dribble_interval), "TimeoutError", true},
      {"a close right after the request", fault(Act::close), "ConnectionError"},
  };
}

// A real redis-server and the hostile one in front of it.
struct Servers {
  RedisServer real;
  FakeRedis fake{real.port()};
};

RedisOptions hostile_options(const FakeRedis& fake, FailurePolicy policy) {
  RedisOptions options;
  options.port = fake.port();
  options.key_prefix = unique_key_prefix();
  options.on_failure = policy;
  options.connect_timeout = connect_timeout;
  options.command_timeout = command_timeout;
  options.pool_size = 2;
  return options;
}

// Runs `call()`, storing how long it took in `took` (also when it throws).
template <class Call>
auto timed(std::chrono::milliseconds& took, Call&& call) {
  struct Stopwatch {
    std::chrono::milliseconds& took;
    std::chrono::steady_clock::time_point started = std::chrono::steady_clock::now();
    ~Stopwatch() {
      took = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - started);
    }
  } stopwatch{took};
  return call();
}

// The type last_backend_error() names, or "(none)".
template <class Storage>
std::string last_error_type(const Storage& storage) {
  const std::optional<BackendFault> last = storage.last_backend_error();
  return last ? last->type : "(none)";
}

// Whether the BackendError `call()` throws, if any, is one (returns "none" when nothing was thrown).
template <class Call>
std::string thrown_by(Call&& call) {
  try {
    call();
  } catch (const BackendError& error) {
    return std::string(backend_error_type(error));
  }
  return "none";
}

// The tiers of the settle case: requests, and tokens (settle changes the tokens tier only).
std::vector<Tier> settle_tiers() {
  return {{"rpm", Scope::user_model, {100, 10s}, Unit::requests}, {"tpm", Scope::user_model, {1000, 10s}, Unit::cost}};
}

}  // namespace

TEST_CASE("hostile redis, rate limits: allow() under every fault and policy returns in time, then recovers exactly",
          "[redis][hostile]") {
  Servers servers;
  for (const FailurePolicy policy : policies) {
    RedisRateLimiter limiter(Quota{5, 10s}, RedisStorage(hostile_options(servers.fake, policy)));
    int user = 0;
    for (const Hostile& hostile : hostile_answers(Expects::rate_decision)) {
      INFO(name_of(policy) << ", " << hostile.name);
      const std::string alice = "alice-" + std::to_string(user++);
      REQUIRE_FALSE(limiter.allow(alice, "m").degraded);  // one admission in Redis, on a pooled connection
      const int ran_before = servers.fake.ran_anyway();
      const auto started = std::chrono::system_clock::now();
      const std::uint64_t degraded_before = limiter.metrics().degraded;

      servers.fake.arm(hostile.fault);
      std::chrono::milliseconds took{};
      const Decision decision = timed(took, [&] { return limiter.allow(alice, "m"); });
      servers.fake.disarm();
      CHECK(took <= bound);
      CHECK(decision.degraded);
      CHECK(limiter.metrics().degraded == degraded_before + 1);
      switch (policy) {
        case FailurePolicy::fail_open: CHECK((decision.allowed && decision.remaining == 4)); break;
        case FailurePolicy::fail_closed:
          CHECK_FALSE(decision.allowed);
          CHECK(decision.status == Status::backend_unavailable);
          break;
        case FailurePolicy::local: CHECK((decision.allowed && decision.remaining == 4)); break;  // a fresh local bucket
      }
      const std::optional<BackendFault> last = limiter.storage().last_backend_error();
      REQUIRE(last);
      CHECK(last->type == hostile.error_type);
      CHECK(last->at >= started);

      // Disarmed: Redis decides again, and counts what it saw (the dribbled call ran there, unless undone).
      const Decision next = limiter.allow(alice, "m");
      CHECK_FALSE(next.degraded);
      CHECK(next.allowed);
      const std::uint64_t usage = limiter.usage(alice, "m");
      CHECK(next.remaining == 5 - usage);
      if (hostile.runs) {
        CHECK(servers.fake.ran_anyway() > ran_before);
        CHECK((usage == 2 || usage == 3));
      } else {
        CHECK(usage == 2);
      }
    }
  }
}

TEST_CASE("hostile redis, rate limits: allow_many() gives every request the policy's answer in time, then recovers",
          "[redis][hostile]") {
  Servers servers;
  for (const FailurePolicy policy : policies) {
    RedisRateLimiter limiter(Quota{5, 10s}, RedisStorage(hostile_options(servers.fake, policy)));
    int round = 0;
    for (const Hostile& hostile : hostile_answers(Expects::rate_decision)) {
      INFO(name_of(policy) << ", " << hostile.name);
      const std::string tag = std::to_string(round++);
      const std::vector<std::string> users = {"a-" + tag, "b-" + tag, "c-" + tag};
      const std::vector<Request> requests = {{users[0], "m"}, {users[1], "m"}, {users[2], "m"}};
      for (const Decision& decision : limiter.allow_many(requests)) REQUIRE_FALSE(decision.degraded);

      servers.fake.arm(hostile.fault);
      std::chrono::milliseconds took{};
      const std::vector<Decision> decisions = timed(took, [&] { return limiter.allow_many(requests); });
      servers.fake.disarm();
      CHECK(took <= bound);
      REQUIRE(decisions.size() == 3);
      for (const Decision& decision : decisions) {
        CHECK(decision.degraded);
        CHECK(decision.allowed == (policy != FailurePolicy::fail_closed));
        if (policy == FailurePolicy::fail_closed) CHECK(decision.status == Status::backend_unavailable);
      }
      CHECK(last_error_type(limiter.storage()) == hostile.error_type);

      const std::vector<Decision> next = limiter.allow_many(requests);
      REQUIRE(next.size() == 3);
      for (std::size_t i = 0; i < next.size(); ++i) {
        CHECK_FALSE(next[i].degraded);
        CHECK(next[i].allowed);
        const std::uint64_t usage = limiter.usage(users[i], "m");
        CHECK(next[i].remaining == 5 - usage);
        if (!hostile.runs) CHECK(usage == 2);
      }
    }
  }
}

TEST_CASE("hostile redis, rate limits: settle() throws BackendError in time (local: answers), then settles exactly",
          "[redis][hostile]") {
  Servers servers;
  for (const FailurePolicy policy : policies) {
    RedisMultiTierRateLimiter limiter(settle_tiers(), RedisStorage(hostile_options(servers.fake, policy)));
    int round = 0;
    for (const Hostile& hostile : hostile_answers(Expects::count)) {
      INFO(name_of(policy) << ", " << hostile.name);
      const std::string user = "u-" + std::to_string(round++);
      REQUIRE_FALSE(limiter.allow({.user = user, .model = "m", .cost = 500, .request_id = "r"}).degraded);

      servers.fake.arm(hostile.fault);
      std::chrono::milliseconds took{};
      const std::string thrown = timed(took, [&] { return thrown_by([&] { limiter.settle(user, "m", "r", 300); }); });
      servers.fake.disarm();
      CHECK(took <= bound);
      // local answers from its own store, which never saw this request: nothing to settle there.
      CHECK(thrown == (policy == FailurePolicy::local ? "none" : hostile.error_type));
      CHECK(last_error_type(limiter.storage()) == hostile.error_type);

      CHECK(limiter.settle(user, "m", "r", 300));  // Redis holds the reservation (settled already if dribbled)
      CHECK(limiter.usage("tpm", user, "m") == 300);
      CHECK(limiter.usage("rpm", user, "m") == 1);
    }
  }
}

TEST_CASE("hostile redis, caps: try_acquire() under every fault and policy answers in time, then counts exactly",
          "[redis][hostile][concurrency]") {
  Servers servers;
  for (const FailurePolicy policy : policies) {
    RedisConcurrencyLimiter limiter({{"per-user", Scope::user, 3, 10s}},
                                    RedisConcurrencyStorage(hostile_options(servers.fake, policy)));
    int round = 0;
    for (const Hostile& hostile : hostile_answers(Expects::cap_decision)) {
      INFO(name_of(policy) << ", " << hostile.name);
      const std::string user = "u-" + std::to_string(round++);
      Permit held = limiter.try_acquire(user, "m");
      REQUIRE((held.acquired() && !held.degraded()));

      servers.fake.arm(hostile.fault);
      std::chrono::milliseconds took{};
      Permit faulted = timed(took, [&] { return limiter.try_acquire(user, "m"); });
      servers.fake.disarm();
      CHECK(took <= bound);
      CHECK(faulted.degraded());
      CHECK(faulted.acquired() == (policy != FailurePolicy::fail_closed));
      if (policy == FailurePolicy::fail_closed) CHECK(faulted.status() == Status::backend_unavailable);
      CHECK(last_error_type(limiter.storage()) == hostile.error_type);
      faulted.release();  // fail_open: releases in Redis in case it ran; local: in process

      // Disarmed: Redis decides, and holds exactly the two live permits (a call that ran anyway was released,
      // by the permit under fail_open, else from the storage's queue with this very call).
      Permit next = limiter.try_acquire(user, "m");
      CHECK(next.acquired());
      CHECK_FALSE(next.degraded());
      CHECK(limiter.in_flight("per-user", user, "m") == 2);
      CHECK(limiter.storage().pending_releases() == 0);
    }
  }
}

TEST_CASE("hostile redis, caps: renew() and release() under every fault and policy end in time, then recover",
          "[redis][hostile][concurrency]") {
  Servers servers;
  for (const FailurePolicy policy : policies) {
    const RedisOptions options = hostile_options(servers.fake, policy);
    RedisConcurrencyLimiter limiter({{"per-user", Scope::user, 3, 10s}}, RedisConcurrencyStorage(options));
    int round = 0;
    for (const Hostile& hostile : hostile_answers(Expects::count)) {
      INFO(name_of(policy) << ", " << hostile.name);
      const std::string user = "u-" + std::to_string(round++);
      Permit permit = limiter.try_acquire(user, "m");
      REQUIRE((permit.acquired() && !permit.degraded()));

      // renew: assumed under fail_open and local, thrown under fail_closed.
      servers.fake.arm(hostile.fault);
      std::chrono::milliseconds took{};
      bool renewed = false;
      const std::string thrown = timed(took, [&] { return thrown_by([&] { renewed = permit.renew(); }); });
      servers.fake.disarm();
      CHECK(took <= bound);
      CHECK(thrown == (policy == FailurePolicy::fail_closed ? hostile.error_type : "none"));
      CHECK(renewed == (policy != FailurePolicy::fail_closed));
      CHECK(last_error_type(limiter.storage()) == hostile.error_type);
      const std::uint64_t degraded = limiter.metrics().degraded;
      CHECK(permit.renew());  // Redis renews it: not assumed, so not degraded
      CHECK(limiter.metrics().degraded == degraded);

      // release: never throws, whatever the policy.
      const auto hex = permit.id().hex();
      const std::string member(hex.data(), hex.size());
      const std::uint64_t release_errors = limiter.metrics().release_errors;
      servers.fake.arm(hostile.fault);
      timed(took, [&] { permit.release(); });
      servers.fake.disarm();
      CHECK(took <= bound);
      CHECK_FALSE(permit.acquired());

      // Disarmed: Redis decides the next permit, and counts what it holds. A release that met a connection
      // fault or a timeout was queued and goes out with this call; one the hostile server answered (instead
      // of running it) counts as delivered, and its lease runs out on its own.
      Permit next = limiter.try_acquire(user, "m");
      CHECK(next.acquired());
      CHECK_FALSE(next.degraded());
      const std::string key = options.key_prefix + ":{u=" + user + "}:cc:u:per-user";
      const RawReply score = servers.real.command({"ZSCORE", key, member});
      REQUIRE(score);
      const bool still_held = score->type == REDIS_REPLY_STRING;
      const bool answered = hostile.fault.act == Act::answer;
      if (!answered) CHECK_FALSE(still_held);
      if (!answered) CHECK(limiter.metrics().release_errors > release_errors);
      CHECK(limiter.in_flight("per-user", user, "m") == (still_held ? 2u : 1u));
      CHECK(limiter.storage().pending_releases() == 0);
    }
  }
}

TEST_CASE("hostile redis: faults during the connect handshake cost one call within connect_timeout, then it works",
          "[redis][hostile]") {
  Servers servers;
  const std::vector<Hostile> handshake_faults = {
      answer("SCRIPT LOAD answered with an integer", ":1\r\n"),
      answer("SCRIPT LOAD answered with nested arrays", "*1\r\n*1\r\n:1\r\n"),
      answer("garbage", "this is not RESP at all\r\n"),
      answer("-ERR", "-ERR hostile\r\n"),
      answer("-OOM", "-OOM command not allowed when used memory > 'maxmemory'.\r\n"),
      {"cut in the middle, then a close", fault(Act::answer_then_close, "$40\r\nabc"), "ConnectionError"},
      {"cut in the middle, then silence", fault(Act::answer_then_silence, "$40\r\nabc"), "TimeoutError"},
      {"a 512 MB bulk length, then silence", fault(Act::answer_then_silence, "$536870912\r\n"),
       "TimeoutError"},
      {"one byte at a time", dribble(dribble_interval), "TimeoutError"},
      {"a close right after the request", fault(Act::close), "ConnectionError"},
  };
  for (const FailurePolicy policy : policies) {
    for (const Hostile& hostile : handshake_faults) {
      INFO(name_of(policy) << ", " << hostile.name);
      // A new limiter each time: its first call connects, through the fault.
      RedisRateLimiter limiter(Quota{5, 10s}, RedisStorage(hostile_options(servers.fake, policy)));
      Fault in_handshake = hostile.fault;
      in_handshake.match = Match::handshake;
      servers.fake.arm(in_handshake);
      std::chrono::milliseconds took{};
      const Decision decision = timed(took, [&] { return limiter.allow("alice", "m"); });
      servers.fake.disarm();
      CHECK(took <= bound);
      CHECK(decision.degraded);
      CHECK(decision.allowed == (policy != FailurePolicy::fail_closed));
      CHECK(last_error_type(limiter.storage()) == hostile.error_type);

      // A failed connect backs off (10 ms at first: calls meanwhile fail at once); past it, the next call
      // connects and Redis decides.
      std::this_thread::sleep_for(2 * detail::RedisConnectionPool::first_backoff);
      const Decision next = limiter.allow("alice", "m");
      CHECK_FALSE(next.degraded);
      CHECK(next.allowed);
      CHECK(next.remaining == 4);
    }
  }
}

TEST_CASE("hostile redis: a valid reply one byte per second, each within command_timeout, ends at the deadline",
          "[redis][hostile]") {
  Servers servers;
  RedisOptions options = hostile_options(servers.fake, FailurePolicy::fail_closed);
  options.connect_timeout = 200ms;
  options.command_timeout = 1500ms;  // longer than the gap between two bytes: no single read times out
  RedisRateLimiter limiter(Quota{5, 10s}, RedisStorage(options));
  REQUIRE_FALSE(limiter.allow("alice", "m").degraded);
  servers.fake.arm(dribble(1000ms));
  std::chrono::milliseconds took{};
  const Decision decision = timed(took, [&] { return limiter.allow("alice", "m"); });
  servers.fake.disarm();
  CHECK(took <= options.connect_timeout + options.command_timeout + margin);  // the reply alone takes ~30 s
  CHECK(decision.degraded);
  CHECK(decision.status == Status::backend_unavailable);
  CHECK(last_error_type(limiter.storage()) == "TimeoutError");
  const Decision next = limiter.allow("alice", "m");
  CHECK_FALSE(next.degraded);
  CHECK(next.allowed);
}

TEST_CASE("hostile redis: a pooled connection the server closed is replaced once, within the same call",
          "[redis][hostile]") {
  Servers servers;
  RedisRateLimiter limiter(Quota{5, 10s}, RedisStorage(hostile_options(servers.fake, FailurePolicy::fail_closed)));
  REQUIRE_FALSE(limiter.allow("alice", "m").degraded);  // a pooled connection
  SECTION("closed once: the call goes again on a fresh connection and Redis decides it") {
    servers.fake.arm(fault(Act::close, {}, 1));
    const Decision decision = limiter.allow("alice", "m");
    CHECK_FALSE(decision.degraded);
    CHECK(decision.remaining == 3);
    CHECK(servers.fake.faulted() == 1);
  }
  SECTION("closed every time: sent twice at most (never again on a connection opened for the call)") {
    servers.fake.arm(fault(Act::close));
    const Decision decision = limiter.allow("alice", "m");
    servers.fake.disarm();
    CHECK(decision.degraded);
    // The call and its one retry; then fail_closed's undo of what may have run, on a connection it opens.
    CHECK(servers.fake.faulted() == 3);
    CHECK(limiter.allow("alice", "m").remaining == 3);
  }
  SECTION("a reply cut in the middle is not a stale connection: not sent again") {
    servers.fake.arm(fault(Act::answer_then_close, "*5\r\n:1\r\n", 1));
    CHECK(limiter.allow("alice", "m").degraded);
  }
}
