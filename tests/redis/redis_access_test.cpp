// SPDX-License-Identifier: MIT
// Credentials and permissions, each case on its own redis-server: a wrong or missing password is an
// AuthError, a missing ACL permission a PermissionError (both with a message that says so), allow()
// degrades instead of throwing, and an ACL user limited to the prefix's keys and airl's commands works.
#include <catch2/catch.hpp>

#include "redis_test_support.hpp"

#include <airl/prometheus.hpp>
#include <airl/redis/testing_clock.hpp>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <functional>
#include <map>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

using namespace std::chrono_literals;
using namespace airl;
using namespace airl::test;

namespace {

// The commands airl needs: its own (SCRIPT LOAD, EVALSHA, SCAN, UNLINK) and those its script calls.
const std::vector<std::string> airl_commands = {
    "+script|load", "+evalsha", "+eval", "+scan", "+unlink", "+time", "+zrange", "+zrangebyscore", "+zremrangebyscore",
    "+zcard", "+zscore", "+zadd", "+hget", "+hmget", "+hdel", "+hincrby", "+hset", "+del", "+pexpire", "+pttl", "+zrem"};

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

TEST_CASE("a password never shows in an error, the last backend error or the metrics text", "[redis][faults]") {
  RedisServer server({"--requirepass", "the-right-one"});
  RedisOptions options = options_for(server, FailurePolicy::fail_open);
  options.password = "hunter2-wrong-secret";
  options.username = "default";
  RedisRateLimiter limiter(Quota{3, 10s}, RedisStorage(options));
  const std::string message = message_of<AuthError>([&] { limiter.usage("alice", "m"); });
  CHECK(limiter.allow("alice", "m").degraded);
  const std::optional<BackendFault> fault = limiter.storage().last_backend_error();
  REQUIRE(fault.has_value());
  const std::string metrics = airl::prometheus::text(limiter.metrics()) +
                              airl::prometheus::text(limiter.storage().topology_metrics());
  for (const std::string& text : {message, fault->message, fault->type, metrics}) {
    INFO(text);
    CHECK(text.find("hunter2") == std::string::npos);
    CHECK(text.find("the-right-one") == std::string::npos);
  }
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

// ---------------------------------------------------------------------------------------------------------------
// A script refused one command by ACL leaves nothing half-written. Redis checks a script's ACL one command at
// a time, as each runs; before the write queue (detail/script_text.hpp) a user without PEXPIRE got the entry
// written and the call failed, leaving a key without TTL for good. Each command the two scripts call is taken
// away in turn; every call that fails must leave the keys as they were, and no key may ever lack a TTL.

namespace {

// The commands a script's text calls: redis.call('X', ...) and write('X', ...), upper case.
std::set<std::string> commands_of(std::string_view script) {
  std::set<std::string> found;
  for (const std::string_view opener : {std::string_view("redis.call('"), std::string_view("write('")}) {
    for (std::size_t at = script.find(opener); at != std::string_view::npos; at = script.find(opener, at + 1)) {
      const std::size_t start = at + opener.size();
      found.emplace(script.substr(start, script.find('\'', start) - start));
    }
  }
  return found;
}

std::string lower(std::string text) {
  std::transform(text.begin(), text.end(), text.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return text;
}

// Every key under `prefix` with its content (sorted set: members and scores; hash: fields and values, sorted).
std::map<std::string, std::string> contents(const RedisServer& server, const std::string& prefix) {
  std::map<std::string, std::string> all;
  for (const std::string& key : server.keys_with_prefix(prefix)) {
    const std::string type = text_of(*must(server, {"TYPE", key}));
    const RawReply reply = must(server, type == "zset" ? std::vector<std::string>{"ZRANGE", key, "0", "-1", "WITHSCORES"}
                                                       : std::vector<std::string>{"HGETALL", key});
    std::vector<std::string> pairs;
    for (std::size_t i = 0; i + 1 < reply->elements; i += 2) {
      pairs.push_back(text_of(*reply->element[i]) + "=" + text_of(*reply->element[i + 1]));
    }
    std::sort(pairs.begin(), pairs.end());
    std::string text = type + ":";
    for (const std::string& pair : pairs) text += " " + pair;
    all[key] = text;
  }
  return all;
}

// Keys under `prefix` without a TTL.
std::vector<std::string> without_ttl(const RedisServer& server, const std::string& prefix) {
  std::vector<std::string> keys;
  for (const std::string& key : server.keys_with_prefix(prefix)) {
    if (pttl(server, key) < 0) keys.push_back(key);
  }
  return keys;
}

// One call of a scenario: runs it, says whether it failed in Redis, and the message when it threw.
struct Outcome {
  bool failed = false;
  std::string message;
};

// The message of a BackendError `call` throws, as a failed Outcome; a call that returns is not failed.
template <class Call>
Outcome thrown_by(Call&& call) {
  try {
    call();
  } catch (const BackendError& error) {
    return {true, error.what()};
  }
  return {};
}

}  // namespace

TEST_CASE("a user refused any one command the scripts call gets the call failed with nothing written",
          "[redis][faults][acl]") {
  RedisServer server;
  std::set<std::string> commands = commands_of(detail::sliding_window_script);
  const std::set<std::string> caps_commands = commands_of(detail::concurrency_script);
  commands.insert(caps_commands.begin(), caps_commands.end());
  for (const char* known : {"ZADD", "PEXPIRE", "HSET", "HINCRBY", "ZREM", "DEL", "TIME", "ZSCORE", "PTTL"}) {
    CHECK(commands.count(known) == 1);  // the scan of the texts finds what they are known to call
  }
  for (const std::string& command : commands) {  // and the documented ACL list grants each of them
    INFO(command);
    CHECK(std::count(airl_commands.begin(), airl_commands.end(), "+" + lower(command)) == 1);
  }

  for (const std::string& missing : commands) {
    INFO("without " << missing);
    const std::string prefix = "acl-" + lower(missing), user = "u-" + lower(missing);
    std::vector<std::string> rules = {"~" + prefix + "*", "-@all"};
    for (const std::string& rule : airl_commands) {
      if (rule != "+" + lower(missing)) rules.push_back(rule);
    }
    add_user(server, user, rules);
    RedisOptions admin = options_for(server, FailurePolicy::fail_closed, prefix);
    admin.command_timeout = admin.connect_timeout = 1000ms;
    RedisOptions limited = as_user(server, user, prefix);
    limited.on_failure = FailurePolicy::fail_open;
    limited.command_timeout = limited.connect_timeout = 1000ms;

    int failed = 0;
    const auto check = [&](const char* what, const std::function<Outcome()>& call) {
      INFO(what);
      const auto before = contents(server, prefix);
      const Outcome outcome = call();
      if (outcome.failed) {
        ++failed;
        CHECK(contents(server, prefix) == before);  // nothing written, nothing dropped
        if (!outcome.message.empty()) {  // the server's refusal, as a BackendError
          INFO(outcome.message);
          CHECK(outcome.message.find("airl: Redis refused") != std::string::npos);
          CHECK((outcome.message.find("NOPERM") != std::string::npos ||
                 outcome.message.find("can't run this command") != std::string::npos));
        }
      }
      CHECK(without_ttl(server, prefix).empty());
    };

    // Rate limits on a test clock, so entries expire without waiting: weighted and unit buckets, expiry,
    // admission, replay, settle, refund, a denial that computes its retry, usage, and a bucket emptied.
    ManualClock clock{1000s};
    const std::vector<Tier> tiers = {{"tpm", Scope::user, {100, 10s}}, {"rpm", Scope::user_model, {50, 10s}, Unit::requests}};
    RedisMultiTierRateLimiter setup(tiers, testing::RedisTestClock::storage(admin, clock));
    REQUIRE(setup.allow(reserve("alice", "m", 5, "old-1")).allowed);
    REQUIRE(setup.allow(reserve("alice", "m", 1, "old-2")).allowed);
    clock.advance(6s);
    REQUIRE(setup.allow(reserve("alice", "m", 3, "mid")).allowed);
    REQUIRE(setup.settle("alice", "m", "mid", 4));
    clock.advance(5s);  // old-1 and old-2 leave the window at the next call
    RedisMultiTierRateLimiter rates(tiers, testing::RedisTestClock::storage(limited, clock));
    check("allow", [&] { return Outcome{rates.allow(reserve("alice", "m", 2, "new")).degraded, {}}; });
    check("allow (replay)", [&] { return Outcome{rates.allow(reserve("alice", "m", 2, "new")).degraded, {}}; });
    check("settle", [&] { return thrown_by([&] { rates.settle("alice", "m", "new", 7); }); });
    check("allow (denied)", [&] { return Outcome{rates.allow(costing("alice", "m", 95)).degraded, {}}; });
    check("refund", [&] { return thrown_by([&] { rates.refund("alice", "m", "mid"); }); });
    check("settle to 1", [&] { return thrown_by([&] { rates.settle("alice", "m", "new", 1); }); });
    check("usage", [&] { return thrown_by([&] { rates.usage("tpm", "alice", "m"); }); });
    clock.advance(20s);  // everything left the window: the next call empties the buckets
    check("allow (emptied)", [&] { return Outcome{rates.allow("alice", "m").degraded, {}}; });
    // On Redis's own clock (TIME), the production script.
    RedisRateLimiter production(Quota{5, 10s}, RedisStorage(limited));
    check("allow (production)", [&] { return Outcome{production.allow("dave", "m").degraded, {}}; });

    // Concurrency caps: acquire, renew, a denial (its retry reads the earliest lease), release.
    const std::vector<ConcurrencyCap> caps = {{"per_user", Scope::user, 1, 10s}};
    RedisConcurrencyLimiter holder(caps, RedisConcurrencyStorage(admin));
    Permit held = holder.try_acquire("bob", "m");
    REQUIRE(held.acquired());
    RedisConcurrencyLimiter limiter(caps, RedisConcurrencyStorage(limited));
    const auto errors = [&] { return limiter.metrics().backend_errors; };
    Permit first;
    check("try_acquire", [&] {
      first = limiter.try_acquire("alice", "m");
      return Outcome{first.degraded(), {}};
    });
    check("renew", [&] {
      const auto before = errors();
      first.renew();
      return Outcome{errors() > before, {}};
    });
    check("try_acquire (full)", [&] {
      Permit second = limiter.try_acquire("bob", "m");
      const bool degraded = second.degraded();
      second.abandon();  // no release: only this call is under test
      return Outcome{degraded, {}};
    });
    check("release", [&] {
      const auto before = errors();
      first.release();
      return Outcome{errors() > before, {}};
    });
    CHECK(failed > 0);  // the missing command was reached, and refused
  }
}
