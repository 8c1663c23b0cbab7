// SPDX-License-Identifier: MIT
#pragma once
// Clock policies. Storage reads time through one of these, so tests and simulations drive time
// explicitly (ManualClock) and never sleep.

#include <atomic>
#include <chrono>
#include <concepts>
#include <cstdint>
#include <ctime>
#include <limits>
#include <memory>
#include <stdexcept>

namespace airl {

namespace detail {
#if defined(__linux__)
// One read of a POSIX clock, in nanoseconds since its epoch.
inline std::chrono::nanoseconds read_clock(clockid_t clock) noexcept {
  timespec now{};
  clock_gettime(clock, &now);
  return std::chrono::seconds{now.tv_sec} + std::chrono::nanoseconds{now.tv_nsec};
}
#endif
}  // namespace detail

// A clock policy: copyable, and now() returns the time since the clock's own epoch, never going back.
template <class C>
concept ClockPolicy = std::copy_constructible<C> && requires(const C& clock) {
  { clock.now() } -> std::same_as<std::chrono::nanoseconds>;
};

// std::chrono::steady_clock in nanoseconds. On Linux it reads CLOCK_MONOTONIC itself, the clock libstdc++'s
// steady_clock reads, without the library's out-of-line wrapper around it. Thread safety: stateless.
// Throws nothing.
class SteadyClock {
 public:
  std::chrono::nanoseconds now() const noexcept {
#if defined(__linux__) && defined(CLOCK_MONOTONIC)
    return detail::read_clock(CLOCK_MONOTONIC);
#else
    return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch());
#endif
  }
};

// A steady clock that trades precision for speed: on Linux it reads CLOCK_MONOTONIC_COARSE, the time of the
// kernel's last tick (a few milliseconds of resolution), which costs a few nanoseconds instead of the full
// clock's read. Windows then start and end on tick boundaries, so decisions are exact only to that
// resolution. Elsewhere it is std::chrono::steady_clock. Thread safety: stateless. Throws nothing.
class CoarseSteadyClock {
 public:
  std::chrono::nanoseconds now() const noexcept {
#if defined(__linux__) && defined(CLOCK_MONOTONIC_COARSE)
    return detail::read_clock(CLOCK_MONOTONIC_COARSE);
#else
    return SteadyClock{}.now();
#endif
  }

  // How far apart two distinct readings can be (the coarse clock's tick). Throws nothing.
  static std::chrono::nanoseconds resolution() noexcept {
#if defined(__linux__) && defined(CLOCK_MONOTONIC_COARSE)
    timespec resolution{};
    clock_getres(CLOCK_MONOTONIC_COARSE, &resolution);
    return std::chrono::seconds{resolution.tv_sec} + std::chrono::nanoseconds{resolution.tv_nsec};
#else
    return std::chrono::nanoseconds{1};
#endif
  }
};

// A clock that moves only when told to. Copies share one time, so a test keeps a copy and advances the
// clock a limiter holds. Starts at 0 unless given a start.
class ManualClock {
 public:
  ManualClock() : ManualClock(std::chrono::nanoseconds{0}) {}
  explicit ManualClock(std::chrono::nanoseconds start)
      : now_ns_(std::make_shared<std::atomic<std::int64_t>>(start.count())) {}

  // The shared current time. Thread safety: safe from any thread. Throws nothing.
  std::chrono::nanoseconds now() const noexcept {
    return std::chrono::nanoseconds{now_ns_->load(std::memory_order_acquire)};
  }

  // Moves every copy's time forward by `by`. Thread safety: safe from any thread.
  // Throws std::invalid_argument when `by` is negative (steady time never goes back).
  // Throws std::overflow_error (time unchanged) when the sum would not fit in 64-bit nanoseconds.
  void advance(std::chrono::nanoseconds by) {
    if (by.count() < 0) throw std::invalid_argument("airl::ManualClock::advance: time cannot go back");
    std::int64_t now = now_ns_->load(std::memory_order_relaxed);
    do {
      if (now > std::numeric_limits<std::int64_t>::max() - by.count()) {
        throw std::overflow_error("airl::ManualClock::advance: time would overflow");
      }
    } while (!now_ns_->compare_exchange_weak(now, now + by.count(), std::memory_order_acq_rel));
  }

 private:
  std::shared_ptr<std::atomic<std::int64_t>> now_ns_;
};

static_assert(ClockPolicy<SteadyClock>);
static_assert(ClockPolicy<CoarseSteadyClock>);
static_assert(ClockPolicy<ManualClock>);

}  // namespace airl
