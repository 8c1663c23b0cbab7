// SPDX-License-Identifier: MIT
#pragma once
// The two yardsticks every airl figure is divided by, built into the bench so they run in the same binary:
//   Floor         the work no limiter can avoid: read the clock, hash the (user, model) pair, lock and unlock
//                 one mutex (the one the key hashes to, so distinct keys on two threads do not share it).
//   NaiveLimiter  the straightforward port of the original Python design: one global std::mutex, an
//                 std::unordered_map<std::string, std::deque<...>> keyed by user + ":" + model, steady-clock
//                 timestamps, trimmed on access. UnitLog stores one timestamp per admitted unit (the issue's
//                 baseline); WeightedLog stores (timestamp, cost) pairs with a running total, so a cost of 4000
//                 is not 4000 entries.

#include <airl/clock.hpp>
#include <airl/quota.hpp>

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>

namespace airl_bench {

// The steady clock read exactly as airl reads it (airl::SteadyClock: CLOCK_MONOTONIC on Linux, without
// libstdc++'s wrapper), so the floor's clock costs no more than airl's.
inline std::int64_t steady_now_ns() noexcept { return airl::SteadyClock{}.now().count(); }

inline std::size_t hash_pair(std::string_view user, std::string_view model) noexcept {
  const std::size_t h = std::hash<std::string_view>{}(user);
  return h ^ (std::hash<std::string_view>{}(model) + 0x9e3779b97f4a7c15ull + (h << 6) + (h >> 2));
}

// Clock + hash + lock/unlock. Returns a bit of the work so the compiler cannot drop it. Thread safety: safe.
class Floor {
 public:
  explicit Floor(airl::Quota /*unused*/) {}

  bool allow(std::string_view user, std::string_view model, std::uint64_t cost) {
    return allow_at(steady_now_ns(), user, model, cost);
  }

  // The same work after the clock was read (by a caller with another clock).
  bool allow_at(std::int64_t now, std::string_view user, std::string_view model, std::uint64_t /*cost*/) {
    const std::size_t hash = hash_pair(user, model);
    std::lock_guard lock(mutexes_[hash % mutexes_.size()].mutex);
    return ((static_cast<std::uint64_t>(now) ^ hash) & 1u) == 0;
  }

 private:
  struct alignas(64) PaddedMutex {
    std::mutex mutex;
  };
  std::array<PaddedMutex, 64> mutexes_;
};

// One timestamp per admitted unit, as the Python list did.
struct UnitLog {
  std::deque<std::int64_t> times;

  void trim(std::int64_t oldest_kept) {
    while (!times.empty() && times.front() < oldest_kept) times.pop_front();
  }
  std::uint64_t used() const noexcept { return times.size(); }
  void push(std::int64_t now, std::uint64_t cost) {
    for (std::uint64_t unit = 0; unit < cost; ++unit) times.push_back(now);  // list.append per unit
  }
};

// One (timestamp, cost) entry per admitted request, with a running total.
struct WeightedLog {
  std::deque<std::pair<std::int64_t, std::uint64_t>> entries;
  std::uint64_t total = 0;

  void trim(std::int64_t oldest_kept) {
    while (!entries.empty() && entries.front().first < oldest_kept) {
      total -= entries.front().second;
      entries.pop_front();
    }
  }
  std::uint64_t used() const noexcept { return total; }
  void push(std::int64_t now, std::uint64_t cost) {
    entries.emplace_back(now, cost);
    total += cost;
  }
};

// The naive limiter. Thread safety: safe (one global mutex).
template <class Log>
class BasicNaiveLimiter {
 public:
  explicit BasicNaiveLimiter(airl::Quota quota)
      : limit_(quota.limit), window_ns_(std::chrono::duration_cast<std::chrono::nanoseconds>(quota.window).count()) {}

  bool allow(std::string_view user, std::string_view model, std::uint64_t cost) {
    const std::string key = std::string(user) + ":" + std::string(model);
    std::lock_guard lock(mutex_);
    const std::int64_t now = steady_now_ns();
    Log& log = logs_[key];
    log.trim(now - window_ns_ + 1);  // an entry admitted at t counts while now < t + window
    if (log.used() + cost > limit_) return false;
    log.push(now, cost);
    return true;
  }

 private:
  std::uint64_t limit_;
  std::int64_t window_ns_;
  std::mutex mutex_;
  std::unordered_map<std::string, Log> logs_;
};

using NaiveLimiter = BasicNaiveLimiter<UnitLog>;
using NaiveWeightedLimiter = BasicNaiveLimiter<WeightedLog>;

}  // namespace airl_bench
