// SPDX-License-Identifier: MIT
#pragma once
// A string hash usable for heterogeneous lookup, so a std::string_view finds a std::string key in an
// unordered container without building a temporary string. It is airl's own key hash (key_hash.hpp), seeded
// once per process: cheaper than std::hash's byte loop on the short ids it sees (request ids, plan names,
// override keys, hashed several times per admission), and not the same in every process, so ids chosen to
// collide in one run do not collide in the next.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "key_hash.hpp"

namespace airl::detail {

// This process's seed for TransparentHash: drawn once from the clock and an address. Not secret, not fixed.
inline std::uint64_t transparent_hash_seed() noexcept {
  static const std::uint64_t seed = [] {
    static const char anchor = 0;
    const auto now = static_cast<std::uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count());
    return finish_hash(now ^ finish_hash(static_cast<std::uint64_t>(reinterpret_cast<std::uintptr_t>(&anchor))));
  }();
  return seed;
}

struct TransparentHash {
  using is_transparent = void;
  std::size_t operator()(std::string_view text) const noexcept {
    return static_cast<std::size_t>(finish_hash(hash_part(transparent_hash_seed(), text)));
  }
  std::size_t operator()(const std::string& text) const noexcept { return (*this)(std::string_view(text)); }
};

}  // namespace airl::detail
