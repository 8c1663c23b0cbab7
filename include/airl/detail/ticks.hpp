// SPDX-License-Identifier: MIT
#pragma once
// The two ends of a store's time line, in its ticks (the in-memory stores count nanoseconds).

#include <chrono>
#include <cstdint>
#include <limits>

namespace airl::detail {

// A duration that never ends ("never admissible"), or an expiry that never comes.
inline constexpr std::int64_t never_ticks = std::numeric_limits<std::int64_t>::max();
// "Already expired": the expiry of a bucket that holds nothing any more.
inline constexpr std::int64_t expired_ticks = std::numeric_limits<std::int64_t>::min();

// A window or lease in ticks (nanoseconds). Validated durations (at most 366 days) never overflow.
inline std::int64_t to_ticks(std::chrono::milliseconds duration) noexcept {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(duration).count();
}

// time + duration (a duration >= 0), saturated at never_ticks: a clock may run close to the end of 64-bit
// nanoseconds, where a window or lease past it must mean "not before the end", not wrap into the past.
constexpr std::int64_t saturating_add(std::int64_t time, std::int64_t duration) noexcept {
  return time > never_ticks - duration ? never_ticks : time + duration;
}

// Nanoseconds to whole milliseconds, rounded up; never_ticks stays "never". Throws nothing.
inline std::chrono::milliseconds ceil_to_ms(std::int64_t ns) noexcept {
  if (ns >= never_ticks) return std::chrono::milliseconds::max();
  if (ns <= 0) return std::chrono::milliseconds{0};
  return std::chrono::milliseconds{static_cast<std::int64_t>((static_cast<std::uint64_t>(ns) + 999'999) / 1'000'000)};
}

}  // namespace airl::detail
