// SPDX-License-Identifier: MIT
#pragma once
// One bucket's verdict on one charge, and the multi-tier rule that turns the verdicts of a request's buckets
// into one AcquireResult, written once: the in-memory store and the Redis storage (whose Lua script reports a
// verdict per bucket) both decide through here. docs/DESIGN.md states the rule:
//   - all fit: allowed; binding = the bucket with the least remaining (first of equals).
//   - some do not: denied; binding = the first that does not fit; retry_after = the max over those that do not
//     (buckets that fit now keep fitting while time passes and nothing else arrives).
// Durations are nanoseconds until they leave here, rounded up to whole milliseconds.

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <limits>
#include <span>

#include "../storage_policy.hpp"
#include "ticks.hpp"

namespace airl::detail {

// What one bucket says about one charge. Durations in nanoseconds; never_ticks means "never".
struct WindowVerdict {
  bool fits = false;
  std::uint64_t remaining = 0;    // units admissible after this decision (charge included when it fits)
  std::int64_t retry_after = 0;   // 0 when it fits; else the wait until enough old entries expire
  std::int64_t reset_after = 0;   // until the window holds nothing, after this decision
};

// The rule above. `replayed`: the request's id was already admitted (nothing was charged; status replayed).
inline AcquireResult combine_verdicts(std::span<const WindowVerdict> verdicts, bool replayed = false) noexcept {
  if (verdicts.empty()) return AcquireResult{};
  std::size_t index = 0;
  std::int64_t retry = 0;
  for (std::size_t i = 0; i < verdicts.size(); ++i) {
    const WindowVerdict& verdict = verdicts[i];
    const WindowVerdict& binding = verdicts[index];
    if (!verdict.fits) {
      retry = std::max(retry, verdict.retry_after);
      if (binding.fits || i == 0) index = i;
    } else if (binding.fits && verdict.remaining < binding.remaining) {
      index = i;
    }
  }
  const WindowVerdict& binding = verdicts[index];
  // Every member written once, so no zeroing of the whole result comes first.
  return AcquireResult{.status = replayed ? Status::replayed : binding.fits ? Status::allowed : Status::denied,
                       .binding = index,
                       .remaining = binding.remaining,
                       .retry_after = binding.fits ? std::chrono::milliseconds{0} : ceil_to_ms(retry),
                       .reset_after = ceil_to_ms(binding.reset_after),
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
