// SPDX-License-Identifier: MIT
#pragma once
// Snapshots of a limiter's counters (Metrics for rate limiters, ConcurrencyMetrics for concurrency caps), cheap
// enough to scrape every second. <airl/prometheus.hpp> renders them. Both stacks count degraded decisions and
// backend errors the same way: a decision a failure policy made without the store is degraded and is also a
// backend error; a fault that was thrown is a backend error only.

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace airl {

// Upper bounds of the decision-latency histogram's buckets, in nanoseconds; a last bucket holds the rest.
// 100 ns to 10 ms, so an in-memory decision and a Redis round trip each land in a bucket of their size.
inline constexpr std::array<std::uint64_t, 16> latency_bucket_bounds_ns = {
    100, 250, 500, 1'000, 2'500, 5'000, 10'000, 25'000, 50'000, 100'000, 250'000, 500'000,
    1'000'000, 2'500'000, 5'000'000, 10'000'000};

// Decision latencies of allow(), timed for one decision in 64 per thread (timing costs two clock reads).
struct LatencyHistogram {
  std::array<std::uint64_t, latency_bucket_bounds_ns.size() + 1> counts{};  // per bucket, not cumulative
  std::uint64_t sum_ns = 0;

  std::uint64_t count() const noexcept {
    std::uint64_t all = 0;
    for (const std::uint64_t n : counts) all += n;
    return all;
  }
};

struct TierDenials {
  std::string tier;
  std::uint64_t denied = 0;
};

struct Metrics {
  std::uint64_t allowed = 0;         // decisions that admitted (replays included)
  std::uint64_t denied = 0;          // decisions that refused (429s; in shadow mode, that would have), whatever refused them
  std::uint64_t backend_errors = 0;  // calls that failed in the storage backend
  std::size_t active_keys = 0;       // buckets the storage holds now (expired ones count until purged)
  std::uint64_t degraded = 0;        // decisions a failure policy made without the store
  std::uint64_t denied_key_capacity = 0;         // denials because the store was full (reason key_capacity)
  std::uint64_t denied_backend_unavailable = 0;  // denials under fail_closed (reason backend_unavailable)
  std::vector<TierDenials> denied_by_tier;       // every tier, in declared order, with its denials
  LatencyHistogram latency;                      // sampled decision latencies

  // allowed + denied. Thread safety: plain value. Throws nothing.
  std::uint64_t total() const noexcept { return allowed + denied; }

  // Share of decisions that were denials, in percent; 0 when there were none. Throws nothing.
  double deny_rate_percent() const noexcept {
    const std::uint64_t all = total();
    return all == 0 ? 0.0 : 100.0 * static_cast<double>(denied) / static_cast<double>(all);
  }
};

// One concurrency cap's refusals.
struct CapDenials {
  std::string cap;
  std::uint64_t denied = 0;
};

// A snapshot of a concurrency limiter's counters.
struct ConcurrencyMetrics {
  std::uint64_t acquired = 0;        // permits granted (degraded ones included)
  std::uint64_t denied = 0;          // try_acquire() calls refused, whatever refused them
  std::uint64_t held = 0;            // permits granted and not yet released, lost or abandoned (in this process)
  std::uint64_t renewed = 0;         // renew() calls that extended the leases, or assumed them (an outage, or a
                                     // degraded permit holding no confirmed lease)
  std::uint64_t leases_lost = 0;     // renew() calls that found a lease already run out
  std::uint64_t degraded = 0;        // acquisitions and renewals a failure policy decided without the store
  std::uint64_t backend_errors = 0;  // store faults: thrown, absorbed by a failure policy, or swallowed on release
  std::uint64_t release_errors = 0;  // releases that failed in the store (swallowed; Redis retries them before
                                     // its next calls, else those leases run out)
  std::uint64_t denied_key_capacity = 0;         // refusals because the in-memory store was full
  std::uint64_t denied_backend_unavailable = 0;  // refusals under fail_closed (reason backend_unavailable)
  std::vector<CapDenials> denied_by_cap;         // every cap, in declared order, with its refusals
};

}  // namespace airl
