// SPDX-License-Identifier: MIT
// Bucket keys and hashes (airl::detail::encode_bucket_key, key_matches, user_of_key, hash_bucket): binary-safe and collision-free, so no user
// can reach another user's bucket by choosing an id with separators, braces or NUL bytes in it.
#include <catch2/catch.hpp>

#include "support.hpp"

#include <airl/detail/memory/bucket_key.hpp>
#include <airl/detail/key_hash.hpp>

#include <cstdint>
#include <optional>
#include <cstring>
#include <set>
#include <string>
#include <string_view>
#include <vector>

using namespace std::literals;

namespace {

using airl::BucketRef;
using airl::Scope;

std::string key_of(Scope scope, std::string_view tier, std::string_view user, std::string_view model) {
  return airl::detail::encode_bucket_key(BucketRef{scope, tier, user, model});
}

}  // namespace

TEST_CASE("no choice of id bytes (separators, braces, NUL, UTF-8) makes two buckets share a key", "[bucket_key]") {
  // The classic "user:model" collision: ("a:b", "c") and ("a", "b:c") would both read "a:b:c".
  CHECK(key_of(Scope::user_model, "t", "a:b", "c") != key_of(Scope::user_model, "t", "a", "b:c"));
  CHECK(key_of(Scope::user_model, "t", "ab", "") != key_of(Scope::user_model, "t", "a", "b"));
  // Tier and user can trade bytes too.
  CHECK(key_of(Scope::user, "t:u", "v", "") != key_of(Scope::user, "t", "u:v", ""));

  // Braces, NUL bytes and UTF-8 are plain data as well.
  const std::vector<std::string> users = {
      "a", "a:", ":a", "{a}", "{", "}", "a\0"s, "\0a"s, "a\0b"s, "\0"s, "\0\0"s, "caf\xc3\xa9", "cafe\xcc\x81", "\xe7\x94\xa8\xe6\x88\xb7",
  };
  std::set<std::string> keys;
  for (const std::string& user : users) {
    for (const std::string& model : users) keys.insert(key_of(Scope::user_model, "tier", user, model));
  }
  CHECK(keys.size() == users.size() * users.size());  // every (user, model) pair has its own key

  // A NUL byte is kept, not treated as the end of the id.
  const std::string with_nul = key_of(Scope::user, "t", "a\0b"s, "");
  CHECK(with_nul != key_of(Scope::user, "t", "a", ""));
  CHECK(airl::detail::user_of_key(with_nul) == std::optional<std::string_view>("a\0b"sv));
}

TEST_CASE("the tier name is part of the key", "[bucket_key]") {
  CHECK(key_of(Scope::user, "rpm", "alice", "") != key_of(Scope::user, "tpm", "alice", ""));
  CHECK(key_of(Scope::global, "rpm", "", "") != key_of(Scope::global, "tpm", "", ""));
  // Same tier name and ids under different scopes are different buckets as well.
  CHECK(key_of(Scope::user, "t", "x", "x") != key_of(Scope::model, "t", "x", "x"));
}

TEST_CASE("each scope keys only on the ids it uses", "[bucket_key]") {
  SECTION("user ignores the model") {
    CHECK(key_of(Scope::user, "t", "alice", "m1") == key_of(Scope::user, "t", "alice", "m2"));
    CHECK(key_of(Scope::user, "t", "alice", "m1") != key_of(Scope::user, "t", "bob", "m1"));
  }
  SECTION("model ignores the user") {
    CHECK(key_of(Scope::model, "t", "alice", "m1") == key_of(Scope::model, "t", "bob", "m1"));
    CHECK(key_of(Scope::model, "t", "alice", "m1") != key_of(Scope::model, "t", "alice", "m2"));
  }
  SECTION("global ignores both") {
    CHECK(key_of(Scope::global, "t", "alice", "m1") == key_of(Scope::global, "t", "bob", "m2"));
  }
  SECTION("user_model uses both") {
    CHECK(key_of(Scope::user_model, "t", "alice", "m1") != key_of(Scope::user_model, "t", "alice", "m2"));
    CHECK(key_of(Scope::user_model, "t", "alice", "m1") != key_of(Scope::user_model, "t", "bob", "m1"));
  }
}

TEST_CASE("user_of_key returns the user of user and user_model keys", "[bucket_key]") {
  const std::string long_user(5000, 'u');  // longer than one length byte can say
  for (const std::string& user : {"alice"s, "a:b"s, "\0x\0"s, long_user}) {
    CHECK(airl::detail::user_of_key(key_of(Scope::user, "rpm", user, "m")) == std::optional<std::string_view>(user));
    CHECK(airl::detail::user_of_key(key_of(Scope::user_model, "rpm", user, "m")) ==
          std::optional<std::string_view>(user));
  }
}

TEST_CASE("user_of_key returns nullopt for model and global keys and for malformed input", "[bucket_key]") {
  using airl::detail::user_of_key;
  CHECK_FALSE(user_of_key(key_of(Scope::model, "t", "alice", "m")).has_value());
  CHECK_FALSE(user_of_key(key_of(Scope::global, "t", "alice", "m")).has_value());
  CHECK_FALSE(user_of_key("").has_value());
  CHECK_FALSE(user_of_key("\x07"s + "junk").has_value());  // not a scope

  // Every proper prefix of a valid key is truncated somewhere inside the tier or the user.
  const std::string key = key_of(Scope::user, "tier", "alice", "");
  for (std::size_t length = 0; length < key.size(); ++length) {
    CAPTURE(length);
    CHECK_FALSE(user_of_key(std::string_view(key).substr(0, length)).has_value());
  }

  // A length field claiming more bytes than the key holds is refused, not read past the end.
  std::string lying = key;
  lying[1] = '\x7f';  // tier length 127, but only a few bytes follow
  CHECK_FALSE(user_of_key(lying).has_value());
}

TEST_CASE("a stored key matches exactly the bucket it was written for", "[bucket_key]") {
  using airl::detail::key_matches;
  const BucketRef alice{Scope::user_model, "rpm", "alice", "m1"};
  const std::string key = airl::detail::encode_bucket_key(alice);
  CHECK(key_matches(key, alice));
  CHECK(key_matches(key, BucketRef{Scope::user_model, "rpm", "alice", "m1"}));
  CHECK_FALSE(key_matches(key, BucketRef{Scope::user_model, "rpm", "alice", "m2"}));
  CHECK_FALSE(key_matches(key, BucketRef{Scope::user_model, "rpm", "alicf", "m1"}));  // same lengths, other byte
  CHECK_FALSE(key_matches(key, BucketRef{Scope::user_model, "tpm", "alice", "m1"}));
  CHECK_FALSE(key_matches(key, BucketRef{Scope::user, "rpm", "alice", "m1"}));
  CHECK_FALSE(key_matches(key, BucketRef{Scope::user_model, "rpm", "alic", "em1"}));  // bytes traded between parts
  // Parts the scope does not use are ignored on both sides.
  const std::string user_key = airl::detail::encode_bucket_key(BucketRef{Scope::user, "t", "bob", "m1"});
  CHECK(key_matches(user_key, BucketRef{Scope::user, "t", "bob", "other model"}));
  CHECK(key_matches(airl::detail::encode_bucket_key(BucketRef{Scope::global, "g", "x", "y"}),
                    BucketRef{Scope::global, "g", "", ""}));
}

TEST_CASE("a key decodes back into its bucket, and a malformed key does not decode", "[bucket_key]") {
  const std::string long_user(5000, 'u');
  for (const BucketRef& bucket : {BucketRef{Scope::user_model, "rpm", "a\0b"sv, "m"}, BucketRef{Scope::user, "t", long_user, ""},
                                  BucketRef{Scope::model, "tpm", "", "llama"}, BucketRef{Scope::global, "g", "", ""}}) {
    const std::string key = airl::detail::encode_bucket_key(bucket);
    const auto decoded = airl::detail::decode_bucket_key(key);
    REQUIRE(decoded.has_value());
    CHECK(airl::detail::same_bucket(*decoded, bucket));
    CHECK(decoded->name == bucket.name);
  }
  std::string short_model = airl::detail::encode_bucket_key(BucketRef{Scope::model, "t", "", "m"});
  short_model[2] = '\x02';  // a model length of 2 with only one byte left
  CHECK_FALSE(airl::detail::decode_bucket_key(short_model).has_value());
  CHECK_FALSE(airl::detail::decode_bucket_key("\x02\x81\x81\x81\x01t"sv).has_value());  // a length of 4 LEB128 bytes
  CHECK_FALSE(airl::detail::decode_bucket_key(key_of(Scope::user, "t", "u", "") + "x").has_value());  // trailing byte
}

TEST_CASE("the bucket hash follows bucket identity and the store's seed", "[bucket_key]") {
  using airl::detail::hash_bucket;
  const std::uint64_t seed = 12345;
  CHECK(hash_bucket(seed, {Scope::user, "t", "alice", "m1"}) == hash_bucket(seed, {Scope::user, "t", "alice", "m2"}));
  CHECK(hash_bucket(seed, {Scope::model, "t", "alice", "m"}) == hash_bucket(seed, {Scope::model, "t", "bob", "m"}));
  CHECK(hash_bucket(seed, {Scope::global, "t", "a", "b"}) == hash_bucket(seed, {Scope::global, "t", "", ""}));
  CHECK(hash_bucket(seed, {Scope::user, "t", "alice", ""}) != hash_bucket(seed + 1, {Scope::user, "t", "alice", ""}));

  // Distinct buckets (bytes traded between parts, every scope, lengths around the 8-byte step) hash apart.
  std::set<std::uint64_t> hashes;
  std::size_t buckets = 0;
  const std::vector<std::string> ids = {"", "a", "ab", "a:b", "abcdefg", "abcdefgh", "abcdefghi", "\0"s, "\0\0"s, "b"};
  for (const Scope scope : {Scope::user, Scope::model, Scope::user_model, Scope::global}) {
    for (const std::string& tier : {"t"s, "ta"s}) {
      for (const std::string& user : ids) {
        for (const std::string& model : ids) {
          if (!airl::scope_has_user(scope) && !user.empty()) continue;
          if (!airl::scope_has_model(scope) && !model.empty()) continue;
          hashes.insert(hash_bucket(seed, {scope, tier, user, model}));
          ++buckets;
        }
      }
    }
  }
  CHECK(buckets > 200);
  CHECK(hashes.size() == buckets);
}

TEST_CASE("ids built from the hash's public constants do not collide regardless of the seed", "[bucket_key]") {
  // A part whose first word equals a public mixing constant must not cancel the seed: such ids would
  // otherwise hash alike in every process (a hash-flooding attack on one shard and one probe chain).
  using airl::detail::hash_bucket;
  std::string prefix(8, '\0');
  const std::uint64_t secret = airl::detail::hash_secret_a;
  std::memcpy(prefix.data(), &secret, 8);
  for (const std::uint64_t seed : {std::uint64_t{1}, std::uint64_t{0xDEADBEEF}}) {
    std::set<std::uint64_t> hashes;
    for (int i = 0; i < 1000; ++i) {
      const std::string suffix = std::to_string(100000 + i);  // 6 bytes: 14-byte ids (one multiply)
      const std::string longer = prefix + prefix + suffix;    // 22 bytes: the 16-byte block loop
      hashes.insert(hash_bucket(seed, {Scope::user_model, "t", prefix + suffix, "m"}));
      hashes.insert(hash_bucket(seed, {Scope::user_model, "t", longer, "m"}));
    }
    CHECK(hashes.size() == 2000);
  }
}

TEST_CASE("same_bytes sees every byte of every length, and so does the hash", "[bucket_key]") {
  // Lengths 0..40 cover every reading: single bytes, 4- and 8-byte word pairs, and the 8- and 16-byte loops.
  for (std::size_t n = 0; n <= 40; ++n) {
    std::string a(n, 'x');
    for (std::size_t i = 0; i < n; ++i) a[i] = static_cast<char>('a' + i % 26);
    const std::string same = a;
    CAPTURE(n);
    CHECK(airl::detail::same_bytes(a.data(), same.data(), n));
    for (std::size_t at = 0; at < n; ++at) {
      std::string other = a;
      other[at] = static_cast<char>(other[at] ^ 0x01);
      CAPTURE(at);
      CHECK_FALSE(airl::detail::same_bytes(a.data(), other.data(), n));
      CHECK(airl::detail::hash_bucket(7, {Scope::user, "t", a, {}}) != airl::detail::hash_bucket(7, {Scope::user, "t", other, {}}));
    }
  }
}
