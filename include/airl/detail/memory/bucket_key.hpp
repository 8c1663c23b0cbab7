// SPDX-License-Identifier: MIT
#pragma once
// How the in-memory store names and places a key (a tier's bucket or a cap's scope): its seeded hash, taken
// straight from the parts, and its encoding next to its state: binary-safe, collision-free and short.
//
// Layout: the scope byte; the length of the name, then of the user and/or model the scope uses, each as a
// LEB128 number (one byte below 128); then those parts' bytes. The lengths make the encoding prefix-free, so
// ("a:b","c") and ("a","b:c") differ, and any byte (':', '{', '\0', UTF-8) is just data.

#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>

#include "../../storage_policy.hpp"
#include "../inlining.hpp"
#include "../key_hash.hpp"

namespace airl::detail {

// Room every stored key has, even a shorter one, so its header can be read as one 4-byte word.
inline constexpr std::size_t min_key_bytes = 4;

// Longest key header: the scope byte and three lengths of up to 3 LEB128 bytes (parts are < 2^21 bytes).
inline constexpr std::size_t max_key_header = 10;

struct KeyHeader {
  std::array<char, max_key_header> bytes;
  std::size_t size = 0;

  void push_length(std::size_t length) noexcept {
    if (length < 0x80) [[likely]] {
      bytes[size++] = static_cast<char>(length);
      return;
    }
    while (length >= 0x80) {
      bytes[size++] = static_cast<char>((length & 0x7Fu) | 0x80u);
      length >>= 7;
    }
    bytes[size++] = static_cast<char>(length);
  }
};

// The header of `bucket`'s key. Requires each part shorter than 2^21 bytes (storages accept 65535).
inline KeyHeader key_header(const BucketRef& bucket) noexcept {
  KeyHeader header{};
  header.bytes[header.size++] = static_cast<char>(bucket.scope);
  header.push_length(bucket.name.size());
  if (scope_has_user(bucket.scope)) header.push_length(bucket.user.size());
  if (scope_has_model(bucket.scope)) header.push_length(bucket.model.size());
  return header;
}

inline std::size_t parts_size(const BucketRef& bucket) noexcept {
  return bucket.name.size() + (scope_has_user(bucket.scope) ? bucket.user.size() : 0) +
         (scope_has_model(bucket.scope) ? bucket.model.size() : 0);
}

// Bytes of the encoded key of `bucket`.
inline std::size_t key_size(const BucketRef& bucket) noexcept { return key_header(bucket).size + parts_size(bucket); }

// Writes the key of `bucket` to `out`, which holds key_size(bucket) bytes.
inline void write_key(char* out, const BucketRef& bucket) noexcept {
  const KeyHeader header = key_header(bucket);
  std::memcpy(out, header.bytes.data(), header.size);
  out += header.size;
  const auto append = [&out](std::string_view part) {
    if (!part.empty()) std::memcpy(out, part.data(), part.size());
    out += part.size();
  };
  append(bucket.name);
  if (scope_has_user(bucket.scope)) append(bucket.user);
  if (scope_has_model(bucket.scope)) append(bucket.model);
}

// The key of `bucket` as a string (tests and tools; the store writes keys in place).
inline std::string encode_bucket_key(const BucketRef& bucket) {
  std::string key(key_size(bucket), '\0');
  write_key(key.data(), bucket);
  return key;
}

// Reads a key back into the bucket it names (views into `key`); nullopt when `key` is not a well-formed key.
inline std::optional<BucketRef> decode_bucket_key(std::string_view key) noexcept {
  if (key.empty()) return std::nullopt;
  const auto scope = static_cast<Scope>(static_cast<unsigned char>(key[0]));
  if (!known_scope(scope)) return std::nullopt;
  std::size_t at = 1;
  const auto read_length = [&key, &at]() -> std::optional<std::size_t> {
    std::size_t length = 0;
    for (int shift = 0; shift < 21; shift += 7) {
      if (at >= key.size()) return std::nullopt;
      const auto byte = static_cast<unsigned char>(key[at++]);
      length |= std::size_t{byte & 0x7Fu} << shift;
      if ((byte & 0x80u) == 0) return length;
    }
    return std::nullopt;
  };
  const auto name = read_length();
  const auto user = scope_has_user(scope) ? read_length() : std::optional<std::size_t>(0);
  const auto model = scope_has_model(scope) ? read_length() : std::optional<std::size_t>(0);
  if (!name || !user || !model || key.size() - at != *name + *user + *model) return std::nullopt;
  BucketRef bucket;
  bucket.scope = scope;
  bucket.name = key.substr(at, *name);
  bucket.user = key.substr(at + *name, *user);
  bucket.model = key.substr(at + *name + *user, *model);
  return bucket;
}

// Bytes of the LEB128 form of `length`.
constexpr std::size_t length_bytes(std::size_t length) noexcept {
  std::size_t bytes = 1;
  for (; length >= 0x80; length >>= 7) ++bytes;
  return bytes;
}

// Whether `key` (a key written by write_key) names `bucket`: reads the stored header in place and compares the
// parts' bytes; builds nothing. Parts shorter than 128 bytes (one length byte each) take a branch-light path,
// which reads the header as one 4-byte word: `key.data()` must have at least min_key_bytes readable bytes.
AIRL_DETAIL_HOT_INLINE bool key_matches(std::string_view key, const BucketRef& bucket) noexcept {
  const bool user = scope_has_user(bucket.scope), model = scope_has_model(bucket.scope);
  const std::size_t name_size = bucket.name.size();
  const std::size_t user_size = user ? bucket.user.size() : 0, model_size = model ? bucket.model.size() : 0;
  const char* at = key.data();
  if ((name_size | user_size | model_size) < 0x80) [[likely]] {
    // The header is 2 to 4 bytes (scope, then one byte per length): compared as one word. Stored keys have at
    // least min_key_bytes bytes of room (Entry::make), so the 4-byte read stays inside the allocation.
    const std::size_t header = 2 + std::size_t{user} + std::size_t{model};
    if (key.size() != header + name_size + user_size + model_size) return false;
    const std::uint32_t expected = static_cast<std::uint32_t>(static_cast<unsigned char>(bucket.scope)) |
                                   static_cast<std::uint32_t>(name_size << 8) |
                                   static_cast<std::uint32_t>(user_size << 16) |
                                   static_cast<std::uint32_t>(model_size << (8 * (header - 1)));
    const std::uint32_t mask = header == 4 ? 0xFFFFFFFFu : (std::uint32_t{1} << (8 * header)) - 1;
    if (((static_cast<std::uint32_t>(load_u32(at)) ^ expected) & mask) != 0) return false;
    at += header;
  } else {
    const std::size_t header = 1 + length_bytes(name_size) + (user ? length_bytes(user_size) : 0) +
                               (model ? length_bytes(model_size) : 0);
    if (key.size() != header + name_size + user_size + model_size) return false;
    if (static_cast<unsigned char>(*at) != static_cast<unsigned char>(bucket.scope)) return false;
    ++at;
    const auto same_length = [&at](std::size_t length) {
      for (; length >= 0x80; length >>= 7) {
        if (static_cast<unsigned char>(*at++) != ((length & 0x7Fu) | 0x80u)) return false;
      }
      return static_cast<unsigned char>(*at++) == length;
    };
    if (!same_length(name_size) || (user && !same_length(user_size)) || (model && !same_length(model_size))) {
      return false;
    }
  }
  if (!same_bytes(at, bucket.name.data(), name_size)) return false;
  at += name_size;
  if (user) {
    if (!same_bytes(at, bucket.user.data(), user_size)) return false;
    at += user_size;
  }
  return !model || same_bytes(at, bucket.model.data(), model_size);
}

// The user of a key whose scope has one; nullopt for model and global keys or malformed input.
inline std::optional<std::string_view> user_of_key(std::string_view key) noexcept {
  const auto bucket = decode_bucket_key(key);
  if (!bucket || !scope_has_user(bucket->scope)) return std::nullopt;
  return bucket->user;
}

// The hash of `bucket` under `seed`: equal buckets hash equal; only the parts the scope uses take part. Each
// part is digested in its own lane (so the CPU works on them in parallel, and equal bytes in two roles hash
// differently); one last multiply joins the lanes and the scope.
AIRL_DETAIL_HOT_INLINE std::uint64_t hash_bucket(std::uint64_t seed, const BucketRef& bucket) noexcept {
  const std::uint64_t name = hash_part(seed ^ 0x243F6A8885A308D3ull, bucket.name);
  const std::uint64_t user = scope_has_user(bucket.scope) ? hash_part(seed ^ 0x13198A2E03707344ull, bucket.user) : 0;
  const std::uint64_t model = scope_has_model(bucket.scope) ? hash_part(seed ^ 0xA4093822299F31D0ull, bucket.model) : 0;
  return multiply_fold(name ^ user ^ hash_secret_b, model ^ seed ^ (static_cast<std::uint64_t>(bucket.scope) + 1));
}

// Two references name the same bucket: same scope and name, and the same ids where the scope uses them.
inline bool same_bucket(const BucketRef& a, const BucketRef& b) noexcept {
  return a.scope == b.scope && a.name == b.name && (!scope_has_user(a.scope) || a.user == b.user) &&
         (!scope_has_model(a.scope) || a.model == b.model);
}

}  // namespace airl::detail
