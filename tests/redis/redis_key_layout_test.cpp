// SPDX-License-Identifier: MIT
// Redis key names (airl/redis/key_layout.hpp), without a server: every key starts with the prefix, no choice
// of id bytes makes two buckets share a key, each key has one hash tag (user, model or global), and the SCAN pattern that
// reset(user) uses matches that user's keys and nobody else's.
#include <catch2/catch.hpp>

#include <airl/redis/key_layout.hpp>

#include <algorithm>
#include <cstddef>
#include <set>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

using namespace std::literals;

namespace {

using airl::BucketRef;
using airl::Scope;

constexpr Scope all_scopes[] = {Scope::user, Scope::model, Scope::user_model, Scope::global};

std::string log_key(std::string_view prefix, Scope scope, std::string_view tier, std::string_view user,
                    std::string_view model) {
  std::string key;
  airl::detail::redis_bucket_key(key, prefix, BucketRef{scope, tier, user, model});
  return key;
}

std::string costs_key(const std::string& log) {
  std::string key;
  airl::detail::redis_costs_key(key, log);
  return key;
}

// Ids chosen to break naive layouts: separators, braces, NUL, percent signs, UTF-8, glob characters.
const std::vector<std::string> tricky_ids = {
    "a", "b", "al", "alice", "a:b", "b:c", "a:", ":a", ":", "::", "{", "}", "{a}", "a}", "{a", "}{", "a\0b"s,
    "\0"s, "a\0"s, "%", "%3A", "%7B", "%25", "%00", "é", "\xC3"s, "日本", "*", "?", "[a]", "\\", "a*", "a b", "c",
    "u", "um", "m", "g", "c:c", "x:c"};

// Redis's glob matching (stringmatchlen) for the subset SCAN MATCH patterns use: * ? [...] and \ escapes.
bool glob_match(std::string_view pattern, std::string_view text) {
  if (pattern.empty()) return text.empty();
  switch (pattern.front()) {
    case '*':
      for (std::size_t skip = 0; skip <= text.size(); ++skip) {
        if (glob_match(pattern.substr(1), text.substr(skip))) return true;
      }
      return false;
    case '?':
      return !text.empty() && glob_match(pattern.substr(1), text.substr(1));
    case '[': {
      const std::size_t close = pattern.find(']', 1);
      if (close == std::string_view::npos || text.empty()) return false;
      const std::string_view set = pattern.substr(1, close - 1);
      return set.find(text.front()) != std::string_view::npos && glob_match(pattern.substr(close + 1), text.substr(1));
    }
    case '\\':
      if (pattern.size() < 2) return !text.empty() && text.front() == '\\' && text.size() == 1;
      return !text.empty() && text.front() == pattern[1] && glob_match(pattern.substr(2), text.substr(1));
    default:
      return !text.empty() && text.front() == pattern.front() && glob_match(pattern.substr(1), text.substr(1));
  }
}

// The hash tag Redis Cluster would use: the text between the first '{' and the first '}' after it.
std::string_view hash_tag(std::string_view key) {
  const std::size_t open = key.find('{');
  if (open == std::string_view::npos) return {};
  const std::size_t close = key.find('}', open + 1);
  if (close == std::string_view::npos || close == open + 1) return {};
  return key.substr(open + 1, close - open - 1);
}

std::string encoded(std::string_view id) {
  std::string out;
  airl::detail::append_percent_encoded(out, id);
  return out;
}

}  // namespace

TEST_CASE("every Redis key starts with the prefix, for every scope and both keys of a bucket", "[redis_keys]") {
  for (const std::string_view prefix : {"airl"sv, "svc:prod"sv, "a*b?[c]"sv, "p"sv}) {
    for (const Scope scope : all_scopes) {
      for (const std::string& id : tricky_ids) {
        const std::string log = log_key(prefix, scope, id, id, id);
        CHECK(log.starts_with(prefix));
        CHECK(log.size() > prefix.size());
        CHECK(log[prefix.size()] == ':');  // the prefix is a whole component, not a string prefix of a longer one
        CHECK(costs_key(log).starts_with(log));
      }
    }
  }
}

TEST_CASE("Redis keys are printable ASCII whatever the id bytes (NUL, UTF-8, spaces)", "[redis_keys]") {
  for (const Scope scope : all_scopes) {
    for (const std::string& id : tricky_ids) {
      const std::string key = log_key("airl", scope, id, id, id);
      INFO("scope " << airl::to_string(scope) << ", id of " << id.size() << " bytes");
      CHECK(std::all_of(key.begin(), key.end(), [](char c) { return c > ' ' && c < 0x7f; }));
    }
  }
  CHECK(encoded("a\0b"s) == "a%00b");
  CHECK(encoded("é") == "%C3%A9");
  CHECK(encoded("%") == "%25");
  CHECK(encoded("azAZ09._~@+=-") == "azAZ09._~@+=-");
}

TEST_CASE("no two buckets share a Redis key, for any ids, scopes and tiers", "[redis_keys]") {
  // Every (scope, tier, user, model) the scope distinguishes, over the tricky ids: all log and costs keys differ.
  std::set<std::string> seen;
  std::size_t made = 0;
  const std::vector<std::string> tiers = {"t", "t:c", "c", "u", "t{x}", "\0"s};
  for (const Scope scope : all_scopes) {
    const bool has_user = scope == Scope::user || scope == Scope::user_model;
    const bool has_model = scope == Scope::model || scope == Scope::user_model;
    for (const std::string& tier : tiers) {
      for (const std::string& user : tricky_ids) {
        if (!has_user && user != tricky_ids.front()) continue;
        for (const std::string& model : tricky_ids) {
          if (!has_model && model != tricky_ids.front()) continue;
          const std::string log = log_key("airl", scope, tier, has_user ? user : "", has_model ? model : "");
          made += 2;
          seen.insert(log);
          seen.insert(costs_key(log));
        }
      }
    }
  }
  CHECK(seen.size() == made);
}

TEST_CASE("ids with separators cannot forge another pair's key: (a:b, c) vs (a, b:c) and friends", "[redis_keys]") {
  const std::pair<std::pair<std::string, std::string>, std::pair<std::string, std::string>> pairs[] = {
      {{"a:b", "c"}, {"a", "b:c"}},
      {{"a{b", "c"}, {"a", "{b}c"}},
      {{"a}", ":um:t:c"}, {"a", "c"}},
      {{"a\0b"s, "c"}, {"a", "\0b:c"s}},
      {{"a\0"s, "b"}, {"a", "\0b"s}},
      {{"%3A", "x"}, {":", "x"}},
      {{"a*", "b"}, {"a", "*b"}},
  };
  for (const auto& [first, second] : pairs) {
    INFO("(" << first.first << ", " << first.second << ") vs (" << second.first << ", " << second.second << ")");
    for (const Scope scope : {Scope::user_model, Scope::model, Scope::user}) {
      const std::string a = log_key("airl", scope, "t", first.first, first.second);
      const std::string b = log_key("airl", scope, "t", second.first, second.second);
      if (scope == Scope::model && first.second == second.second) continue;
      if (scope == Scope::user && first.first == second.first) continue;
      CHECK(a != b);
      CHECK(costs_key(a) != b);
      CHECK(a != costs_key(b));
    }
  }
  // A user whose id spells out the rest of another key cannot reach it either.
  CHECK(log_key("airl", Scope::user, "t", "a}:u:t", "") != log_key("airl", Scope::user, "t", "a", ""));
  CHECK(log_key("airl", Scope::user_model, "t", "a", "m:c") != costs_key(log_key("airl", Scope::user_model, "t", "a", "m")));
}

TEST_CASE("every key holds exactly one hash tag: the user's, the model's or the global one", "[redis_keys]") {
  for (const std::string& user : tricky_ids) {
    INFO("user of " << user.size() << " bytes: " << encoded(user));
    for (const Scope scope : {Scope::user, Scope::user_model}) {
      for (const std::string& model : {"m"s, "{x}"s, "}"s}) {
        const std::string log = log_key("airl", scope, "t{", user, model);
        for (const std::string& key : {log, costs_key(log)}) {
          CHECK(std::count(key.begin(), key.end(), '{') == 1);
          CHECK(std::count(key.begin(), key.end(), '}') == 1);
          CHECK(hash_tag(key) == "u=" + encoded(user));
        }
      }
    }
    // All of a user's keys (both scopes, any tier or model) share one slot.
    CHECK(hash_tag(log_key("airl", Scope::user, "a", user, "")) ==
          hash_tag(log_key("airl", Scope::user_model, "b", user, "zz")));
  }
  for (const std::string& id : tricky_ids) {
    // A model bucket's two keys share the model's slot; global buckets share one fixed slot.
    const std::string model_log = log_key("airl", Scope::model, "t}", "{u}", id);
    CHECK(hash_tag(model_log) == "m=" + encoded(id));
    CHECK(hash_tag(costs_key(model_log)) == hash_tag(model_log));
    const std::string global_log = log_key("airl", Scope::global, id, id, id);
    CHECK(hash_tag(global_log) == "g");
    CHECK(hash_tag(costs_key(global_log)) == "g");
    for (const std::string& key : {model_log, global_log}) {
      CHECK(std::count(key.begin(), key.end(), '{') == 1);
      CHECK(std::count(key.begin(), key.end(), '}') == 1);
    }
  }
}

TEST_CASE("a user's SCAN pattern never matches a model's or the global keys, whatever the names", "[redis_keys]") {
  // "m=llama" as a user must not reach the buckets of model "llama" (nor "g" the global ones).
  for (const std::string& name : {"m=llama"s, "llama"s, "g"s, "u=x"s}) {
    const std::string pattern = airl::detail::redis_user_pattern("airl", name);
    for (const std::string& key : {log_key("airl", Scope::model, "t", "", "llama"), log_key("airl", Scope::global, "t", "", ""),
                                   log_key("airl", Scope::model, "t", "", "x")}) {
      INFO("pattern " << pattern << " key " << key);
      CHECK_FALSE(glob_match(pattern, key));
    }
  }
}

TEST_CASE("the user SCAN pattern matches that user's keys only: 'al' never matches 'alice'", "[redis_keys]") {
  for (const std::string_view prefix : {"airl"sv, "svc:prod"sv, "a*b?[c]\\"sv}) {
    for (const std::string& user : tricky_ids) {
      const std::string pattern = airl::detail::redis_user_pattern(prefix, user);
      INFO("prefix " << prefix << ", pattern " << pattern);
      for (const std::string& other : tricky_ids) {
        for (const Scope scope : all_scopes) {
          for (const std::string& model : {"m"s, "x:y"s}) {
            const std::string log = log_key(prefix, scope, "t", other, model);
            const bool owned = other == user && (scope == Scope::user || scope == Scope::user_model);
            CHECK(glob_match(pattern, log) == owned);
            CHECK(glob_match(pattern, costs_key(log)) == owned);
          }
        }
      }
    }
  }
  CHECK_FALSE(glob_match(airl::detail::redis_user_pattern("airl", "al"), log_key("airl", Scope::user, "t", "alice", "")));
  CHECK_FALSE(glob_match(airl::detail::redis_user_pattern("airl", "*"), log_key("airl", Scope::user, "t", "bob", "")));
}

TEST_CASE("the user SCAN pattern matches no concurrency-cap key of the same user", "[redis_keys]") {
  // reset(user) must not free a user's in-flight slots: their keys share the hash tag but not the kind.
  const std::string pattern = airl::detail::redis_user_pattern("airl", "bob");
  CHECK(glob_match(pattern, log_key("airl", Scope::user, "t", "bob", "")));
  CHECK(glob_match(pattern, log_key("airl", Scope::user_model, "t", "bob", "m")));
  CHECK_FALSE(glob_match(pattern, "airl:{u=bob}:cc:u:cap"));
  CHECK_FALSE(glob_match(pattern, "airl:{u=bob}:cc:um:cap:m"));
}

TEST_CASE("the user SCAN pattern escapes glob characters of the prefix: 'ai*' never matches prefix 'airl'",
          "[redis_keys]") {
  const std::string bob_in_airl = log_key("airl", Scope::user, "t", "bob", "");
  CHECK_FALSE(glob_match(airl::detail::redis_user_pattern("ai*", "bob"), bob_in_airl));
  CHECK_FALSE(glob_match(airl::detail::redis_user_pattern("ai?l", "bob"), bob_in_airl));
  CHECK_FALSE(glob_match(airl::detail::redis_user_pattern("[a]irl", "bob"), bob_in_airl));
  CHECK(glob_match(airl::detail::redis_user_pattern("ai*", "bob"), log_key("ai*", Scope::user, "t", "bob", "")));
  CHECK(glob_match(airl::detail::redis_user_pattern("[a]\\", "bob"), log_key("[a]\\", Scope::user, "t", "bob", "")));
}

TEST_CASE("key prefixes: empty or with braces are refused, others accepted", "[redis_keys]") {
  CHECK_THROWS_AS(airl::detail::validate_key_prefix(""), std::invalid_argument);
  CHECK_THROWS_AS(airl::detail::validate_key_prefix("{"), std::invalid_argument);
  CHECK_THROWS_AS(airl::detail::validate_key_prefix("}"), std::invalid_argument);
  CHECK_THROWS_AS(airl::detail::validate_key_prefix("a{b}"), std::invalid_argument);
  CHECK_THROWS_AS(airl::detail::validate_key_prefix("ab}"), std::invalid_argument);
  CHECK_THROWS_WITH(airl::detail::validate_key_prefix(""), Catch::Contains("key_prefix"));
  CHECK_THROWS_WITH(airl::detail::validate_key_prefix("a{"), Catch::Contains("key_prefix"));
  CHECK_NOTHROW(airl::detail::validate_key_prefix("airl"));
  CHECK_NOTHROW(airl::detail::validate_key_prefix("svc:prod:"));
  CHECK_NOTHROW(airl::detail::validate_key_prefix("a*b?[c]"));
}
