// SPDX-License-Identifier: MIT
#pragma once
// A quota: how many cost units may be admitted per sliding window.

#include <chrono>
#include <cstdint>

namespace airl {

// `limit` cost units admitted per sliding `window`. limit 0 denies everything; window must be > 0.
struct Quota {
  std::uint64_t limit;
  std::chrono::milliseconds window;
};

// Longest window accepted (366 days): a window fits 64-bit nanoseconds many times over. A time plus a window
// can still pass the end of a clock that runs near it; the in-memory store saturates those sums (detail/ticks.hpp).
inline constexpr std::chrono::milliseconds max_window = std::chrono::hours(24 * 366);

// Largest limit, cost or cap every storage counts exactly: 2^53 (Redis's Lua numbers are doubles). Limits set
// at runtime and settled costs above it are refused; 2^53 is as good as unlimited.
inline constexpr std::uint64_t max_exact_count = std::uint64_t{1} << 53;

}  // namespace airl
