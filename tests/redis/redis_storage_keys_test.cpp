// SPDX-License-Identifier: MIT
// What RedisStorage leaves in Redis, read back over a raw connection: every key starts with key_prefix and
// carries a TTL of at most its window, idle keys vanish, ids with separators never share a key, and
// reset() removes exactly the keys it should (found with SCAN).
#include <catch2/catch.hpp>

#include "redis_test_support.hpp"

#include <algorithm>
#include <chrono>
#include <iterator>
#include <set>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

using namespace std::chrono_literals;
using namespace std::string_literals;
using namespace airl;
using namespace airl::test;

namespace {

RedisStorage storage_on(const RedisServer& server, const std::string& prefix) {
  RedisOptions options = options_for(server, FailurePolicy::fail_closed, prefix);
  options.command_timeout = 1000ms;
  options.connect_timeout = 1000ms;
  return RedisStorage(options);
}

// Tiers on every scope, so one request writes a key of each kind.
std::vector<Tier> every_scope(std::chrono::milliseconds window) {
  return {{"per_pair", Scope::user_model, {100, window}},
          {"per_user", Scope::user, {100, window + 100ms}},
          {"per_model", Scope::model, {100, window + 200ms}},
          {"everyone", Scope::global, {100, window + 300ms}}};
}

std::set<std::string> key_set(const RedisServer& server, const std::string& prefix) {
  const std::vector<std::string> keys = server.keys_with_prefix(prefix);
  return {keys.begin(), keys.end()};
}

// The keys of a bucket: its log, and its costs hash once it has held an entry whose cost is not 1
// (a bucket of cost-1 entries keeps no costs hash: its sum is the log's size).
std::set<std::string> keys_of(const std::string& prefix, const BucketRef& bucket, bool weighted = false) {
  const std::string log = redis_key_of(prefix, bucket);
  if (!weighted) return {log};
  return {log, log + ":c"};
}

}  // namespace

TEST_CASE("every key carries a TTL of at most its tier's window, and idle keys vanish after it", "[redis]") {
  const std::string prefix = unique_key_prefix();
  RedisMultiTierRateLimiter limiter(every_scope(300ms), storage_on(shared_redis(), prefix));
  const auto written = std::chrono::steady_clock::now();
  REQUIRE(limiter.allow(costing("alice", "m", 3)).allowed);
  REQUIRE(limiter.allow(with_id("alice", "m", "req-1")).allowed);

  const std::vector<std::string> keys = shared_redis().keys_with_prefix(prefix);
  REQUIRE(keys.size() == 8);  // 4 buckets, each a log and (a cost-3 entry went in) its costs
  for (const Tier& tier : limiter.tiers()) {
    for (const std::string& key : keys_of(prefix, {tier.scope, tier.name, "alice", "m"}, /*weighted=*/true)) {
      INFO(key);
      const long long ttl = pttl(shared_redis(), key);
      CHECK(ttl > 0);
      CHECK(ttl <= tier.quota.window.count());
    }
  }
  // Still there half a window later...
  std::this_thread::sleep_until(written + 150ms);
  CHECK(shared_redis().keys_with_prefix(prefix).size() == 8);
  // ...and gone soon after the longest window (600 ms), without anyone calling the limiter.
  const bool vanished = eventually([&] { return shared_redis().keys_with_prefix(prefix).empty(); }, 2000ms);
  const auto took = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - written);
  CHECK(vanished);
  CHECK(took >= 550ms);
  CHECK(took <= 1200ms);
}

TEST_CASE("every key written, whatever the scope, ids, cost or request id, starts with key_prefix", "[redis]") {
  RedisServer server;  // its own server: every key in it must be ours
  const std::string prefix = "tenant-7:airl";
  RedisMultiTierRateLimiter limiter(every_scope(10s), storage_on(server, prefix));
  for (const std::string& user : {"alice"s, "a:b"s, "{x}"s, "\0"s, "é"s, "*"s}) {
    CHECK(limiter.allow(costing(user, "m:1", 2)).allowed);
    CHECK(limiter.allow(with_id(user, "{m}", "req\0{1}"s)).allowed);
  }
  CHECK(limiter.usage("per_user", "a:b", "m:1") == 3);
  limiter.reset("alice");
  limiter.reset("é", "m:1");

  const std::vector<std::string> keys = server.keys_with_prefix("");
  CHECK(keys.size() > 8);
  for (const std::string& key : keys) {
    INFO(key);
    CHECK(key.starts_with(prefix + ":"));
  }
}

TEST_CASE("ids with ':', '{', '}' and NUL never collide, and Redis holds the encoded names", "[redis]") {
  const std::string prefix = unique_key_prefix();
  RedisRateLimiter limiter(Quota{1, 30s}, storage_on(shared_redis(), prefix));
  const std::pair<std::string, std::string> pairs[] = {
      {"a:b", "c"}, {"a", "b:c"}, {"a{b}", "c"}, {"a", "{b}c"}, {"a}", "c"}, {"a\0b"s, "c"}, {"a", "\0b:c"s},
      {"a\0"s, "b"}, {"a", "\0b"s}, {"%3A", "c"}, {":", "c"}};
  std::set<std::string> expected;
  for (const auto& [user, model] : pairs) {
    INFO("user " << user.size() << " bytes, model " << model.size() << " bytes");
    CHECK(limiter.allow(user, model).allowed);  // its own bucket: the one slot is free
    const std::set<std::string> mine = keys_of(prefix, {Scope::user_model, "default", user, model});
    expected.insert(mine.begin(), mine.end());
  }
  for (const auto& [user, model] : pairs) CHECK_FALSE(limiter.allow(user, model).allowed);
  CHECK(key_set(shared_redis(), prefix) == expected);
  CHECK(expected.size() == std::size(pairs));  // one log each (cost-1 entries: no costs hash)
  CHECK(expected.count(prefix + ":{u=a%3Ab}:um:default:c") == 1);
  CHECK(expected.count(prefix + ":{u=a}:um:default:b%3Ac") == 1);
  CHECK(expected.count(prefix + ":{u=a%7Bb%7D}:um:default:c") == 1);
  CHECK(expected.count(prefix + ":{u=a%00b}:um:default:c") == 1);
  CHECK(expected.count(prefix + ":{u=a}:um:default:%00b%3Ac") == 1);
}

TEST_CASE("reset(user) removes every key of that user and no key of any other ('al' vs 'alice')", "[redis]") {
  const std::string prefix = unique_key_prefix();
  RedisMultiTierRateLimiter limiter(every_scope(30s), storage_on(shared_redis(), prefix));
  const std::vector<std::string> users = {"al", "alice", "a", "*", "al*", "al?", "[al]", "{al}"};
  for (const std::string& user : users) {
    for (const std::string_view model : {"m1", "m2"}) REQUIRE(limiter.allow(user, model).allowed);
  }
  const auto user_keys = [&](const std::string& user) {
    std::set<std::string> keys;
    for (const std::string_view model : {"m1", "m2"}) {
      for (const auto& part : {keys_of(prefix, {Scope::user_model, "per_pair", user, model}),
                               keys_of(prefix, {Scope::user, "per_user", user, ""})}) {
        keys.insert(part.begin(), part.end());
      }
    }
    return keys;
  };
  const std::set<std::string> before = key_set(shared_redis(), prefix);
  REQUIRE(before.size() == users.size() * 3 + 2 + 1);  // logs: per user 2 pairs + 1 user; 2 models; 1 global

  for (const std::string& user : {"*"s, "al*"s, "al"s}) {
    INFO("reset(" << user << ")");
    const std::set<std::string> was = key_set(shared_redis(), prefix);
    limiter.reset(user);
    std::set<std::string> left = key_set(shared_redis(), prefix);
    const std::set<std::string> gone = user_keys(user);
    for (const std::string& key : gone) CHECK(left.count(key) == 0);
    // Nothing else went: what is left plus what this user had is what there was before this reset.
    left.insert(gone.begin(), gone.end());
    CHECK(left == was);
    CHECK(limiter.usage("per_user", user, "m1") == 0);
  }
  CHECK(key_set(shared_redis(), prefix).size() == before.size() - 3 * 3);
  for (const std::string& user : {"alice"s, "a"s, "al?"s, "[al]"s, "{al}"s}) {
    INFO(user);
    CHECK(limiter.usage("per_user", user, "m1") == 2);
    CHECK(limiter.usage("per_pair", user, "m2") == 1);
  }
  CHECK(limiter.usage("per_model", "al", "m1") == users.size());  // model and global buckets are nobody's
  CHECK(limiter.usage("everyone", "al", "m1") == 2 * users.size());
}

TEST_CASE("reset(user, model) removes only that pair's keys", "[redis]") {
  const std::string prefix = unique_key_prefix();
  RedisMultiTierRateLimiter limiter(every_scope(30s), storage_on(shared_redis(), prefix));
  for (const std::string_view user : {"al", "alice"}) {
    for (const std::string_view model : {"m1", "m2"}) REQUIRE(limiter.allow(user, model).allowed);
  }
  const std::set<std::string> before = key_set(shared_redis(), prefix);
  limiter.reset("alice", "m1");
  std::set<std::string> after = key_set(shared_redis(), prefix);
  const std::set<std::string> pair = keys_of(prefix, {Scope::user_model, "per_pair", "alice", "m1"});
  for (const std::string& key : pair) CHECK(after.count(key) == 0);
  after.insert(pair.begin(), pair.end());
  CHECK(after == before);
  CHECK(limiter.usage("per_pair", "alice", "m1") == 0);
  CHECK(limiter.usage("per_pair", "alice", "m2") == 1);
  CHECK(limiter.usage("per_user", "alice", "m1") == 2);
  CHECK(limiter.usage("per_pair", "al", "m1") == 1);
}

TEST_CASE("usage() reads the sum of costs still in the window, from any replica", "[redis]") {
  const std::string prefix = unique_key_prefix();
  RedisRateLimiter writer(Quota{100, 400ms}, storage_on(shared_redis(), prefix));
  RedisRateLimiter reader(Quota{100, 400ms}, storage_on(shared_redis(), prefix));
  CHECK(reader.usage("alice", "m") == 0);
  REQUIRE(writer.allow(costing("alice", "m", 7)).allowed);
  std::this_thread::sleep_for(200ms);
  REQUIRE(writer.allow(costing("alice", "m", 5)).allowed);
  CHECK(reader.usage("alice", "m") == 12);
  CHECK(reader.usage("alice", "other") == 0);
  // The first entry leaves the window 400 ms after it was admitted; the second stays ~200 ms longer.
  CHECK(eventually([&] { return reader.usage("alice", "m") == 5; }, 600ms));
  CHECK(eventually([&] { return reader.usage("alice", "m") == 0; }, 600ms));
}
