// SPDX-License-Identifier: MIT
#pragma once
// How the in-memory store writes a bucket's name next to its log: binary-safe, collision-free and short.
//
// Layout: the scope byte; the length of the tier, then of the user and/or model the scope uses, each as a
// LEB128 number (one byte below 128); then those parts' bytes. The lengths make the encoding prefix-free, so
// ("a:b","c") and ("a","b:c") differ, and any byte (':', '{', '\0', UTF-8) is just data.

#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>

#include "../storage_policy.hpp"
#include "inlining.hpp"
#include "key_hash.hpp"

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
  header.push_length(bucket.tier.size());
  if (scope_has_user(bucket.scope)) header.push_length(bucket.user.size());
  if (scope_has_model(bucket.scope)) header.push_length(bucket.model.size());
  return header;
}

inline std::size_t parts_size(const BucketRef& bucket) noexcept {
  return bucket.tier.size() + (scope_has_user(bucket.scope) ? bucket.user.size() : 0) +
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
  append(bucket.tier);
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
  if (scope != Scope::user && scope != Scope::model && scope != Scope::user_model && scope != Scope::global) {
    return std::nullopt;
  }
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
  const auto tier = read_length();
  const auto user = scope_has_user(scope) ? read_length() : std::optional<std::size_t>(0);
  const auto model = scope_has_model(scope) ? read_length() : std::optional<std::size_t>(0);
  if (!tier || !user || !model || key.size() - at != *tier + *user + *model) return std::nullopt;
  BucketRef bucket;
  bucket.scope = scope;
  bucket.tier = key.substr(at, *tier);
  bucket.user = key.substr(at + *tier, *user);
  bucket.model = key.substr(at + *tier + *user, *model);
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
  const std::size_t tier_size = bucket.tier.size();
  const std::size_t user_size = user ? bucket.user.size() : 0, model_size = model ? bucket.model.size() : 0;
  const char* at = key.data();
  if ((tier_size | user_size | model_size) < 0x80) [[likely]] {
    // The header is 2 to 4 bytes (scope, then one byte per length): compared as one word. Stored keys have at
    // least min_key_bytes bytes of room (Bucket::make), so the 4-byte read stays inside the allocation.
    const std::size_t header = 2 + std::size_t{user} + std::size_t{model};
    if (key.size() != header + tier_size + user_size + model_size) return false;
    const std::uint32_t expected = static_cast<std::uint32_t>(static_cast<unsigned char>(bucket.scope)) |
                                   static_cast<std::uint32_t>(tier_size << 8) |
                                   static_cast<std::uint32_t>(user_size << 16) |
                                   static_cast<std::uint32_t>(model_size << (8 * (header - 1)));
    const std::uint32_t mask = header == 4 ? 0xFFFFFFFFu : (std::uint32_t{1} << (8 * header)) - 1;
    if (((static_cast<std::uint32_t>(load_u32(at)) ^ expected) & mask) != 0) return false;
    at += header;
  } else {
    const std::size_t header = 1 + length_bytes(tier_size) + (user ? length_bytes(user_size) : 0) +
                               (model ? length_bytes(model_size) : 0);
    if (key.size() != header + tier_size + user_size + model_size) return false;
    if (static_cast<unsigned char>(*at) != static_cast<unsigned char>(bucket.scope)) return false;
    ++at;
    const auto same_length = [&at](std::size_t length) {
      for (; length >= 0x80; length >>= 7) {
        if (static_cast<unsigned char>(*at++) != ((length & 0x7Fu) | 0x80u)) return false;
      }
      return static_cast<unsigned char>(*at++) == length;
    };
    if (!same_length(tier_size) || (user && !same_length(user_size)) || (model && !same_length(model_size))) {
      return false;
    }
  }
  if (!same_bytes(at, bucket.tier.data(), tier_size)) return false;
  at += tier_size;
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

// The identity under which a request id is remembered: (user, model, id), each with a 4-byte length. A retry
// is the same request, so an id replays only for the user and model that were admitted with it: another user
// (or the same user on another model) reusing the id is charged like any new request.
inline void encode_request_id(std::string& out, std::string_view user, std::string_view model,
                              std::string_view request_id) {
  out.clear();
  for (const std::string_view part : {user, model, request_id}) {
    const auto size = static_cast<std::uint32_t>(part.size());
    for (int shift = 0; shift < 32; shift += 8) out.push_back(static_cast<char>((size >> shift) & 0xFFu));
    out.append(part);
  }
}

}  // namespace airl::detail
