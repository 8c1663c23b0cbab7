// SPDX-License-Identifier: MIT
#pragma once
// How many keys an in-memory store holds, against its max_keys, and the sweeping that keeps memory following
// live keys: a couple of expired entries dropped from the shards a call holds and one more shard it looks at,
// so a flood of one-off keys is reclaimed without a stop-the-world scan; a full sweep when a new key does not
// fit; and, when it still does not fit, when enough keys will have expired.

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <span>
#include <vector>

#include "../inlining.hpp"
#include "../lock.hpp"
#include "../shard_mutex.hpp"
#include "../ticks.hpp"
#include "shard.hpp"

namespace airl::detail {

// Expired entries dropped per held shard per call: more than one, so sweeping outpaces creation.
inline constexpr std::size_t incremental_sweep = 2;

class KeyBudget {
 public:
  explicit KeyBudget(std::size_t max_keys) noexcept : max_(max_keys) {}

  std::size_t max_keys() const noexcept { return max_; }
  std::size_t count() const noexcept { return count_.load(std::memory_order_relaxed); }
  void release(std::size_t keys) noexcept {
    if (keys != 0) count_.fetch_sub(keys, std::memory_order_relaxed);
  }
  // Takes room for `keys` more keys if it fits under max_keys (always, when max_keys is 0). Throws nothing.
  bool try_take(std::size_t keys) noexcept {
    if (max_ == 0) {
      count_.fetch_add(keys, std::memory_order_relaxed);
      return true;
    }
    std::size_t held = count_.load(std::memory_order_relaxed);
    do {
      if (keys > max_ || held > max_ - keys) return false;
    } while (!count_.compare_exchange_weak(held, held + keys, std::memory_order_relaxed));
    return true;
  }
  // How many of `keys` new keys do not fit now. Throws nothing.
  std::size_t short_of(std::size_t keys) const noexcept {
    return keys - std::min(keys, max_ - std::min(count(), max_));
  }

 private:
  std::size_t max_;
  std::atomic<std::size_t> count_{0};
};

// Drops up to `at_most` expired entries from each of the `held` shards (locked by the caller) that has some;
// returns how many, and gives their keys back to `budget`.
template <class State, std::size_t Extent>
AIRL_DETAIL_HOT_INLINE std::size_t sweep_held(Shard<State>* shards, std::span<const std::size_t, Extent> held,
                                              std::int64_t now, std::size_t at_most, KeyBudget& budget) noexcept {
  std::size_t dropped = 0;
  for (const std::size_t index : held) {
    Shard<State>& shard = shards[index];
    shard.mutex.assert_held();
    if (shard.expiry_hint.load(std::memory_order_relaxed) <= now) dropped += shard.purge(now, at_most);
  }
  budget.release(dropped);
  return dropped;
}

// Drops up to `at_most` expired entries from `shard` if it has some and its lock is free (never waits).
template <class State>
AIRL_DETAIL_COLD void purge_if_free(Shard<State>& shard, std::int64_t now, std::size_t at_most,
                                        KeyBudget& budget) noexcept {
  if (!shard.mutex.try_lock()) return;
  const std::size_t dropped = shard.purge(shard.advance(now), at_most);
  shard.mutex.unlock();
  budget.release(dropped);
}
template <class State>
AIRL_DETAIL_HOT_INLINE void sweep_if_free(Shard<State>& shard, std::int64_t now, std::size_t at_most,
                                          KeyBudget& budget) noexcept {
  if (shard.expiry_hint.load(std::memory_order_relaxed) <= now) [[unlikely]] purge_if_free(shard, now, at_most, budget);
}

// Normal traffic also sweeps shards it does not touch: each call looks at one more shard, round-robin per
// thread, and drops a couple of its expired entries if it has any and is free. So a flood of one-off keys is
// reclaimed even when the remaining traffic hits only a few shards. Never blocks, never scans.
template <class State, std::size_t Extent>
AIRL_DETAIL_HOT_INLINE void sweep_next_shard(Shard<State>* shards, std::size_t shard_count,
                                             std::span<const std::size_t, Extent> just_swept, std::int64_t now,
                                             KeyBudget& budget) noexcept {
  thread_local std::size_t cursor = 0;  // a plain integer: safe to use at thread exit too
  const std::size_t index = cursor++ & (shard_count - 1);
  for (const std::size_t swept : just_swept) {
    if (swept == index) return;
  }
  sweep_if_free(shards[index], now, incremental_sweep, budget);
}

// When the `n`-th entry to expire (counting from 1) expires: expired_ticks ("soon") when fewer than n expiries
// are seen (entries another thread is creating right now are not visible yet). For n = 1 it reads the shards'
// hints and refreshes, under its lock, only a shard whose hint (a lower bound) is below the best exact expiry
// found so far: usually one or two shards are locked, not all of them, however full the store is. Call with no
// shard lock held.
template <class State>
AIRL_DETAIL_COLD std::int64_t nth_earliest_expiry(Shard<State>* shards, std::size_t shard_count, std::size_t n) {
  if (n == 1) {
    std::int64_t earliest = never_ticks;
    for (std::size_t i = 0; i < shard_count; ++i) {
      if (shards[i].expiry_hint.load(std::memory_order_relaxed) >= earliest) continue;
      Lock lock(shards[i].mutex);
      shards[i].refresh_hint();
      earliest = std::min(earliest, shards[i].expiry_hint.load(std::memory_order_relaxed));
    }
    return earliest == never_ticks ? expired_ticks : earliest;
  }
  std::vector<std::int64_t> earliest;  // the n earliest seen so far, ascending
  for (std::size_t i = 0; i < shard_count; ++i) {
    Lock lock(shards[i].mutex);
    shards[i].earliest_expiries(n, [&](std::int64_t expiry) {
      if (earliest.size() == n && expiry >= earliest.back()) return;
      if (earliest.size() == n) earliest.pop_back();
      earliest.insert(std::upper_bound(earliest.begin(), earliest.end(), expiry), expiry);
    });
  }
  return earliest.size() < n ? expired_ticks : earliest.back();
}

// The wait of a request refused because `short_of_keys` of its `missing` new keys do not fit: until that many
// keys have expired (absent other traffic), or never when the request alone needs more keys than max_keys.
// Call with no shard lock held.
template <class State>
AIRL_DETAIL_COLD std::chrono::milliseconds capacity_retry(Shard<State>* shards, std::size_t shard_count, const KeyBudget& budget,
                                         std::size_t missing, std::size_t short_of_keys, std::int64_t now) {
  if (missing > budget.max_keys() || short_of_keys > budget.max_keys()) return std::chrono::milliseconds::max();
  const std::int64_t ready = nth_earliest_expiry(shards, shard_count, short_of_keys);
  return ceil_to_ms(ready <= now ? 1 : ready - now);
}

}  // namespace airl::detail
