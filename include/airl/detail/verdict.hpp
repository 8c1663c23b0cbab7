// SPDX-License-Identifier: MIT
#pragma once
// One bucket's verdict on one charge, and the multi-tier rule that turns the verdicts of a request's buckets
// into one AcquireResult, written once: the in-memory store and the Redis storage (whose Lua script reports a
// verdict per bucket) both decide through here. docs/DESIGN.md states the rule:
//   - all fit: allowed; binding = the bucket closest to its limit as a fraction: the least remaining / limit
//     (first of equals). A fraction, not a count: 59 of 60 requests left is further from the limit than 100
//     of 90,000 tokens.
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

// Whether `a` (remaining of limit) is closer to its limit than `b`: a smaller remaining / limit, compared
// exactly (both sides are at most 2^53, so the cross products fit in 128 bits). A limit of 0 counts as full.
constexpr bool tighter(std::uint64_t a_remaining, std::uint64_t a_limit, std::uint64_t b_remaining,
                       std::uint64_t b_limit) noexcept {
  if (b_limit == 0 || b_remaining == 0) return false;  // b is full: nothing is tighter
  if (a_limit == 0) return true;
  __extension__ using wide = unsigned __int128;
  return static_cast<wide>(a_remaining) * b_limit < static_cast<wide>(b_remaining) * a_limit;
}

// The rule above. `charges` correspond one to one with `verdicts` (their quotas give the limits).
// `replayed`: the request's id was already admitted (nothing was charged; status replayed).
inline AcquireResult combine_verdicts(std::span<const WindowVerdict> verdicts, std::span<const Charge> charges,
                                      bool replayed = false) noexcept {
  if (verdicts.empty() || verdicts.size() != charges.size()) return AcquireResult{};
  const auto tighter_than = [&](std::size_t a, std::size_t b) {
    return tighter(verdicts[a].remaining, charges[a].quota.limit, verdicts[b].remaining, charges[b].quota.limit);
  };
  std::size_t index = 0;
  std::int64_t retry = 0;
  for (std::size_t i = 0; i < verdicts.size(); ++i) {
    const WindowVerdict& verdict = verdicts[i];
    const WindowVerdict& binding = verdicts[index];
    if (!verdict.fits) {
      retry = std::max(retry, verdict.retry_after);
      if (binding.fits || i == 0) index = i;
    } else if (binding.fits && tighter_than(i, index)) {
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
// does not fit, else the one closest to its limit (first of equals). Nothing when all share one group.
// `charges` and `verdicts` correspond one to one. Throws nothing.
inline void note_other_group(AcquireResult& result, std::span<const WindowVerdict> verdicts,
                             std::span<const Charge> charges) noexcept {
  if (charges.size() < 2 || result.binding >= charges.size() || verdicts.size() != charges.size()) return;
  const unsigned bound = charges[result.binding].group;
  const WindowVerdict* best = nullptr;
  for (std::size_t i = 0; i < charges.size(); ++i) {
    if (charges[i].group == bound) continue;
    const WindowVerdict& verdict = verdicts[i];
    const std::size_t at = result.other_group.index;
    const bool better = best == nullptr ||
                        (best->fits && (!verdict.fits || tighter(verdict.remaining, charges[i].quota.limit,
                                                                 best->remaining, charges[at].quota.limit)));
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
