// SPDX-License-Identifier: MIT
#pragma once
// Decision counters striped over cache lines, for both stacks: a rate limiter counts its decisions here (denials
// per tier), a concurrency limiter its acquisitions (denials per cap). The first threads to count each own a stripe and bump it with a
// plain relaxed load and store (no locked instruction on the decision path); later threads share the remaining
// stripes with relaxed atomic adds. Counting never becomes one cache line every core fights over; reading sums
// the stripes. Besides the totals, each stripe counts denials per tier and per store-made reason, and keeps a
// histogram of sampled decision latencies.

#include <array>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "../../decision.hpp"
#include "../../metrics.hpp"
#include "../inlining.hpp"

namespace airl::detail {

// One decision in this many per thread is timed for the histogram: the timing costs two clock reads.
inline constexpr std::uint32_t latency_sample_every = 64;

class DecisionCounters {
 public:
  explicit DecisionCounters(std::size_t tiers = 0)
      : stripes_(std::make_unique<Stripe[]>(stripe_count)),
        tier_lines_((tiers + words_per_line - 1) / words_per_line),
        tier_denials_(std::make_unique<Line[]>(stripe_count * tier_lines_)),
        tiers_(tiers) {}

  // Counts one decision by its status; `by` is the tier (or cap) that denied it, for Status::denied (an index
  // below the count given at construction; another value counts as a denial by nothing nameable).
  // (The total of denials is the sum of the denials by cause, summed when read: one add per denial.)
  AIRL_DETAIL_HOT_INLINE void count(Status status, std::size_t by) noexcept {
    switch (status) {
      case Status::allowed:
      case Status::replayed: bump(my_stripe().allowed); break;
      case Status::denied:
        if (by < tiers_) [[likely]] {
          const std::size_t slot = stripe_index();
          add(tier_counter(slot, by), slot);
        } else {
          bump(my_stripe().unnamed_denials);
        }
        break;
      case Status::key_capacity: bump(my_stripe().key_capacity); break;
      case Status::backend_unavailable: bump(my_stripe().backend_unavailable); break;
    }
  }
  // A store fault: thrown, or absorbed by a failure policy (then also count_degraded()).
  void count_backend_error() noexcept { bump(my_stripe().backend_errors); }
  // A decision a failure policy made without the store: a degraded one, and a backend error.
  void count_degraded() noexcept {
    bump(my_stripe().degraded);
    bump(my_stripe().backend_errors);
  }

  // Whether this thread's current decision on this limiter is one to time: one in latency_sample_every. The
  // countdown lives in the thread's stripe of this limiter, so limiters used in turn by one thread are each
  // sampled (a shared stripe's threads share a countdown: sampled about as often). A timed decision runs its
  // untimed self once more inside the timing, so the countdown restarts one higher to let that nested call
  // through. Throws nothing.
  AIRL_DETAIL_HOT_INLINE bool sample_latency() noexcept {
    if (!stripes_) [[unlikely]] return false;  // moved from: the limiter refuses the call itself
    std::atomic<std::uint32_t>& countdown = my_stripe().sample_countdown;
    const std::uint32_t left = countdown.load(std::memory_order_relaxed);
    if (left != 0) [[likely]] {
      countdown.store(left - 1, std::memory_order_relaxed);
      return false;
    }
    countdown.store(latency_sample_every, std::memory_order_relaxed);  // the nested call, then 63 untimed
    return true;
  }
  void record_latency(std::chrono::nanoseconds latency) noexcept {
    const auto ns = static_cast<std::uint64_t>(latency.count() < 0 ? 0 : latency.count());
    std::size_t bucket = 0;
    while (bucket < latency_bucket_bounds_ns.size() && ns > latency_bucket_bounds_ns[bucket]) ++bucket;
    Stripe& stripe = my_stripe();
    bump(stripe.latency[bucket]);
    bump(stripe.latency_sum_ns, ns);
  }
  // Counting needs the stripes, which a move takes away; a moved-from limiter refuses to decide before counting.

  struct Totals {
    std::uint64_t allowed = 0, denied = 0, backend_errors = 0, degraded = 0, key_capacity = 0,
                  backend_unavailable = 0;
    std::vector<std::uint64_t> denied_by_tier;                 // by tier index
    std::array<std::uint64_t, latency_bucket_bounds_ns.size() + 1> latency{};  // per bucket, not cumulative
    std::uint64_t latency_sum_ns = 0;
  };
  Totals totals() const {
    Totals sum;
    if (!stripes_) return sum;  // moved from
    sum.denied_by_tier.assign(tiers_, 0);
    const auto read = [](const std::atomic<std::uint64_t>& counter) { return counter.load(std::memory_order_relaxed); };
    for (std::size_t i = 0; i < stripe_count; ++i) {
      const Stripe& stripe = stripes_[i];
      sum.allowed += read(stripe.allowed);
      sum.denied += read(stripe.unnamed_denials) + read(stripe.key_capacity) + read(stripe.backend_unavailable);
      sum.backend_errors += read(stripe.backend_errors);
      sum.degraded += read(stripe.degraded);
      sum.key_capacity += read(stripe.key_capacity);
      sum.backend_unavailable += read(stripe.backend_unavailable);
      for (std::size_t b = 0; b < sum.latency.size(); ++b) sum.latency[b] += read(stripe.latency[b]);
      sum.latency_sum_ns += read(stripe.latency_sum_ns);
      for (std::size_t t = 0; t < tiers_; ++t) {
        const std::uint64_t by_tier = read(tier_counter(i, t));
        sum.denied_by_tier[t] += by_tier;
        sum.denied += by_tier;
      }
    }
    return sum;
  }

 private:
  static constexpr std::size_t stripe_count = 32;
  static constexpr std::size_t owned_stripes = 24;  // stripes 0..23 have one writer each; the rest are shared
  static constexpr std::size_t words_per_line = 64 / sizeof(std::uint64_t);

  struct alignas(64) Line {
    std::array<std::atomic<std::uint64_t>, words_per_line> words{};
  };

  struct alignas(64) Stripe {
    std::atomic<std::uint64_t> allowed{0}, unnamed_denials{0}, backend_errors{0}, degraded{0}, key_capacity{0},
        backend_unavailable{0};
    std::atomic<std::uint64_t> latency_sum_ns{0};
    std::array<std::atomic<std::uint64_t>, latency_bucket_bounds_ns.size() + 1> latency{};
    std::atomic<std::uint32_t> sample_countdown{0};
  };

  // A thread's stripe index, taken in the order threads first count, process-wide (so in every limiter the
  // same thread owns the same stripe). Constant-initialised, so reading it needs no per-call guard.
  AIRL_DETAIL_HOT_INLINE static std::size_t stripe_index() noexcept {
    static std::atomic<std::size_t> next_thread{0};
    constexpr std::size_t unset = ~std::size_t{0};
    thread_local std::size_t slot = unset;
    if (slot == unset) [[unlikely]] {
      const std::size_t n = next_thread.fetch_add(1, std::memory_order_relaxed);
      slot = n < owned_stripes ? n : owned_stripes + n % (stripe_count - owned_stripes);
    }
    return slot;
  }
  AIRL_DETAIL_HOT_INLINE Stripe& my_stripe() const noexcept { return stripes_[stripe_index()]; }
  // Stripe `stripe`'s denial counter of `tier`: each stripe's counters start on a cache line of their own.
  AIRL_DETAIL_HOT_INLINE std::atomic<std::uint64_t>& tier_counter(std::size_t stripe, std::size_t tier) const noexcept {
    return tier_denials_[stripe * tier_lines_ + tier / words_per_line].words[tier % words_per_line];
  }

  AIRL_DETAIL_HOT_INLINE static void bump(std::atomic<std::uint64_t>& value, std::uint64_t by = 1) noexcept {
    add(value, stripe_index(), by);
  }
  // Adds to a counter of stripe `slot` (this thread's).
  AIRL_DETAIL_HOT_INLINE static void add(std::atomic<std::uint64_t>& value, std::size_t slot, std::uint64_t by = 1) noexcept {
    if (slot < owned_stripes) [[likely]] {
      value.store(value.load(std::memory_order_relaxed) + by, std::memory_order_relaxed);  // the only writer
    } else {
      value.fetch_add(by, std::memory_order_relaxed);
    }
  }

  std::unique_ptr<Stripe[]> stripes_;
  std::size_t tier_lines_;  // cache lines of tier counters per stripe
  std::unique_ptr<Line[]> tier_denials_;  // [stripe][tier], tier_lines_ lines per stripe
  std::size_t tiers_;
};

}  // namespace airl::detail
