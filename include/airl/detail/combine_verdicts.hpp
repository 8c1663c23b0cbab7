// SPDX-License-Identifier: MIT
#pragma once
// The multi-tier decision rule, written once: how per-bucket verdicts become one AcquireResult.
// (The Redis Lua script implements the same rule; docs/DESIGN.md states it.)
//   - all fit: allowed; binding = the bucket with the least remaining (first of equals).
//   - some do not: denied; binding = the first that does not fit; retry_after = the max over those that do not
//     (buckets that fit now keep fitting while time passes and nothing else arrives).

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <span>

#include "../storage_policy.hpp"
#include "window_log.hpp"

namespace airl::detail {

// Nanoseconds to whole milliseconds, rounded up; never_ticks stays "never". Throws nothing.
inline std::chrono::milliseconds ceil_to_ms(std::int64_t ns) noexcept {
  if (ns >= never_ticks) return std::chrono::milliseconds::max();
  if (ns <= 0) return std::chrono::milliseconds{0};
  return std::chrono::milliseconds{static_cast<std::int64_t>((static_cast<std::uint64_t>(ns) + 999'999) / 1'000'000)};
}

// One tier: the verdict is the result.
inline AcquireResult single_verdict(const WindowVerdict& only) noexcept {
  // Every member written once, so no zeroing of the whole result comes first.
  return AcquireResult{.status = only.fits ? AcquireStatus::allowed : AcquireStatus::denied,
                       .binding = 0,
                       .remaining = only.remaining,
                       .retry_after = only.fits ? std::chrono::milliseconds{0} : ceil_to_ms(only.retry_after),
                       .reset_after = ceil_to_ms(only.reset_after),
                       .degraded = false,
                       .other_group = {}};
}

inline AcquireResult combine_verdicts(std::span<const WindowVerdict> verdicts) noexcept {
  if (verdicts.size() == 1) return single_verdict(verdicts.front());
  const WindowVerdict* binding = nullptr;
  std::size_t index = 0;
  std::int64_t retry = 0;
  for (std::size_t i = 0; i < verdicts.size(); ++i) {
    const WindowVerdict& verdict = verdicts[i];
    if (!verdict.fits) {
      retry = std::max(retry, verdict.retry_after);
      if (binding == nullptr || binding->fits) {
        binding = &verdict;
        index = i;
      }
    } else if (binding == nullptr || (binding->fits && verdict.remaining < binding->remaining)) {
      binding = &verdict;
      index = i;
    }
  }
  if (binding == nullptr) return AcquireResult{};
  return AcquireResult{.status = binding->fits ? AcquireStatus::allowed : AcquireStatus::denied,
                       .binding = index,
                       .remaining = binding->remaining,
                       .retry_after = binding->fits ? std::chrono::milliseconds{0} : ceil_to_ms(retry),
                       .reset_after = ceil_to_ms(binding->reset_after),
                       .degraded = false,
                       .other_group = {}};
}

// Fills result.other_group from the verdicts of the charges outside the binding charge's group: the first that
// does not fit, else the one with the least remaining (first of equals). Nothing when all share one group.
// `charges` and `verdicts` correspond one to one. Throws nothing.
inline void note_other_group(AcquireResult& result, std::span<const WindowVerdict> verdicts,
                             std::span<const Charge> charges) noexcept {
  if (charges.size() < 2 || result.binding >= charges.size() || verdicts.size() != charges.size()) return;
  const unsigned bound = charges[result.binding].group;
  const WindowVerdict* best = nullptr;
  for (std::size_t i = 0; i < charges.size(); ++i) {
    if (charges[i].group == bound) continue;
    const WindowVerdict& verdict = verdicts[i];
    const bool better = best == nullptr || (best->fits && (!verdict.fits || verdict.remaining < best->remaining));
    if (better) {
      best = &verdict;
      result.other_group.index = i;
    }
  }
  if (best == nullptr) return;
  result.other_group.present = true;
  result.other_group.remaining = best->remaining;
  result.other_group.reset_after = ceil_to_ms(best->reset_after);
}

}  // namespace airl::detail
