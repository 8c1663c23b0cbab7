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

// Longest window accepted (366 days): keeps every timestamp sum far from overflowing 64-bit nanoseconds.
inline constexpr std::chrono::milliseconds max_window = std::chrono::hours(24 * 366);

}  // namespace airl
