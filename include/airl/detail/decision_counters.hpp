// SPDX-License-Identifier: MIT
#pragma once
// Decision counters striped over cache lines. Each thread bumps its own stripe with a relaxed add,
// so counting never becomes the one cache line every core fights over; reading sums the stripes.

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>

namespace airl::detail {

class DecisionCounters {
 public:
  DecisionCounters() : stripes_(std::make_unique<Stripe[]>(stripe_count)) {}

  void count_allowed() noexcept { mine().allowed.fetch_add(1, std::memory_order_relaxed); }
  void count_denied() noexcept { mine().denied.fetch_add(1, std::memory_order_relaxed); }
  void count_backend_error() noexcept { mine().backend_errors.fetch_add(1, std::memory_order_relaxed); }
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
  static constexpr std::size_t stripe_count = 16;
  struct alignas(64) Stripe {
    std::atomic<std::uint64_t> allowed{0}, denied{0}, backend_errors{0};
  };

  // Threads take stripes round-robin in the order they first count, so a few threads never share one.
  // The slot is constant-initialised (no per-call guard for a dynamic initialiser) and set on first use.
  Stripe& mine() noexcept {
    static std::atomic<std::size_t> next_thread{0};
    constexpr std::size_t unset = ~std::size_t{0};
    thread_local std::size_t slot = unset;
    if (slot == unset) [[unlikely]] slot = next_thread.fetch_add(1, std::memory_order_relaxed) % stripe_count;
    return stripes_[slot];
  }

  std::unique_ptr<Stripe[]> stripes_;
};

}  // namespace airl::detail
