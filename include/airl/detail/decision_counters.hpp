// SPDX-License-Identifier: MIT
#pragma once
// Decision counters striped over cache lines. The first threads to count each own a stripe and bump it with a
// plain relaxed load and store (no locked instruction on the decision path); later threads share the remaining
// stripes with relaxed atomic adds. Counting never becomes one cache line every core fights over; reading sums
// the stripes.

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>

#include "inlining.hpp"

namespace airl::detail {

class DecisionCounters {
 public:
  DecisionCounters() : stripes_(std::make_unique<Stripe[]>(stripe_count)) {}

  AIRL_DETAIL_HOT_INLINE void count_allowed() noexcept { bump(&Stripe::allowed); }
  AIRL_DETAIL_HOT_INLINE void count_denied() noexcept { bump(&Stripe::denied); }
  void count_backend_error() noexcept { bump(&Stripe::backend_errors); }
  // Counting needs the stripes, which a move takes away; a moved-from limiter refuses to decide before counting.

  struct Totals {
    std::uint64_t allowed = 0, denied = 0, backend_errors = 0;
  };
  Totals totals() const noexcept {
    Totals sum;
    if (!stripes_) return sum;  // moved from
    for (std::size_t i = 0; i < stripe_count; ++i) {
      sum.allowed += stripes_[i].allowed.load(std::memory_order_relaxed);
      sum.denied += stripes_[i].denied.load(std::memory_order_relaxed);
      sum.backend_errors += stripes_[i].backend_errors.load(std::memory_order_relaxed);
    }
    return sum;
  }

 private:
  static constexpr std::size_t stripe_count = 32;
  static constexpr std::size_t owned_stripes = 24;  // stripes 0..23 have one writer each; the rest are shared

  struct alignas(64) Stripe {
    std::atomic<std::uint64_t> allowed{0}, denied{0}, backend_errors{0};
  };

  // A thread's stripe index, taken in the order threads first count, process-wide (so in every limiter the
  // same thread owns the same stripe). Constant-initialised, so reading it needs no per-call guard.
  static std::size_t my_slot() noexcept {
    static std::atomic<std::size_t> next_thread{0};
    constexpr std::size_t unset = ~std::size_t{0};
    thread_local std::size_t slot = unset;
    if (slot == unset) [[unlikely]] {
      const std::size_t n = next_thread.fetch_add(1, std::memory_order_relaxed);
      slot = n < owned_stripes ? n : owned_stripes + n % (stripe_count - owned_stripes);
    }
    return slot;
  }

  AIRL_DETAIL_HOT_INLINE void bump(std::atomic<std::uint64_t> Stripe::*counter) noexcept {
    const std::size_t slot = my_slot();
    std::atomic<std::uint64_t>& value = stripes_[slot].*counter;
    if (slot < owned_stripes) [[likely]] {
      value.store(value.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);  // the only writer
    } else {
      value.fetch_add(1, std::memory_order_relaxed);
    }
  }

  std::unique_ptr<Stripe[]> stripes_;
};

}  // namespace airl::detail
