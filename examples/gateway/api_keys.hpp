// SPDX-License-Identifier: MIT
#pragma once
// Finding the caller behind a bearer key without a timing side channel on the keys' bytes. A plain map lookup
// compares strings with memcmp, which stops at the first differing byte: timing many guesses would reveal a
// configured key byte by byte. Here the presented key is first reduced to a digest under a seed drawn at
// start (so its bucket says nothing an attacker can steer), then compared with the candidates in full,
// every byte, whatever differs first. The keys' lengths are the only thing the timing still depends on.

#include <airl/detail/key_hash.hpp>

#include <algorithm>
#include <cstdint>
#include <random>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>

#include "gateway_config.hpp"

namespace gateway {

// Whether a and b are equal, reading every byte of the longer one: no early exit on the first difference.
inline bool constant_time_equal(std::string_view a, std::string_view b) noexcept {
  const std::size_t n = std::max(a.size(), b.size());
  unsigned difference = a.size() == b.size() ? 0u : 1u;
  for (std::size_t i = 0; i < n; ++i) {
    const unsigned char x = i < a.size() ? static_cast<unsigned char>(a[i]) : 0;
    const unsigned char y = i < b.size() ? static_cast<unsigned char>(b[i]) : 0;
    difference |= static_cast<unsigned>(x ^ y);
  }
  return difference == 0;
}

class ApiKeys {
 public:
  explicit ApiKeys(const std::unordered_map<std::string, ApiKey>& keys)
      : seed_((std::uint64_t{std::random_device{}()} << 32) ^ std::random_device{}()) {
    for (const auto& [key, owner] : keys) by_digest_.emplace(digest(key), Entry{key, owner});
  }

  // The key's owner, or nullptr. Thread safety: safe (read-only after construction).
  const ApiKey* find(std::string_view presented) const noexcept {
    const ApiKey* found = nullptr;
    const auto [first, last] = by_digest_.equal_range(digest(presented));
    for (auto it = first; it != last; ++it) {
      if (constant_time_equal(it->second.key, presented)) found = &it->second.owner;
    }
    return found;
  }

 private:
  struct Entry {
    std::string key;
    ApiKey owner;
  };

  std::uint64_t digest(std::string_view key) const noexcept { return airl::detail::hash_part(seed_, key); }

  std::uint64_t seed_;
  std::unordered_multimap<std::uint64_t, Entry> by_digest_;
};

}  // namespace gateway
