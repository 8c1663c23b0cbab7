// SPDX-License-Identifier: MIT
// Concurrency caps on Redis only (RedisConcurrencyStorage): each scope's sorted set and TTL, the script
// reloaded after SCRIPT FLUSH and its refusals, a process that dies holding a permit, workers forked from one
// limiter, a rate limiter's reset beside the caps, a paused server, an unreachable one under each failure
// policy, and a release that fails. The cases both backends share are in
// tests/ai_serving/concurrency_limiter_test.cpp. Every wait is bounded: forked children are reaped with a
// deadline and killed past it.
#include <catch2/catch.hpp>

#include "caps_support.hpp"
#include "child_process.hpp"
#include "redis_test_support.hpp"

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdint>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <poll.h>
#include <unistd.h>

using namespace std::chrono_literals;
using namespace airl::test;
using airl::ConcurrencyCap;
using airl::Permit;
using airl::Scope;

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

TEMPLATE_TEST_CASE("redis: try_acquire() with an id already held throws PermitIdInUse and takes nothing",
                   "[concurrency][redis][validation]", RedisCaps, RedisCapsIn<RedisMode::cluster>,
                   RedisCapsIn<RedisMode::sentinel>) {
  TestType backend;  // on a cluster, bob's scope and the global one are two slots: bob's lease is given back
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
