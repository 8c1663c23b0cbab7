// SPDX-License-Identifier: MIT
#pragma once
// A snapshot of a limiter's counters, cheap enough to scrape every second.

#include <cstddef>
#include <cstdint>

namespace airl {

struct Metrics {
  std::uint64_t allowed = 0;         // decisions that admitted (replays included)
  std::uint64_t denied = 0;          // decisions that refused (429s)
  std::uint64_t backend_errors = 0;  // calls that failed in the storage backend
  std::size_t active_keys = 0;       // buckets the storage holds now (expired ones count until purged)

  // allowed + denied. Thread safety: plain value. Throws nothing.
  std::uint64_t total() const noexcept { return allowed + denied; }

  // Share of decisions that were denials, in percent; 0 when there were none. Throws nothing.
  double deny_rate_percent() const noexcept {
    const std::uint64_t all = total();
    return all == 0 ? 0.0 : 100.0 * static_cast<double>(denied) / static_cast<double>(all);
  }
};

}  // namespace airl
