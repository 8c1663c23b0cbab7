// SPDX-License-Identifier: MIT
// Credentials and permissions, each case on its own redis-server: a wrong or missing password is an
// AuthError, a missing ACL permission a PermissionError (both with a message that says so), allow()
// degrades instead of throwing, and an ACL user limited to the prefix's keys and airl's commands works.
#include <catch2/catch.hpp>

#include "redis_test_support.hpp"

#include <chrono>
#include <string>
#include <vector>

using namespace std::chrono_literals;
using namespace airl;
using namespace airl::test;

namespace {

// The commands airl needs: its own (SCRIPT LOAD, EVALSHA, SCAN, UNLINK) and those its script calls.
const std::vector<std::string> airl_commands = {
    "+script|load", "+evalsha", "+eval", "+scan", "+unlink", "+time", "+zrange", "+zrangebyscore", "+zremrangebyscore",
    "+zcard", "+zscore", "+zadd", "+hget", "+hmget", "+hdel", "+hincrby", "+hset", "+del", "+pexpire", "+pttl", "+exists"};

void add_user(const RedisServer& server, const std::string& name, std::vector<std::string> rules) {
  std::vector<std::string> command = {"ACL", "SETUSER", name, "on", ">pw", "resetchannels"};
  command.insert(command.end(), rules.begin(), rules.end());
  must(server, command);
}

RedisOptions as_user(const RedisServer& server, const std::string& user, const std::string& prefix) {
  RedisOptions options = options_for(server, FailurePolicy::fail_closed, prefix);
  options.username = user;
  options.password = "pw";
  return options;
}

// The message of the exception `call` throws, checked to be an E; "" when it throws nothing or another type.
template <class E, class Call>
std::string message_of(Call&& call) {
  try {
    call();
  } catch (const E& error) {
    return error.what();
  } catch (const std::exception& error) {
    FAIL_CHECK("threw another exception type: " << error.what());
    return "";
  }
  FAIL_CHECK("threw nothing");
  return "";
}

}  // namespace

TEST_CASE("a wrong password is an AuthError that says so, every time, and allow() degrades", "[redis][faults]") {
  RedisServer server({"--requirepass", "secret"});
  RedisOptions options = options_for(server, FailurePolicy::fail_closed);
  options.password = "wrong";
  RedisRateLimiter limiter(Quota{3, 10s}, RedisStorage(options));

  const std::string message = message_of<AuthError>([&] { limiter.usage("alice", "m"); });
  INFO(message);
  CHECK(message.find("AUTH") != std::string::npos);
  CHECK(message.find("WRONGPASS") != std::string::npos);
  // Asked again at once (inside the reconnect backoff), the answer is still an authentication failure.
  for (int i = 0; i < 3; ++i) CHECK_THROWS_AS(limiter.usage("alice", "m"), AuthError);
  CHECK_THROWS_AS(limiter.reset("alice"), AuthError);

  const Decision decision = limiter.allow("alice", "m");
  CHECK_FALSE(decision.allowed);
  CHECK(decision.degraded);
  CHECK(decision.reason == backend_unavailable_reason);
  CHECK(limiter.metrics().backend_errors == 6);  // every failed call: 4 usage(), 1 reset(), 1 allow()
}

TEST_CASE("no password for a server that requires one is an AuthError, the right one works", "[redis][faults]") {
  RedisServer server({"--requirepass", "secret"});
  RedisOptions options = options_for(server, FailurePolicy::fail_closed);
  {
    RedisRateLimiter limiter(Quota{3, 10s}, RedisStorage(options));
    const std::string message = message_of<AuthError>([&] { limiter.usage("alice", "m"); });
    INFO(message);
    CHECK(message.find("NOAUTH") != std::string::npos);
    CHECK(limiter.allow("alice", "m").degraded);
  }
  options.password = "secret";
  RedisRateLimiter limiter(Quota{3, 10s}, RedisStorage(options));
  const Decision decision = limiter.allow("alice", "m");
  CHECK(decision.allowed);
  CHECK_FALSE(decision.degraded);
  CHECK(limiter.usage("alice", "m") == 1);
}

TEST_CASE("AUTH and SELECT are applied on every connect, also after a server restart", "[redis][faults]") {
  RedisServer server({"--requirepass", "secret"});
  RedisOptions options = options_for(server, FailurePolicy::fail_closed);
  options.password = "secret";
  options.database = 3;
  RedisRateLimiter limiter(Quota{5, 10s}, RedisStorage(options));
  REQUIRE(limiter.allow("alice", "m").allowed);
  server.kill();
  CHECK(limiter.allow("alice", "m").degraded);
  server.start();
  CHECK(eventually([&] { return !limiter.allow("alice", "m").degraded; }, 3000ms, 5ms));
  CHECK(limiter.usage("alice", "m") == 1);
  // The keys are in database 3 of the restarted server, none in database 0.
  RedisOptions db0 = options;
  db0.database = 0;
  RedisRateLimiter in_db0(Quota{5, 10s}, RedisStorage(db0));
  CHECK(in_db0.usage("alice", "m") == 0);
}

TEST_CASE("an ACL user limited to the prefix's keys and airl's commands can do everything airl does",
          "[redis][faults]") {
  RedisServer server;
  std::vector<std::string> rules = {"~airl-acl*", "-@all"};
  rules.insert(rules.end(), airl_commands.begin(), airl_commands.end());
  add_user(server, "limited", rules);

  RedisMultiTierRateLimiter limiter({{"per_pair", Scope::user_model, {2, 10s}}, {"per_user", Scope::user, {3, 10s}}},
                                    RedisStorage(as_user(server, "limited", "airl-acl")));
  CHECK(limiter.allow(costing("alice", "m1", 1)).allowed);
  CHECK(limiter.allow(with_id("alice", "m1", "req-1")).allowed);
  CHECK(limiter.allow(with_id("alice", "m1", "req-1")).replayed);
  const Decision full = limiter.allow("alice", "m1");
  CHECK_FALSE(full.allowed);
  CHECK_FALSE(full.degraded);
  CHECK(full.reason == "per_pair");
  CHECK(limiter.usage("per_user", "alice", "m1") == 2);
  CHECK_NOTHROW(limiter.reset("alice", "m1"));
  CHECK(limiter.usage("per_pair", "alice", "m1") == 0);
  CHECK_NOTHROW(limiter.reset("alice"));
  CHECK(limiter.usage("per_user", "alice", "m1") == 0);
  must(server, {"SCRIPT", "FLUSH"});  // the NOSCRIPT reload needs only SCRIPT LOAD
  CHECK_FALSE(limiter.allow("alice", "m2").degraded);
  // A weighted entry creates a costs hash, with the commands above.
  CHECK_FALSE(limiter.allow(costing("alice", "m2", 1)).degraded);
  CHECK(limiter.usage("per_user", "alice", "m2") == 2);
  CHECK_FALSE(limiter.allow(costing("alice", "m3", 1)).degraded);
  CHECK(limiter.metrics().backend_errors == 0);
  CHECK(server.keys_with_prefix("").size() == 3);  // logs of (alice, m2), (alice, m3) and alice; no costs hash
  // A weighted entry creates the costs hashes (HSET, HINCRBY, PEXPIRE on them) within the same rights.
  const Decision weighted = limiter.allow(costing("bob", "m9", 2));
  CHECK(weighted.allowed);
  CHECK_FALSE(weighted.degraded);
  CHECK(limiter.usage("per_user", "bob", "m9") == 2);
  CHECK(server.keys_with_prefix("").size() == 7);  // + bob's pair and user logs, and their costs hashes
  // Settling (a unit-cost bucket turning weighted, PTTL for the costs' TTL) needs no other command.
  REQUIRE(limiter.allow(with_id("carl", "m1", "req-2")).allowed);
  CHECK(limiter.settle("carl", "m1", "req-2", 3));
  CHECK(limiter.usage("per_user", "carl", "m1") == 3);
  CHECK(limiter.metrics().backend_errors == 0);
}

TEST_CASE("an ACL user without rights on the keys gets a PermissionError that says so, and allow() degrades",
          "[redis][faults]") {
  RedisServer server;
  add_user(server, "no_keys", {"+@all"});                 // every command, no key pattern
  add_user(server, "other_keys", {"~elsewhere*", "+@all"});  // keys under another prefix only
  for (const std::string user : {"no_keys", "other_keys"}) {
    INFO("user " << user);
    RedisRateLimiter limiter(Quota{3, 10s}, RedisStorage(as_user(server, user, "airl-acl")));
    const std::string message = message_of<PermissionError>([&] { limiter.usage("alice", "m"); });
    INFO(message);
    CHECK(message.find("NOPERM") != std::string::npos);
    const Decision decision = limiter.allow("alice", "m");
    CHECK_FALSE(decision.allowed);
    CHECK(decision.degraded);
    CHECK(decision.reason == backend_unavailable_reason);
    CHECK(limiter.metrics().backend_errors == 2);  // the failed usage() and allow()
  }
  CHECK(server.keys_with_prefix("").empty());
}

TEST_CASE("an ACL user missing one of airl's commands gets a PermissionError naming it", "[redis][faults]") {
  RedisServer server;
  const auto without = [&](const std::string& missing) {
    std::vector<std::string> rules = {"~airl-acl*", "-@all"};
    for (const std::string& command : airl_commands) {
      if (command != missing) rules.push_back(command);
    }
    const std::string user = "lacks_" + std::to_string(missing.size()) + missing.substr(1, 3);
    add_user(server, user, rules);
    return RedisRateLimiter(Quota{3, 10s}, RedisStorage(as_user(server, user, "airl-acl")));
  };
  SECTION("SCRIPT LOAD (connect handshake)") {
    RedisRateLimiter limiter = without("+script|load");
    const std::string message = message_of<PermissionError>([&] { limiter.usage("alice", "m"); });
    INFO(message);
    CHECK(message.find("NOPERM") != std::string::npos);
    CHECK(message.find("script") != std::string::npos);
    // Asked again at once (inside the reconnect backoff), still a permission problem, not "unreachable".
    for (int i = 0; i < 2; ++i) CHECK_THROWS_AS(limiter.usage("alice", "m"), PermissionError);
    CHECK(limiter.allow("alice", "m").degraded);
  }
  SECTION("EVALSHA") {
    RedisRateLimiter limiter = without("+evalsha");
    const std::string message = message_of<PermissionError>([&] { limiter.usage("alice", "m"); });
    INFO(message);
    CHECK(message.find("NOPERM") != std::string::npos);
    CHECK(message.find("evalsha") != std::string::npos);
    CHECK(limiter.allow("alice", "m").degraded);
  }
  SECTION("SCAN (reset of a user)") {
    RedisRateLimiter limiter = without("+scan");
    CHECK_FALSE(limiter.allow("alice", "m").degraded);
    const std::string message = message_of<PermissionError>([&] { limiter.reset("alice"); });
    INFO(message);
    CHECK(message.find("NOPERM") != std::string::npos);
    CHECK(message.find("scan") != std::string::npos);
  }
  SECTION("ZADD (called by the script when it admits)") {
    RedisRateLimiter limiter = without("+zadd");
    CHECK_NOTHROW(limiter.usage("alice", "m"));  // usage's part of the script writes no entry
    const Decision decision = limiter.allow("alice", "m");
    CHECK(decision.degraded);
    CHECK(limiter.metrics().backend_errors == 1);
    CHECK(limiter.usage("alice", "m") == 0);  // the refused script wrote nothing before ZADD
  }
}
