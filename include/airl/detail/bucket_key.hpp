// SPDX-License-Identifier: MIT
#pragma once
// Binary-safe, collision-free encoding of a BucketRef into one string key for the in-memory store.
//
// Layout: one scope byte, then each component the scope uses (tier, then user and/or model) as a 4-byte
// little-endian length followed by its bytes. Lengths make the encoding prefix-free, so ("a:b","c") and
// ("a","b:c") differ, and any byte (':', '{', '\0', UTF-8) is just data.

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "../storage_policy.hpp"

namespace airl::detail {

constexpr bool scope_has_user(Scope scope) noexcept { return scope == Scope::user || scope == Scope::user_model; }
constexpr bool scope_has_model(Scope scope) noexcept { return scope == Scope::model || scope == Scope::user_model; }

inline void append_component(std::string& out, std::string_view part) {
  const auto size = static_cast<std::uint32_t>(part.size());
  for (int shift = 0; shift < 32; shift += 8) out.push_back(static_cast<char>((size >> shift) & 0xffu));
  out.append(part);
}

// Writes the key of `bucket` into `out` (cleared first; reuses its capacity, so a warm buffer never allocates).
inline void encode_bucket_key(std::string& out, const BucketRef& bucket) {
  out.clear();
  out.push_back(static_cast<char>(bucket.scope));
  append_component(out, bucket.tier);
  if (scope_has_user(bucket.scope)) append_component(out, bucket.user);
  if (scope_has_model(bucket.scope)) append_component(out, bucket.model);
}

// The identity under which a request id is remembered: (user, model, id), length-prefixed. A retry is the
// same request, so an id replays only for the user and model that were admitted with it: another user (or
// the same user on another model) reusing the id is charged like any new request.
inline void encode_request_id(std::string& out, std::string_view user, std::string_view model,
                              std::string_view request_id) {
  out.clear();
  append_component(out, user);
  append_component(out, model);
  append_component(out, request_id);
}

// The user of an encoded key whose scope has one; nullopt for model and global keys or malformed input.
inline std::optional<std::string_view> user_of_key(std::string_view key) noexcept {
  if (key.empty()) return std::nullopt;
  const auto scope = static_cast<Scope>(static_cast<unsigned char>(key[0]));
  if (!scope_has_user(scope)) return std::nullopt;
  std::size_t pos = 1;
  std::string_view component;
  for (int part = 0; part < 2; ++part) {  // skip the tier, then read the user
    if (key.size() - pos < 4) return std::nullopt;
    std::uint32_t size = 0;
    for (std::size_t i = 0; i < 4; ++i) size |= std::uint32_t{static_cast<unsigned char>(key[pos + i])} << (8 * i);
    pos += 4;
    if (key.size() - pos < size) return std::nullopt;
    component = key.substr(pos, size);
    pos += size;
  }
  return component;
}

}  // namespace airl::detail
